"""BAR, Biased Action Recognition (LfF, Nam et al. 2020, Sec. 4.2 and Table 6).

Card (docs/datasets.md, ``bar``; the source card in :mod:`debiaskit.data.sources.bar`):
- input: photographs of six actions (climbing, diving, fishing, pole vaulting, racing,
  throwing; alphabetical, as the source), RGB at ``image_size`` (default 64, the size of
  ``bar_64.npz``).
- label: the action. No bias labels: the place is aligned with the action in the training
  set and not in the test set, so the shift is train vs ``test``; aligned / conflicting
  accuracies are undefined here.
- splits: ``train`` (1,941 images) is the biased training set, ``test`` (654) the one
  evaluation split.
- resizing: another ``image_size`` resizes the source images once with PIL bicubic,
  through the derived-dataset cache (:mod:`debiaskit.data.cache`): a second build is a
  load. The local archive holds 64 x 64 images, so larger sizes are upsampled 64-px images
  and hold no more detail than 64.
- metric (LfF Table 6): the UNWEIGHTED mean of the six class accuracies, ``class_mean`` in
  :func:`debiaskit.metrics.classification_metrics` (the test classes are unbalanced: 42 to
  159 images, so it differs from ``accuracy``).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..cache import DerivedCache
from ..dataset import BiasedDataset, DataBundle
from ..image_source import ImageSource
from .resize import RESIZE, RESIZE_VERSION, check_image_size, resize_images

def build(source: ImageSource, image_size: int = 64, seed: int = 0, data_dir=None) -> DataBundle:
    """BAR at ``image_size`` x ``image_size``: ``train`` biased, ``test`` for evaluation.

    ``seed`` changes nothing (BAR's images and splits are fixed); it is accepted because the
    bench runner passes every row its data seed, and recorded in ``meta``.
    """
    if source.name != "bar":
        raise ConfigError(f"bar needs the bar source, got {source.name}")
    image_size = check_image_size(image_size)
    params = {"image_size": image_size}
    datasets = {}
    for split in ("train", "test"):
        part = source.split(split)
        x = part.x
        if x.shape[1:3] != (image_size, image_size):
            key = {"split": split, "image_size": image_size, "resample": RESIZE,
                   "version": RESIZE_VERSION, "source": source.checksum}
            x = DerivedCache(data_dir=data_dir).get(
                "bar_resized", key, lambda images=x: {"x": resize_images(images, image_size)})["x"]
        datasets[split] = BiasedDataset(
            name=f"bar/{split}", x=torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
            y=torch.from_numpy(part.y.astype(np.int64)), num_classes=len(source.classes),
            meta={"split": split, **params, "seed": seed, "classes": list(source.classes),
                  "source_size": list(part.x.shape[1:3]),
                  "resized": None if x is part.x else RESIZE,
                  "bias_labels": "none (the place shifts between train and test)"})
    return DataBundle(train=datasets["train"], evals={"test": datasets["test"]},
                      protocol="bar", params=params)
