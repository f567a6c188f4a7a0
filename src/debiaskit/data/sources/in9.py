"""IN-9 (Xiao et al. 2021, "Noise or Signal", the backgrounds challenge) in its published
folder layout.

Layout: a folder ``bg_challenge/`` (or ``in9/``) in the data directory holding one folder
per variant (``original``, ``only_fg``, ``no_fg``, ``mixed_same``, ``mixed_rand``,
``mixed_next``, ``fg_mask``), each with split folders (``val``; ``train`` where the
training images were added, e.g. from IN-9L) of nine class folders (``00_dog`` ...
``08_insect``: the classes in sorted folder order) of images (``fg_mask``: one ``.npy``
array per image, same stem). Splits of the source: ``<split>`` for ``original/<split>``
and ``<variant>_<split>`` for the others (e.g. ``mixed_next_val``).

Masks: for ``original`` and ``only_fg`` images, the ``fg_mask`` array of the same class and
stem where one exists, else (docs/datasets.md, ``in9``) the pixels where the ``no_fg``
image of the same name differs from the original (by more than ``NO_FG_TOLERANCE`` in some
channel, as both are JPEGs); the mixed variants' files pair a foreground
with another image's background and carry no masks.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, Split
from .files import arrays_sha256
from .layouts import find_folder, read_image, read_npy_mask

FOLDERS = ("bg_challenge", "in9")
VARIANTS = ("original", "only_fg", "no_fg", "mixed_same", "mixed_rand", "mixed_next")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
#: a pixel is foreground when some channel of the no_fg image differs from the original by
#: more than this (both are JPEGs, re-encoded independently: small differences everywhere)
NO_FG_TOLERANCE = 24


def _images(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _mask(root: pathlib.Path, split: str, cls: str, image: pathlib.Path, pixels: np.ndarray,
          size: int) -> np.ndarray | None:
    npy = root / "fg_mask" / split / cls / (image.stem + ".npy")
    if npy.is_file():
        return read_npy_mask(npy, size)
    no_fg = root / "no_fg" / split / cls / image.name
    if no_fg.is_file():
        diff = np.abs(read_image(no_fg, size).astype(np.int16) - pixels.astype(np.int16))
        return (diff > NO_FG_TOLERANCE).any(-1)
    return None


def load(root: pathlib.Path, image_size: int = 224) -> ImageSource:
    size = int(image_size)
    folder = find_folder(pathlib.Path(root), FOLDERS, "IN-9 backgrounds challenge")
    if not (folder / "original").is_dir():
        raise DataError(f"{folder} has no original/ folder; IN-9 needs at least original/val")
    classes = None
    splits, digest = {}, {}
    for variant in VARIANTS:
        vdir = folder / variant
        if not vdir.is_dir():
            continue
        for sdir in sorted(p for p in vdir.iterdir() if p.is_dir()):
            found = tuple(sorted(p.name for p in sdir.iterdir() if p.is_dir()))
            if classes is None:
                classes = found
            elif found != classes:
                raise DataError(f"{sdir} has the class folders {', '.join(found)}, not "
                                f"{', '.join(classes)}; every variant needs the same classes")
            xs, ys, masks, names = [], [], [], []
            for index, cls in enumerate(classes):
                for path in _images(sdir / cls):
                    pixels = read_image(path, size)
                    xs.append(pixels)
                    ys.append(index)
                    names.append(f"{cls}/{path.name}")
                    if variant in ("original", "only_fg"):
                        masks.append(_mask(folder, sdir.name, cls, path, pixels, size))
            if not xs:
                raise DataError(f"{sdir} holds no images; remove it or copy the images")
            name = sdir.name if variant == "original" else f"{variant}_{sdir.name}"
            mask_arr = (np.stack(masks) if masks and all(m is not None for m in masks)
                        else None)
            x, y = np.stack(xs), np.array(ys, dtype=np.int64)
            splits[name] = Split(x, y, {}, mask_arr, np.array(names))
            digest.update({f"{name}/x": x, f"{name}/y": y})
            if mask_arr is not None:
                digest[f"{name}/mask"] = mask_arr
    return ImageSource(name="in9", splits=splits, origin=f"in9:{folder}",
                       checksum=arrays_sha256(digest, sorted(digest)), classes=classes or ())
