"""Datasets read from their published folder layouts (CF/F's IN-9 and Waterbirds; CelebA),
built into biased datasets. None can be downloaded here: each reads the layout from the
data directory (:mod:`debiaskit.data.sources.in9`, ``.waterbirds``, ``.celeba``).

Cards:
- ``waterbirds``: input RGB at ``image_size`` (224); label landbird / waterbird; bias the
  place (land / water; aligned: waterbird on water, landbird on land); masks from CUB's
  segmentations when present. Splits: ``train``; evaluated ``val``, ``original`` (test
  images whose bird matches its place) and ``flip`` (the others), as CF/F Table 4. Source:
  Sagawa et al. 2020 (CUB-200-2011 birds on Places backgrounds); licence: CUB's and
  Places' research terms.
- ``in9``: input RGB at ``image_size`` (224); label one of nine ImageNet super-classes;
  no bias labels (the test sets vary the background instead). Splits: ``train`` (the
  layout's ``original/train``), evaluated ``original`` (``original/val``) and every
  variant present (``mixed_same``, ``mixed_rand``, ``mixed_next``, ``only_fg``,
  ``no_fg``); masks on ``train`` and ``original`` (fg_mask arrays, else original vs
  no_fg). Source: Xiao et al. 2021; licence: ImageNet's terms.
- ``celeba``: input RGB at ``image_size`` (64); label the attribute ``target``
  (Blond_Hair); bias the attribute ``bias`` (Male), aligned with each class's majority
  value in the training split; no masks. Splits: ``train``; evaluated ``valid`` and
  ``test``. Source: Liu et al. 2015; licence: CelebA's non-commercial research terms.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import celeba as celeba_source
from ..sources import in9 as in9_source
from ..sources import resolve_data_dir
from ..sources import waterbirds as waterbirds_source
from .resize import check_image_size


def _dataset(name, split, num_classes, b=None, num_bias=0, aligned_bias=None, pick=None,
             meta=None):
    pick = slice(None) if pick is None else pick
    x = np.ascontiguousarray(split.x[pick].transpose(0, 3, 1, 2))
    masks = None if split.masks is None else torch.from_numpy(np.array(split.masks[pick]))
    return BiasedDataset(
        name=name, x=torch.from_numpy(x), y=torch.from_numpy(np.array(split.y[pick])),
        num_classes=num_classes, b=None if b is None else torch.from_numpy(np.array(b[pick])),
        num_bias=num_bias, mask=masks, aligned_bias=aligned_bias, meta=meta or {})


def waterbirds(image_size: int = 224, data_dir=None) -> DataBundle:
    image_size = check_image_size(image_size)
    source = waterbirds_source.load(resolve_data_dir(data_dir), image_size)
    params = {"image_size": image_size}
    for need in ("train", "test"):
        source.split(need)
    ident = torch.arange(2)

    def make(name, split, pick=None):
        return _dataset(f"waterbirds/{name}", split, 2, split.attributes["place"], 2, ident,
                        pick, {"split": name, **params})

    test = source.split("test")
    same = test.y == test.attributes["place"]
    evals = {"original": make("original", test, np.flatnonzero(same)),
             "flip": make("flip", test, np.flatnonzero(~same))}
    if "val" in source.splits:
        evals = {"val": make("val", source.split("val")), **evals}
    return DataBundle(train=make("train", source.split("train")), evals=evals,
                      protocol="waterbirds", params=params)


def in9(image_size: int = 224, data_dir=None) -> DataBundle:
    image_size = check_image_size(image_size)
    source = in9_source.load(resolve_data_dir(data_dir), image_size)
    params = {"image_size": image_size}
    if "train" not in source.splits:
        raise ConfigError("IN-9 has no training split here (original/train); copy the IN-9L "
                          "training images into bg_challenge/original/train/<class>/")
    k = len(source.classes)
    evals = {"original": _dataset("in9/original", source.split("val"), k,
                                  meta={"split": "original", **params})}
    for variant in ("mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg"):
        if f"{variant}_val" in source.splits:
            evals[variant] = _dataset(f"in9/{variant}", source.split(f"{variant}_val"), k,
                                      meta={"split": variant, **params})
    train = _dataset("in9/train", source.split("train"), k, meta={"split": "train", **params})
    return DataBundle(train=train, evals=evals, protocol="in9", params=params)


def celeba(target: str = "Blond_Hair", bias: str = "Male", image_size: int = 64,
           data_dir=None) -> DataBundle:
    image_size = check_image_size(image_size)
    source = celeba_source.load(resolve_data_dir(data_dir), target, image_size)
    train_split = source.split("train")
    if bias not in train_split.attributes or bias == target:
        raise ConfigError(f"celeba bias {bias!r} must be another CelebA attribute than the "
                          f"target; it has: {', '.join(train_split.attributes)}")
    b = train_split.attributes[bias]
    aligned = torch.tensor([int(np.bincount(b[train_split.y == c], minlength=2).argmax())
                            for c in (0, 1)])
    params = {"target": target, "bias": bias, "image_size": image_size}

    def make(name):
        split = source.split(name)
        return _dataset(f"celeba/{name}", split, 2, split.attributes[bias], 2, aligned,
                        meta={"split": name, **params})

    evals = {name: make(name) for name in ("valid", "test") if name in source.splits}
    return DataBundle(train=make("train"), evals=evals, protocol="celeba", params=params)
