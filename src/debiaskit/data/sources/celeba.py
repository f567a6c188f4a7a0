"""CelebA (Liu et al. 2015) in torchvision's folder layout.

Layout: ``celeba/`` in the data directory with ``img_align_celeba/`` (the aligned JPEGs),
``list_attr_celeba.txt`` (a count line, a line of the 40 attribute names, then one line
per image: file name and +-1 per attribute) and ``list_eval_partition.txt`` (file name and
0 train / 1 valid / 2 test). Every attribute becomes a 0/1 attribute column of its split;
``y`` is the attribute ``target``.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, Split
from .files import arrays_sha256
from .layouts import find_folder, read_image

FOLDERS = ("celeba",)
SPLITS = {"0": "train", "1": "valid", "2": "test"}


def _lines(path: pathlib.Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} not found; CelebA needs it (torchvision's layout)")
    return [line for line in path.read_text().splitlines() if line.strip()]


def load(root: pathlib.Path, target: str = "Blond_Hair", image_size: int = 64) -> ImageSource:
    size = int(image_size)
    folder = find_folder(pathlib.Path(root), FOLDERS, "CelebA")
    attr_lines = _lines(folder / "list_attr_celeba.txt")
    names = attr_lines[1].split()
    if target not in names:
        raise DataError(f"CelebA has no attribute {target!r}; it has: {', '.join(names)}")
    table = {}
    for line in attr_lines[2:]:
        parts = line.split()
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DataError(f"{folder / 'list_attr_celeba.txt'}: bad line {line[:60]!r}; each "
                            "line is a file name and +-1 per attribute")
        table[parts[0]] = [int(v) > 0 for v in parts[1:]]
    grouped: dict[str, list[str]] = {}
    for line in _lines(folder / "list_eval_partition.txt"):
        file, part = line.split()[:2]
        if part not in SPLITS or file not in table:
            raise DataError(f"{folder / 'list_eval_partition.txt'}: bad line {line!r}; give "
                            "a listed file name and 0, 1 or 2")
        grouped.setdefault(SPLITS[part], []).append(file)
    t = names.index(target)
    splits, digest = {}, {}
    for split, files in grouped.items():
        x = np.stack([read_image(folder / "img_align_celeba" / f, size) for f in files])
        attrs = np.array([table[f] for f in files], dtype=np.int64)
        columns = {name: attrs[:, k] for k, name in enumerate(names)}
        y = attrs[:, t].copy()
        splits[split] = Split(x, y, columns, None, np.array(files))
        digest.update({f"{split}/x": x, f"{split}/attrs": attrs})
    return ImageSource(name="celeba", splits=splits, origin=f"celeba:{folder}",
                       checksum=arrays_sha256(digest, sorted(digest)),
                       classes=(f"not {target}", target))
