"""A dataset written out as a folder of PNG images plus a CSV: the layout the ``folder``
protocol (:mod:`debiaskit.data.sources.folder`) and ``debiaskit discover FOLDER --labels
metadata.csv`` read, so that a built-in protocol becomes a test folder whose bias labels
only score.

Layout of the folder written by :func:`write_image_folder`:

- ``SPLIT/NNNNN.png``: every image of every split, numbered by its position in the split
  (at least five digits); RGB images as RGB PNGs, one-channel images as greyscale;
- ``metadata.csv``: header ``path,y,split`` and, when the data has bias labels, ``bias``;
  one row per image, the splits in the order given, the images in their order;
- ``classes.txt``: the class names ``0`` .. ``num_classes - 1``, one a line (so that a
  class without images keeps its index).

The folder is written whole or not at all (:func:`debiaskit.runs.write_folder`); an
existing ``out`` must be an empty folder.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .. import runs
from ..errors import ConfigError, DebiaskitError
from .dataset import BiasedDataset

CSV_NAME = "metadata.csv"
CLASSES_NAME = "classes.txt"


def check_empty_folder(out, what: str = "written folders") -> Path:
    """``out`` must not exist or be an empty folder (nothing is ever overwritten; the
    one-line error says that ``what`` never overwrite)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty; choose a new --out folder "
                          f"({what} never overwrite)")
    return out


def _check(splits: dict[str, BiasedDataset]) -> bool:
    """The splits can be written; returns whether the bias column is written."""
    if not splits:
        raise ConfigError("no split to write")
    first = next(iter(splits.values()))
    with_bias = all(ds.has_bias for ds in splits.values())
    for name, ds in splits.items():
        if not name or "/" in name or name.startswith(".") or name != name.strip():
            raise ConfigError(f"split name {name!r} cannot be a folder name")
        if ds.x.shape[1] not in (1, 3):
            raise ConfigError(f"{ds.name} has {ds.x.shape[1]}-channel images; PNG folders hold "
                              "grey (1) or RGB (3) images")
        if ds.num_classes != first.num_classes:
            raise ConfigError(f"{ds.name} has {ds.num_classes} classes, {first.name} "
                              f"{first.num_classes}; write splits of one dataset")
        if with_bias and ds.aligned_bias is not None and not np.array_equal(
                ds.aligned_bias.numpy(), np.arange(ds.num_classes)):
            raise ConfigError(f"{ds.name} pairs classes with bias values "
                              f"{ds.aligned_bias.tolist()}; a folder's bias column pairs value c "
                              "with class c, so its alignment would be lost")
    return with_bias


def _png(image: np.ndarray) -> bytes:
    """PNG bytes of one C x H x W uint8 image (C = 1: greyscale, 3: RGB)."""
    from PIL import Image

    pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def write_image_folder(splits: dict[str, BiasedDataset], out,
                       progress: bool | None = None) -> dict[str, int]:
    """Write ``splits`` (split name -> dataset) into the new folder ``out`` (layout: module
    docstring); returns the number of images written per split. ``progress``: a tqdm bar
    (None: only on a terminal)."""
    from tqdm import tqdm

    out = check_empty_folder(out)
    with_bias = _check(splits)
    num_classes = next(iter(splits.values())).num_classes
    total = sum(len(ds) for ds in splits.values())

    def fill(tmp: Path) -> None:
        bar = tqdm(total=total, desc=f"writing {out.name}", unit="img", leave=False,
                   disable=None if progress is None else not progress)
        rows = []
        for name, ds in splits.items():
            (tmp / name).mkdir()
            width = max(5, len(str(len(ds) - 1)))
            x, y = ds.x.numpy(), ds.y.tolist()
            b = ds.b.tolist() if with_bias else None
            for i in range(len(ds)):
                path = f"{name}/{i:0{width}d}.png"
                (tmp / path).write_bytes(_png(x[i]))
                rows.append([path, y[i], name] + ([b[i]] if with_bias else []))
                bar.update()
        bar.close()
        (tmp / CLASSES_NAME).write_text("".join(f"{c}\n" for c in range(num_classes)))
        with open(tmp / CSV_NAME, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["path", "y", "split"] + (["bias"] if with_bias else []))
            writer.writerows(rows)

    try:
        runs.write_folder(out, fill)
    except OSError as err:  # (the temporary folder is gone again: nothing written)
        raise DebiaskitError(f"cannot write {out} ({err.strerror or err}); nothing was "
                             "written: free some space or choose another --out") from None
    return {name: len(ds) for name, ds in splits.items()}
