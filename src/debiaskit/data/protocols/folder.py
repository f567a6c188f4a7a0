"""A user's own data: a folder of images plus a CSV (:func:`~debiaskit.data.sources.load_folder`).

Card:
- input: the images the CSV lists (``path`` column), read as RGB, resized to
  ``image_size`` when given (else they must share one size).
- label: the ``y`` column (class names or indices; the class list as ``load_folder``
  finds it).
- bias: the attribute column ``bias`` names (default ``"auto"``: the column ``bias`` when
  the CSV has one, else no bias labels; ``None`` / ``"none"``: no bias labels). A sample
  is aligned when its bias value is the one paired with its class: by name when the
  column's values are names that include every class name, else ``b == y`` (bias value c
  pairs with class c; classes without such a value have no aligned cell).
- splits: ``train_split`` (default ``train``) is the training set; ``eval_splits`` (default:
  every other split of the CSV, in order of first appearance) are evaluated.
- masks: the ``mask`` column's foreground masks, carried to ``BiasedDataset.mask``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import load_folder

AUTO = "auto"
DEFAULT_BIAS_COLUMN = "bias"


def _eval_list(eval_splits, source, train_split: str) -> list[str]:
    if eval_splits is None:
        return [s for s in source.splits if s != train_split]
    if isinstance(eval_splits, str):
        eval_splits = [s.strip() for s in eval_splits.split(",") if s.strip()]
    names = [str(s) for s in eval_splits]
    unknown = [s for s in names if s not in source.splits]
    if unknown:
        raise ConfigError(f"eval_splits {', '.join(unknown)} not in {source.origin}; its splits "
                          f"are: {', '.join(source.splits)}")
    return names


def _bias_column(bias, source) -> str | None:
    columns = sorted({k for s in source.splits.values() for k in s.attributes})
    if bias is None or (isinstance(bias, str) and bias.lower() == "none"):
        return None
    if bias == AUTO:
        return DEFAULT_BIAS_COLUMN if DEFAULT_BIAS_COLUMN in columns else None
    if bias not in columns:
        raise ConfigError(f"bias column {bias!r} is not in {source.origin}; its attribute columns "
                          f"are: {', '.join(columns) or 'none'} (or give bias=none)")
    return str(bias)


def _alignment(source, column: str, num_classes: int) -> tuple[int, np.ndarray, str]:
    """(num_bias, aligned_bias, how): see the module docstring."""
    names = source.attribute_values.get(column)
    if names and all(c in names for c in source.classes):
        return len(names), np.array([names.index(c) for c in source.classes]), "by name"
    observed = max((int(s.attributes[column].max()) + 1 for s in source.splits.values()
                    if len(s)), default=0)
    num_bias = max(len(names) if names else observed, num_classes)
    return num_bias, np.arange(num_classes), "b == y"


def build(path=None, csv: str = "metadata.csv", image_size=None, bias=AUTO,
          train_split: str = "train", eval_splits=None) -> DataBundle:
    """The images listed in ``path/csv`` as a training set and evaluation splits."""
    if path is None or str(path) == "":
        raise ConfigError("the folder dataset needs path=<folder holding the CSV and images>, "
                          "e.g. --data path=/data/mine")
    if isinstance(image_size, list):
        image_size = tuple(image_size)
    source = load_folder(path, csv, image_size=image_size)
    if train_split not in source.splits:
        raise ConfigError(f"{source.origin} has no split {train_split!r} to train on; its splits "
                          f"are: {', '.join(source.splits)} (give train_split=<name>)")
    evals = _eval_list(eval_splits, source, train_split)
    column = _bias_column(bias, source)
    num_classes = len(source.classes)
    params = {"path": str(path), "csv": csv, "image_size": image_size, "bias": column,
              "train_split": train_split, "eval_splits": evals}
    if column is not None:
        num_bias, aligned, how = _alignment(source, column, num_classes)
        aligned_bias = torch.from_numpy(aligned.astype(np.int64))
    else:
        num_bias, aligned_bias, how = 0, None, None
    common = {**params, "origin": source.origin, "source_checksum": source.checksum,
              "classes": list(source.classes), "aligned": how}
    if column is not None and column in source.attribute_values:
        common["bias_values"] = list(source.attribute_values[column])

    def make(split: str) -> BiasedDataset:
        part = source.split(split)
        b = part.attributes[column] if column is not None else None
        if b is not None and len(b) and b.min() < 0:
            raise ConfigError(f"{source.origin}: bias column {column} has negative values in "
                              f"split {split}; use values 0, 1, ... or names")
        return BiasedDataset(
            name=f"folder/{split}",
            x=torch.from_numpy(np.ascontiguousarray(part.x.transpose(0, 3, 1, 2))),
            y=torch.from_numpy(part.y.astype(np.int64)), num_classes=num_classes,
            b=None if b is None else torch.from_numpy(b.astype(np.int64)), num_bias=num_bias,
            mask=None if part.masks is None else torch.from_numpy(np.array(part.masks)),
            aligned_bias=aligned_bias, meta={"split": split, **common})

    return DataBundle(train=make(train_split), evals={s: make(s) for s in evals},
                      protocol="folder", params=params)
