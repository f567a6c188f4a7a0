"""A folder of images plus a CSV: how users bring their own data.

The CSV (default ``metadata.csv`` in the folder) has a header and one row per image:

- ``path`` (required): the image file, relative to the folder;
- ``y`` (required): the class, by name or by index into the class list;
- ``split`` (optional, default ``train``): any split name (``train``, ``val``, ``test``...);
- ``mask`` (optional): a foreground mask image (non-zero = foreground), relative path;
- every other column is an integer attribute (``bias``, ``place``, ``domain`` ...), either
  all integers (kept as they are, so 2 < 10) or all names (numbered 0, 1, ... in sorted
  order, by code point, with the names kept in ``ImageSource.attribute_values``); a column
  mixing integers and names is an error.

The class list is ``classes`` when given, else the lines of ``classes.txt`` next to the CSV,
else the sorted class names of the CSV (or ``0..max`` when every label is an integer).
Images are read as RGB with Pillow, resized to ``image_size`` (bilinear; masks nearest)
when given, else must all share one size. Any bad row (missing or unreadable image, a
label outside the class list, an empty attribute, an attribute column mixing integers and
names) is a one-line
:class:`~debiaskit.errors.DataError` naming the CSV line.
"""

from __future__ import annotations

import csv
import pathlib
import re

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, Split
from .files import arrays_sha256, one_line

RESERVED = ("path", "y", "split", "mask")


def _size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h < 1 or w < 1:
        raise DataError(f"image size {image_size} is not positive; give e.g. 64 or (224, 224)")
    return int(h), int(w)


def read_csv(path: pathlib.Path) -> list[dict]:
    """The CSV's rows as dicts (with their line number as ``_line``); checks the header."""
    try:
        # utf-8-sig: spreadsheets save CSVs with a byte-order mark, which would else be
        # read into the first column's name
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in ("path", "y") if c not in header]
            if missing:
                raise DataError(f"{path} has no column {', '.join(missing)} (header: "
                                f"{', '.join(header) or 'empty'}); add path and y columns")
            rows = []
            for row in reader:
                row["_line"] = reader.line_num
                rows.append(row)
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({one_line(exc)}); check the CSV file") from None
    if not rows:
        raise DataError(f"{path} lists no images; add one row per image")
    return rows


def _class_list(rows, classes, csv_path: pathlib.Path) -> tuple[str, ...]:
    if classes is not None:
        return tuple(str(c) for c in classes)
    listed = csv_path.parent / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8-sig").splitlines()]
        return tuple(n for n in names if n)
    labels = [r["y"].strip() for r in rows]
    if all(label.lstrip("-").isdigit() for label in labels):
        return tuple(str(i) for i in range(max(int(v) for v in labels) + 1))
    return tuple(sorted(set(labels)))


def _label(value: str, classes: tuple, where: str) -> int:
    value = value.strip()
    if value in classes:
        return classes.index(value)
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise DataError(f"{where}: label {value!r} is not one of the {len(classes)} classes "
                    f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}); fix the row "
                    "or the class list")


def _read_image(path: pathlib.Path, mode: str, size, where: str, what: str) -> np.ndarray:
    from PIL import Image
    if not path.is_file():
        raise DataError(f"{where}: {what} {path} not found; fix the path or remove the row")
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.BILINEAR
                img = img.resize((size[1], size[0]), resample)
            return np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, OSError
        raise DataError(f"{where}: cannot read {what} {path} ({one_line(exc)}); "
                        "replace the file or remove the row") from None


#: An integer attribute value: ASCII digits with an optional sign.
INTEGER = re.compile(r"[+-]?[0-9]+")


def _attribute_columns(rows, names, csv_path) -> tuple[dict, dict]:
    """Each attribute column is all integers (kept as those integers) or all names (numbered
    0, 1, ... in sorted order, by code point, and kept in ``values``); a column mixing the
    two is an error naming the first row of the rarer kind (most likely the typo)."""
    columns, values = {}, {}
    for name in names:
        raw = [r[name].strip() if r[name] is not None else "" for r in rows]
        for r, v in zip(rows, raw):
            if v == "":
                raise DataError(f"{csv_path} line {r['_line']}: attribute {name} is empty; "
                                "give every row a value")
        is_int = [INTEGER.fullmatch(v) is not None for v in raw]
        if all(is_int):
            columns[name] = np.array([int(v) for v in raw], dtype=np.int64)
        elif not any(is_int):
            kinds = tuple(sorted(set(raw)))
            values[name] = kinds
            index = {v: i for i, v in enumerate(kinds)}
            columns[name] = np.array([index[v] for v in raw], dtype=np.int64)
        else:
            ints = sum(is_int)
            odd = ints < len(raw) - ints or (2 * ints == len(raw) and not is_int[0])
            i = is_int.index(odd)  # first row of the rarer kind (ties: not the first row's)
            j = is_int.index(not odd)  # first row of the other kind, as the example
            raise DataError(
                f"{csv_path} line {rows[i]['_line']}: attribute column {name} mixes integers "
                f"and names ({raw[i]!r} here, {raw[j]!r} on line {rows[j]['_line']}); make "
                "every value of the column an integer or every value a name")
    return columns, values


def load_folder(folder, csv_name: str = "metadata.csv", image_size=None, name: str | None = None,
                classes=None, progress: bool | None = None) -> ImageSource:
    """Read the images listed in ``folder/csv_name`` into an :class:`ImageSource`.

    ``image_size``: int or (H, W) to resize every image (and mask) to; None keeps the
    files' size, which must then be the same for all. ``classes``: the class list (names);
    see the module docstring for the default. ``progress``: show a tqdm bar (None: only on
    a terminal).
    """
    from tqdm import tqdm

    folder = pathlib.Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; pass the folder holding the CSV and images")
    csv_path = folder / csv_name
    if not csv_path.is_file():
        raise DataError(f"{csv_path} not found; write a CSV with columns path,y[,split,mask,<attributes>]")
    size = _size(image_size)
    rows = read_csv(csv_path)
    class_list = _class_list(rows, classes, csv_path)
    header = [k for k in rows[0] if k != "_line"]
    attributes = [k for k in header if k not in RESERVED and k]
    has_mask = "mask" in header
    columns, attribute_values = _attribute_columns(rows, attributes, csv_path)

    images, masks, labels, splits = [], [], [], []
    bar = tqdm(rows, desc=f"reading {folder.name}", unit="img", leave=False,
               disable=None if progress is None else not progress)
    for row in bar:
        where = f"{csv_path} line {row['_line']}"
        labels.append(_label(row["y"] or "", class_list, where))
        image = _read_image(folder / (row["path"] or "").strip(), "RGB", size, where, "image")
        if images and image.shape != images[0].shape:
            raise DataError(f"{where}: image is {image.shape[1]}x{image.shape[0]}, the first was "
                            f"{images[0].shape[1]}x{images[0].shape[0]}; pass an image size to resize them")
        images.append(image)
        if has_mask:
            mask = _read_image(folder / (row["mask"] or "").strip(), "L", image.shape[:2], where,
                               "mask")
            masks.append(mask > 0)
        splits.append((row.get("split") or "train").strip() or "train")

    x, y = np.stack(images), np.array(labels, dtype=np.int64)
    mask_arr = np.stack(masks) if has_mask else None
    names = np.array([r["path"].strip() for r in rows])
    split_arr = np.array(splits)
    out, digest_parts = {}, {}
    for split in dict.fromkeys(splits):  # in order of first appearance
        pick = np.flatnonzero(split_arr == split)
        out[split] = Split(x[pick], y[pick], {k: v[pick] for k, v in columns.items()},
                           None if mask_arr is None else mask_arr[pick], names[pick])
        digest_parts.update({f"{split}/x": x[pick], f"{split}/y": y[pick]})
        digest_parts.update({f"{split}/{k}": v[pick] for k, v in columns.items()})
        if mask_arr is not None:
            digest_parts[f"{split}/mask"] = mask_arr[pick]
    checksum = arrays_sha256(digest_parts, sorted(digest_parts))
    return ImageSource(name=name or folder.name, splits=out, origin=f"folder:{csv_path}",
                       checksum=checksum, classes=class_list, attribute_values=attribute_values)


#: File types read from class sub-folders (:func:`read_class_folders`).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_class_folders(folder, image_size=None):
    """The images of ``folder`` stored one sub-folder per class (sub-folder name = class
    name; hidden sub-folders and other file types skipped), read as :func:`load_folder`
    reads a CSV's rows (RGB, resized when ``image_size`` is given, else one size for all),
    in sorted order. Returns ``(entries, x, y, classes)``: ``(relative path, class name)``
    per image, uint8 N x H x W x 3 images, int64 class indices and the class list (sorted
    names, or ``0..max`` when every name is an integer)."""
    folder = pathlib.Path(folder)
    entries = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((f.relative_to(folder).as_posix(), sub.name))
    if not entries:
        raise DataError(f"{folder} holds no images in class sub-folders; put each class's "
                        "images in a sub-folder named after it, or give --labels CSV")
    classes = _class_list([{"y": name} for _, name in entries], None,
                          folder / "no-classes-file")
    size = _size(image_size)
    images, labels = [], []
    for rel, name in entries:
        where = str(folder / rel)
        labels.append(_label(name, classes, where))
        image = _read_image(folder / rel, "RGB", size, where, "image")
        if images and image.shape != images[0].shape:
            raise DataError(f"{folder / rel}: image is {image.shape[1]}x{image.shape[0]}, the "
                            f"first was {images[0].shape[1]}x{images[0].shape[0]}; pass "
                            "--image-size to resize them")
        images.append(image)
    return entries, np.stack(images), np.array(labels, dtype=np.int64), classes
