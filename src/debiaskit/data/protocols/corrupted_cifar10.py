"""Corrupted CIFAR-10 (LfF, Nam et al. 2020, Sec. 4.1; docs/datasets.md).

Card:
- input: CIFAR-10 images (32 x 32 RGB), each corrupted by one of ten CIFAR-10-C
  corruptions (:mod:`debiaskit.data.corruptions`, Hendrycks' CIFAR constants).
- label: the CIFAR-10 class; bias attribute ``b``: the index of the corruption.
- types: ``type0`` (LfF's "Corrupted CIFAR-10^1"): Snow, Frost, Fog, Brightness, Contrast,
  Spatter, Elastic, JPEG, Pixelate, Saturate; ``type1`` ("^2"): Gaussian noise, Shot
  noise, Impulse noise, Speckle noise, Gaussian blur, Defocus blur, Glass blur, Motion
  blur, Zoom blur, Original. Class k is aligned with corruption k.
- severity: LfF's severity 1-4 calls Hendrycks' corruption at severity + 1, so **LfF's
  severity 4 (its main tables) is Hendrycks severity 5**, the strongest; LfF never uses
  Hendrycks severity 1. ``severity`` here is LfF's.
- assignment: LfF's deterministic contiguous blocks per class in dataset order
  (:func:`~.assignment.block_assignment`), a share ``1 - conflict_ratio`` aligned; which
  image gets which corruption never depends on the seed; the corruption's own randomness
  does (``seed``; LfF draws from an unseeded generator).
- test split ``test``: the CIFAR-10 test set with the same assignment at 10 % aligned, i.e.
  uniform over the ten corruptions. The local ``cifar10.npz`` test set is mostly
  JPEG-decoded (data/README.md): ``test_set="lossless"`` keeps only its 1,000 exact images.
  ``conditioned=True`` adds ``conditioned``: the same test images uncorrupted, no bias
  labels (LAD's "conditioned" condition: the confounding signal held constant).
- generation: once per (type, severity, ratio, seed, split, source checksum, corruption
  code, JPEG codec) into the derived-dataset cache (:mod:`debiaskit.data.cache`); a second
  build is a load.
- ``image_size`` (default 32, the paper's): another side resizes the corrupted images (and
  the ``conditioned`` ones) afterwards with :mod:`.resize`'s filter, cached as well; the
  corruptions themselves always run at 32 x 32 with the CIFAR constants. Only CPU presets
  shorten this way, and their reports say so.
- source: CIFAR-10 (Krizhevsky 2009); corruptions after Hendrycks & Dietterich (2019).
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import torch

from ...errors import ConfigError
from ..cache import DerivedCache
from ..dataset import BiasedDataset, DataBundle
from ..image_source import ImageSource, as_nchw
from .assignment import block_assignment, check_conflict_ratio
from .test_images import pick_test_images
from .resize import RESIZE, RESIZE_VERSION, check_image_size, resize_images

#: class k -> its aligned corruption (LfF's protocol lists, in class order)
TYPES = {
    "type0": ("snow", "frost", "fog", "brightness", "contrast", "spatter", "elastic_transform",
              "jpeg_compression", "pixelate", "saturate"),
    "type1": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
              "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "original"),
}
#: LfF's severity k is Hendrycks' k + 1.
LFF_SEVERITY_OFFSET = 1
TEST_ALIGNED_RATIO = 0.1


def corruption_code_digest() -> str:
    """sha256 over the source files of :mod:`debiaskit.data.corruptions`: part of the cache
    key, so that changed corruption code never serves images made by the old code."""
    from .. import corruptions
    folder = pathlib.Path(corruptions.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def hendrycks_severity(severity: int) -> int:
    """LfF's severity (1-4) -> Hendrycks' (2-5); anything else is a one-line ConfigError."""
    if severity not in (1, 2, 3, 4):
        raise ConfigError(f"severity {severity} is out of range; give LfF's severity 1-4 "
                          "(Hendrycks 2-5; the papers' tables use 4)")
    return severity + LFF_SEVERITY_OFFSET


def corrupt_groups(images: np.ndarray, b: np.ndarray, names: tuple, severity: int, seed: int,
                   split_id: int, label: str = "", progress: bool | None = None) -> np.ndarray:
    """Corrupt ``images`` (N, H, W, 3) uint8: the images with bias value v get corruption
    ``names[v]`` at Hendrycks ``severity``, drawing from ``RandomState([seed, split_id, v])``
    in dataset order. Returns a new (N, H, W, 3) uint8 array."""
    from tqdm import tqdm

    from ..corruptions import corrupt

    out = np.empty_like(images)
    groups = tqdm(range(len(names)), desc=f"corrupting {label}",
                  unit="corruption", leave=False,
                  disable=None if progress is None else not progress)
    for v in groups:
        pick = np.flatnonzero(b == v)
        if len(pick):
            rng = np.random.RandomState([seed, split_id, v])
            out[pick] = corrupt(np.ascontiguousarray(images[pick]), names[v], severity, rng)
    return out


def build(source: ImageSource, conflict_ratio: float = 0.01, type: str = "type0",
          severity: int = 4, seed: int = 0, test_set: str = "all", conditioned: bool = False,
          image_size: int = 32, data_dir=None) -> DataBundle:
    """Corrupted CIFAR-10 ``type`` with a share ``conflict_ratio`` of bias-conflicting
    training images at LfF ``severity`` (see the module docstring). A first build shows a
    progress bar on a terminal while it corrupts."""
    if source.name != "cifar10":
        raise ConfigError(f"corrupted_cifar10 needs the cifar10 source, got {source.name}")
    if type not in TYPES:
        raise ConfigError(f"corruption type {type!r} is unknown; give type0 or type1")
    test_pick, test_images = pick_test_images(source, test_set)
    conflict_ratio = check_conflict_ratio(conflict_ratio, 10)
    h_severity = hendrycks_severity(severity)
    image_size = check_image_size(image_size)
    names = TYPES[type]
    params = {"conflict_ratio": conflict_ratio, "type": type, "severity": severity,
              "hendrycks_severity": h_severity, "seed": seed, "test_set": test_set,
              "image_size": image_size}
    cache = DerivedCache(data_dir=data_dir)
    code = corruption_code_digest()
    from ..corruptions.digital import jpeg_backend

    test = source.split("test")
    splits = {"train": (source.split("train").x, source.split("train").y, 1.0 - conflict_ratio),
              "test": (test.x[test_pick], test.y[test_pick], TEST_ALIGNED_RATIO)}
    datasets = {}
    for split_id, (split, (images, y, aligned_ratio)) in enumerate(splits.items()):
        b = block_assignment(y, aligned_ratio, 10)
        key = {"split": split, "conflict_ratio": conflict_ratio if split == "train" else None,
               "type": type, "hendrycks_severity": h_severity, "seed": seed,
               "test_set": test_set if split == "test" else None,
               "source": source.checksum, "corruption_code": code,
               "jpeg": jpeg_backend() if "jpeg_compression" in names else None}
        x = cache.get("corrupted_cifar10", key, lambda: {
            "x": corrupt_groups(images, b, names, h_severity, seed, split_id,
                                f"corrupted_cifar10 {type} {split}")})["x"]
        x = _resized(cache, x, image_size, {**key, "corrupted": True})
        datasets[split] = BiasedDataset(
            name=f"corrupted_cifar10/{split}", x=torch.from_numpy(np.ascontiguousarray(
                as_nchw(x))), y=torch.from_numpy(y.astype(np.int64)),
            num_classes=10, b=torch.from_numpy(b), num_bias=10,
            meta={"split": split, **params, "corruptions": list(names),
                  "test_images": test_images if split == "test" else None})
    evals = {"test": datasets["test"]}
    if conditioned:
        evals["conditioned"] = BiasedDataset(
            name="corrupted_cifar10/conditioned", num_classes=10,
            x=torch.from_numpy(np.ascontiguousarray(as_nchw(_resized(
                cache, splits["test"][0], image_size,
                {"split": "conditioned", "test_set": test_set, "source": source.checksum})))),
            y=torch.from_numpy(splits["test"][1].astype(np.int64)),
            meta={"split": "conditioned", **params})
    return DataBundle(train=datasets["train"], evals=evals, protocol="corrupted_cifar10",
                      params=params)


def _resized(cache: DerivedCache, x: np.ndarray, image_size: int, key: dict) -> np.ndarray:
    """``x`` (N, 32, 32, 3) at ``image_size``: itself at 32, else resized once into the cache."""
    if x.shape[1:3] == (image_size, image_size):
        return x
    key = {**key, "image_size": image_size, "resample": RESIZE, "resize_version": RESIZE_VERSION}
    return cache.get("corrupted_cifar10_resized", key,
                     lambda: {"x": resize_images(x, image_size)})["x"]
