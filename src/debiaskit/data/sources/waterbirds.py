"""Waterbirds (Sagawa et al. 2020) in its published layout, with CUB segmentation masks.

Layout: a folder ``waterbird_complete95_forest2water2/`` (or ``waterbirds/``) in the data
directory with ``metadata.csv`` (columns ``img_filename``, ``y`` 0 landbird / 1 waterbird,
``split`` 0 train / 1 val / 2 test, ``place`` 0 land / 1 water) and the images under the
paths it lists. Masks: CUB-200-2011's ``segmentations/`` (a PNG per image at the image's
path with ``.png``), looked up in the Waterbirds folder, ``CUB_200_2011/`` and the data
directory; a pixel is foreground when its segmentation value is >= 128 (the annotators'
majority); without segmentations the source has no masks.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, Split
from .files import arrays_sha256
from .layouts import find_folder, read_image

FOLDERS = ("waterbird_complete95_forest2water2", "waterbirds")
SPLITS = {"0": "train", "1": "val", "2": "test"}
CLASSES = ("landbird", "waterbird")
PLACES = ("land", "water")
MASK_THRESHOLD = 128


def _segmentations(folder: pathlib.Path) -> pathlib.Path | None:
    for candidate in (folder / "segmentations", folder.parent / "CUB_200_2011" / "segmentations",
                      folder.parent / "segmentations"):
        if candidate.is_dir():
            return candidate
    return None


def load(root: pathlib.Path, image_size: int = 224) -> ImageSource:
    size = int(image_size)
    folder = find_folder(pathlib.Path(root), FOLDERS, "Waterbirds")
    meta = folder / "metadata.csv"
    if not meta.is_file():
        raise DataError(f"{meta} not found; Waterbirds needs its metadata.csv")
    with open(meta, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    need = ("img_filename", "y", "split", "place")
    if not rows or any(k not in rows[0] for k in need):
        raise DataError(f"{meta} must have the columns {', '.join(need)} and one row per image")
    seg = _segmentations(folder)
    grouped: dict[str, list] = {}
    for line, row in enumerate(rows, start=2):
        split = SPLITS.get(row["split"].strip())
        if split is None or row["y"].strip() not in "01" or row["place"].strip() not in "01":
            raise DataError(f"{meta} line {line}: split must be 0/1/2 and y, place 0/1; fix "
                            "the row")
        grouped.setdefault(split, []).append(row)
    splits, digest = {}, {}
    for split, members in grouped.items():
        x = np.stack([read_image(folder / r["img_filename"].strip(), size) for r in members])
        masks = None
        if seg is not None:
            masks = np.stack([read_image(seg / pathlib.Path(r["img_filename"].strip())
                                         .with_suffix(".png"), size, "L") >= MASK_THRESHOLD
                              for r in members])
        y = np.array([int(r["y"]) for r in members], dtype=np.int64)
        place = np.array([int(r["place"]) for r in members], dtype=np.int64)
        names = np.array([r["img_filename"].strip() for r in members])
        splits[split] = Split(x, y, {"place": place}, masks, names)
        digest.update({f"{split}/x": x, f"{split}/y": y, f"{split}/place": place})
        if masks is not None:
            digest[f"{split}/mask"] = masks
    return ImageSource(name="waterbirds", splits=splits, origin=f"waterbirds:{folder}",
                       checksum=arrays_sha256(digest, sorted(digest)), classes=CLASSES,
                       attribute_values={"place": PLACES})
