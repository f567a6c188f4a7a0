"""BAR, Biased Action Recognition (Nam et al. 2020, LfF Sec. 4.2 and Table 6).

Card:
- input: RGB photographs of six actions; ``bar_64.npz`` holds them resized to 64 x 64
  (aspect ratio not kept); the authors' folder holds the original JPEGs.
- label: the action, classes in alphabetical order: climbing, diving, fishing,
  pole vaulting, racing, throwing.
- metadata: none used; the bias (the place: rock wall, underwater, water surface, sky,
  paved track, playing field) is aligned with the action in ``train`` and not in ``test``,
  so there are no bias labels: the shift is train vs test. ``names`` keeps the file stems.
- sizes: train 326 / 520 / 163 / 279 / 336 / 317 (1,941), test 105 / 159 / 42 / 131 / 132 /
  85 (654), in the alphabetical class order above.
- source: the alinlab/BAR repository (flat ``train/`` and ``test/`` folders of
  ``<class>_<i>.jpg``, class by file name, e.g. ``pole vaulting_3.jpg``; a
  ``metadata.json`` keyed by stem that this reader does not need).
- licence: not stated by its authors; images collected from the web. Not redistributed here.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, Split
from .files import arrays_sha256, check_labels, read_npz, verify_file

CLASSES = ("climbing", "diving", "fishing", "pole vaulting", "racing", "throwing")
NPZ = "bar_64.npz"
NPZ_SHA256 = {NPZ: "609256e1992632309bc379d6e9f1dcba28a798856c707e388e5f1c41292286d5"}
FOLDER = "BAR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_SIZE = 64  # the folder's photographs are resized to the archive's size


def _from_npz(path: pathlib.Path) -> ImageSource:
    digest = verify_file(path, NPZ_SHA256)
    keys = ("x_train", "y_train", "x_test", "y_test", "classes", "names_train", "names_test")
    a = read_npz(path, keys, "BAR")
    if tuple(str(c) for c in a["classes"]) != CLASSES:
        raise DataError(f"{path} lists classes {list(a['classes'])}, expected {list(CLASSES)}; "
                        "re-copy the file")
    splits = {}
    for split in ("train", "test"):
        x = a[f"x_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise DataError(f"{path}: x_{split} has dtype {x.dtype} and shape {x.shape}, expected "
                            "uint8 (N, H, W, 3); re-copy the file")
        y = check_labels(a[f"y_{split}"], str(path), f"y_{split}", len(CLASSES))
        splits[split] = Split(x, y, names=a[f"names_{split}"])
    return ImageSource("bar", splits, f"npz:{path}", digest, CLASSES)


def class_of(stem: str) -> int:
    """The class index of a BAR file stem ``<class>_<i>`` (class names may hold spaces)."""
    name = stem.rsplit("_", 1)[0].strip().lower()
    if name not in CLASSES:
        raise DataError(f"BAR file {stem!r} names no BAR class (expected <class>_<i> with a class "
                        f"of {', '.join(CLASSES)}); remove or rename it")
    return CLASSES.index(name)


def load_bar_folder(folder, image_size: int = FOLDER_SIZE) -> ImageSource:
    """BAR from the authors' layout: ``folder/train`` and ``folder/test`` with
    ``<class>_<i>.jpg`` files; classes mapped by name, images resized to ``image_size``
    (bilinear, aspect ratio not kept, as ``bar_64.npz``), sorted by (class, index)."""
    from PIL import Image

    folder = pathlib.Path(folder)
    splits, digest_parts = {}, {}
    for split in ("train", "test"):
        directory = folder / split
        if not directory.is_dir():
            raise DataError(f"{directory} not found; the BAR folder needs train/ and test/ "
                            "subfolders of <class>_<i>.jpg files")
        files = [p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(f"{directory} holds no .jpg or .png images; copy BAR's images there")

        def order(p):
            stem_index = p.stem.rsplit("_", 1)[-1]
            return class_of(p.stem), int(stem_index) if stem_index.isdigit() else 0, p.name
        files.sort(key=order)
        images = []
        for p in files:
            try:
                with Image.open(p) as img:
                    img = img.convert("RGB").resize((image_size, image_size),
                                                    Image.Resampling.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8))
            except Exception as exc:
                raise DataError(f"cannot read BAR image {p} ({type(exc).__name__}); replace the "
                                "file or remove it") from None
        x = np.stack(images)
        y = np.array([class_of(p.stem) for p in files], dtype=np.int64)
        splits[split] = Split(x, y, names=np.array([p.stem for p in files]))
        digest_parts.update({f"{split}/x": x, f"{split}/y": y})
    return ImageSource("bar", splits, f"bar-folder:{folder}",
                       arrays_sha256(digest_parts, sorted(digest_parts)), CLASSES)


def load(root: pathlib.Path, download: bool = False) -> ImageSource:
    """BAR from the data directory: ``bar_64.npz`` (sha256-verified), else ``BAR/``."""
    if (root / NPZ).is_file():
        return _from_npz(root / NPZ)
    if (root / FOLDER).is_dir():
        return load_bar_folder(root / FOLDER)
    hint = " (BAR has no official download; clone alinlab/BAR elsewhere and copy its folder)" \
        if download else ""
    raise DataError(f"no BAR in {root}: expected {NPZ} or a {FOLDER}/ folder with train/ and "
                    f"test/; copy one there{hint}")
