"""What a discovery reads: a folder of images (a labels CSV or one sub-folder per class,
through the ``folder`` source's public readers), or a built-in protocol whose bias labels
stay hidden from every step but the scoring."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import BiasedDataset
from ..data.protocols import build_data
from ..data.sources.folder import read_class_folders, read_csv
from ..errors import ConfigError, DataError
from .config import LABELS


@dataclass
class DiscoveryInput:
    """The training images to discover on. ``data`` may carry bias labels, which only
    :func:`score_discovery` reads; ``paths`` are the images' files (folders only);
    ``source`` says how to build the same training set again (for ``debiaskit train``);
    ``labels_csv`` is the CSV text to write beside the result (class sub-folders);
    ``eval_splits`` names the evaluation splits ``debiaskit train`` would report on with
    this data, and ``data_dir`` / ``download`` where a built-in protocol's files come from
    (both read by ``--sih``, which trains SiH with the library's trainer)."""

    data: BiasedDataset
    class_names: list[str]
    source: dict
    paths: list[str] | None = None
    labels_csv: str | None = None
    eval_splits: tuple[str, ...] = ()
    data_dir: str | None = None
    download: bool = False


def _need_two_classes(data: BiasedDataset, class_names, where: str) -> None:
    present = torch.unique(data.y).tolist()
    if len(present) < 2:
        name = class_names[present[0]] if present else "none"
        raise DataError(f"{where} names only one class ({name}); discovery compares classes, "
                        "give images of at least two classes")


def _resolve_labels(folder: Path, labels) -> Path:
    """The labels CSV: as given (relative to the working folder), else inside ``folder``."""
    given = Path(labels).expanduser()
    if given.is_file() or given.is_absolute():
        return given.resolve()
    inside = folder / given
    return inside.resolve() if inside.is_file() else given.resolve()


def load_folder_input(folder, labels=None, image_size=None) -> DiscoveryInput:
    """The images of ``folder`` with their classes: from the CSV ``labels`` (columns
    ``path,y``, paths relative to ``folder``; read by the ``folder`` protocol, whose other
    columns it keeps: a ``bias`` column is hidden and only scores the discovery), else
    from one sub-folder per class (sub-folder name = class name)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; name the folder holding "
                        "the images")
    folder = folder.resolve()
    if labels is not None:
        csv_path = _resolve_labels(folder, labels)
        if not csv_path.is_file():
            raise DataError(f"labels file {labels} not found (looked in the working folder "
                            f"and in {folder}); give a CSV with columns path,y")
        params = {"path": str(folder), "csv": str(csv_path)}
        if image_size is not None:
            params["image_size"] = image_size
        bundle = build_data("folder", **params)
        data = bundle.train
        rows = [r for r in read_csv(csv_path)
                if ((r.get("split") or "train").strip() or "train") == data.meta["split"]]
        classes = list(data.meta["classes"])
        _need_two_classes(data, classes, str(csv_path))
        return DiscoveryInput(data, classes, {"dataset": "folder", "params": bundle.params},
                              paths=[r["path"].strip() for r in rows],
                              eval_splits=tuple(bundle.evals))
    return _subfolder_input(folder, image_size)


def _subfolder_input(folder: Path, image_size) -> DiscoveryInput:
    """One sub-folder per class (:func:`~debiaskit.data.sources.folder.read_class_folders`);
    the labels CSV written beside the result lists the same images."""
    entries, images, labels, classes = read_class_folders(folder, image_size)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    data = BiasedDataset(name="folder/train", x=x, y=torch.from_numpy(labels),
                         num_classes=len(classes), meta={"split": "train"})
    _need_two_classes(data, list(classes), str(folder))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "y"])
    writer.writerows(entries)
    params = {"path": str(folder)}
    if image_size is not None:
        params["image_size"] = image_size
    return DiscoveryInput(data, list(classes), {"dataset": "folder", "params": params,
                                                "classes_from": "sub-folders", "csv":
                                                f"{LABELS} in the discovery folder"},
                          paths=[rel for rel, _ in entries], labels_csv=buf.getvalue())


def load_protocol_input(name: str, data_dir=None, download: bool = False,
                        params: dict | None = None, train_subset: int | None = None,
                        seed: int = 0) -> DiscoveryInput:
    """The training set of protocol ``name`` (a seeded random ``train_subset`` of it as
    ``debiaskit train --train-subset N --seed S`` takes). Its bias labels stay on the
    dataset but only :func:`score_discovery` reads them."""
    from ..train import random_subset

    if train_subset is not None and train_subset < 1:
        raise ConfigError(f"--train-subset must be >= 1, got {train_subset}")
    bundle = build_data(name, data_dir, download, **(params or {}))
    data = random_subset(bundle.train, train_subset, seed)
    classes = [str(c) for c in data.meta.get("classes", range(data.num_classes))]
    source = {"dataset": name, "params": bundle.params, "train_subset": train_subset,
              "seed": seed}
    return DiscoveryInput(data, classes, source, eval_splits=tuple(bundle.evals),
                          data_dir=None if data_dir is None else str(data_dir),
                          download=download)
