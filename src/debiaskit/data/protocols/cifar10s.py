"""CIFAR-10S (Wang et al. 2020, "Towards Fairness in Visual Recognition"; GBA's benchmark).

Card (docs/datasets.md, ``cifar10s``):
- input: CIFAR-10 training images (32 x 32 RGB), each either kept in colour or converted to
  grey (PIL ``convert('L')`` luma replicated to three channels).
- label: the CIFAR-10 class; bias attribute ``b``: the domain, 0 colour, 1 grey
  (``num_bias`` 2). Classes 1, 3, 5, 7, 9 (automobile, cat, dog, horse, truck) are
  colour-dominant, classes 0, 2, 4, 6, 8 grey-dominant: ``aligned_bias[c]`` is the dominant
  domain of class c.
- selection, as the authors' code (princetonvisualai/DomainBiasMitigation,
  ``preprocess_data.py``): one ``random.Random(42)`` (the same stream as ``random.seed(42)``)
  and, for each class 0..9 in turn, ``sample(<the class's training indices in dataset
  order>, k)`` picks the images of the class's DOMINANT domain, k = round(skew * n_c)
  (n_c = 5,000: 4,750 at skew 0.95); the others go to the other domain. The authors write
  ``int(5000 * skew)``; both give the same k for every skew they build (0.75 ... 0.99),
  but round() is used here so that e.g. 0.57 gives 2,850 and not 2,849 (float products).
  No other randomness: the data do not depend on any seed.
- grey: ``(19595 R + 38470 G + 7471 B + 32768) >> 16`` (PIL's integer ITU-R 601-2 luma,
  checked equal to PIL's ``convert('L')`` on all 2^24 colours with Pillow 13.0).
- test split ``test``: the test set in colour followed by the same images in grey (image
  i and i + n are a pair), 20,000 images. The local ``cifar10.npz`` test set is mostly
  JPEG-decoded and grouped by class (data/README.md); ``test_set="lossless"`` keeps only its
  1,000 exact images (then 2,000). The dataset ``meta["test_images"]`` says which.
- metrics (GBA Table 1): aligned = colour images of colour-dominant classes + grey images of
  grey-dominant classes, conflicting = the rest, mean = (aligned + conflicting) / 2, bias
  gap = aligned - conflicting. :func:`debiaskit.metrics.classification_metrics` computes
  them as means over (class, domain) CELLS; on the whole test set every cell holds 1,000
  images, so cell means equal sample means; on the lossless subset (86 to 112 images a
  class) they are means over classes, not over images.
- ``image_size`` (default 32, the protocol's): another side resizes every image after the
  grey conversion with :mod:`.resize`'s filter (PIL bicubic); a grey image stays grey
  (equal channels stay equal). For CPU presets only: the papers train at 32 px.
- source: CIFAR-10 (Krizhevsky 2009); skew levels in the authors' code 0.75 to 0.99, GBA
  uses 0.95.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..image_source import ImageSource
from .test_images import pick_test_images
from .resize import RESIZE, RESIZE_VERSION, check_image_size, resize_images

#: the authors' selection seed (``random.seed(42)`` in preprocess_data.py)
SELECTION_SEED = 42
#: classes whose dominant domain is colour (automobile, cat, dog, horse, truck)
COLOR_DOMINANT = (1, 3, 5, 7, 9)
COLOR, GREY = 0, 1
DOMAINS = ("colour", "grey")
#: PIL's integer luma weights (sum 65536) and rounding constant
LUMA_WEIGHTS = (19595, 38470, 7471)
_CHUNK = 4096


def dominant_domain(num_classes: int = 10) -> np.ndarray:
    """``aligned_bias``: the dominant domain of every class (0 colour, 1 grey)."""
    return np.array([COLOR if c in COLOR_DOMINANT else GREY for c in range(num_classes)],
                    dtype=np.int64)


def luma(images: np.ndarray) -> np.ndarray:
    """PIL ``convert('L')`` of uint8 RGB images ``(..., 3)``: uint8 ``(...)``, exactly
    ``(19595 R + 38470 G + 7471 B + 32768) >> 16``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ConfigError(f"luma needs uint8 RGB images (..., 3), got {images.dtype} "
                          f"{images.shape}")
    flat = images.reshape(-1, *images.shape[-3:]) if images.ndim >= 4 else images[None]
    out = np.empty(flat.shape[:-1], dtype=np.uint8)
    wr, wg, wb = LUMA_WEIGHTS
    for lo in range(0, len(flat), _CHUNK):  # chunks keep the uint32 temporaries small
        part = flat[lo:lo + _CHUNK].astype(np.uint32)
        acc = part[..., 0] * wr + part[..., 1] * wg + part[..., 2] * wb + 32768
        out[lo:lo + _CHUNK] = (acc >> 16).astype(np.uint8)
    return out.reshape(images.shape[:-1])


def grey_rgb(images: np.ndarray) -> np.ndarray:
    """The luma of uint8 RGB images replicated to three channels (same shape)."""
    return np.repeat(luma(images)[..., None], 3, axis=-1)


def check_skew(skew) -> float:
    """The share of each class's images in its dominant domain: a number in (0.5, 1]."""
    try:
        value = float(skew)
    except (TypeError, ValueError):
        raise ConfigError(f"skew {skew!r} is not a number; give a share in (0.5, 1], "
                          "e.g. 0.95") from None
    if not 0.5 < value <= 1.0:
        raise ConfigError(f"skew {skew} is out of range; give a share in (0.5, 1] of each "
                          "class's images in its dominant domain, e.g. 0.95")
    return value


def dominant_indices(y: np.ndarray, skew: float, seed: int = SELECTION_SEED) -> dict:
    """Class -> the training indices of its dominant domain, in the order ``sample`` drew
    them (the authors' selection, see the module docstring)."""
    rng = random.Random(seed)
    out = {}
    for c in range(int(y.max()) + 1):
        members = np.flatnonzero(y == c).tolist()  # dataset order
        out[c] = np.array(rng.sample(members, round(skew * len(members))), dtype=np.int64)
    return out


def domain_labels(y: np.ndarray, skew: float, seed: int = SELECTION_SEED) -> np.ndarray:
    """The domain (0 colour, 1 grey) of every training image."""
    dominant = dominant_domain(int(y.max()) + 1)
    b = 1 - dominant[y]  # every image starts in its class's minority domain
    for c, picked in dominant_indices(y, skew, seed).items():
        b[picked] = dominant[c]
    return b.astype(np.int64)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def build(source: ImageSource, skew: float = 0.95, test_set: str = "all",
          seed: int = 0, image_size: int = 32) -> DataBundle:
    """CIFAR-10S at ``skew`` (the share of each class in its dominant domain; GBA: 0.95)
    with the colour + grey test set ``test_set`` ("all" or "lossless"), at ``image_size``
    pixels a side (32: unchanged).

    ``seed`` changes nothing: the selection always uses the authors' seed 42. It is
    accepted because the bench runner passes every row its data seed, and recorded in
    ``meta``.
    """
    if source.name != "cifar10":
        raise ConfigError(f"cifar10s needs the cifar10 source, got {source.name}")
    skew = check_skew(skew)
    image_size = check_image_size(image_size)
    pick, described = pick_test_images(source, test_set)
    train_split, test_split = source.split("train"), source.split("test")
    aligned_bias = torch.from_numpy(dominant_domain(10))
    counts = np.bincount(train_split.y, minlength=10)
    params = {"skew": skew, "test_set": test_set, "image_size": image_size}
    common = {**params, "seed": seed,
              "selection": f"random.Random({SELECTION_SEED}).sample per class 0..9 "
                           "(DomainBiasMitigation preprocess_data.py)",
              "dominant_per_class": [round(skew * int(n)) for n in counts],
              "domains": list(DOMAINS)}
    if image_size != 32:
        common.update(resample=RESIZE, resize_version=RESIZE_VERSION)

    y_train = train_split.y.astype(np.int64)
    b_train = domain_labels(y_train, skew)
    x_train = np.array(train_split.x, copy=True)
    x_train[b_train == GREY] = grey_rgb(train_split.x[b_train == GREY])
    train = BiasedDataset(
        name="cifar10s/train", x=_nchw(resize_images(x_train, image_size)),
        y=torch.from_numpy(y_train), num_classes=10,
        b=torch.from_numpy(b_train), num_bias=2, aligned_bias=aligned_bias,
        meta={"split": "train", **common})

    colour = test_split.x[pick]
    n = len(pick)
    y_test = np.tile(test_split.y[pick].astype(np.int64), 2)
    described += ", each in colour and in grey"
    test = BiasedDataset(
        name="cifar10s/test",
        x=_nchw(resize_images(np.concatenate([colour, grey_rgb(colour)]), image_size)),
        y=torch.from_numpy(y_test), num_classes=10,
        b=torch.from_numpy(np.repeat(np.array([COLOR, GREY], dtype=np.int64), n)), num_bias=2,
        aligned_bias=aligned_bias,
        meta={"split": "test", **common, "test_images": described,
              "pairs": f"image i (colour) and i + {n} (grey) are the same test image",
              "metric_averaging": "means over (class, domain) cells"})
    return DataBundle(train=train, evals={"test": test}, protocol="cifar10s", params=params)
