"""The one-pixel problem (LAD, Section 2.2 and Figure 2).

Any image dataset becomes 100 % biased by setting the k-th pixel of the first image row to
a pre-selected value in every training image of class k. The bias label ``b`` is the index
of the set pixel. The pixel is the *confounding* signal, the rest of the image the
*causal* one; :mod:`debiaskit.explain.gradient_ratio` measures which of the two the
training gradient favours (Eq. 1).

Evaluation splits: "independent" (the test set with the pixel of a uniformly random class
set: bias independent of the label) and "conditioned" (the plain test set, no pixel set).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import ImageSource


def as_nchw(images: np.ndarray) -> np.ndarray:
    """MNIST ``(N, H, W)`` -> ``(N, 1, H, W)``; CIFAR ``(N, H, W, 3)`` -> ``(N, 3, H, W)``."""
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


def set_class_pixel(images: np.ndarray, pixel: np.ndarray, value: int) -> np.ndarray:
    """Copy of N x C x H x W ``images`` with pixel ``(row 0, column pixel[i])`` of image i
    set to ``value`` in every channel."""
    out = np.array(images, copy=True)
    out[np.arange(len(out)), :, 0, pixel] = value
    return out


def confounding_mask(image_shape, num_classes: int) -> torch.Tensor:
    """Boolean C x H x W mask of the pixels that can carry the class (first row, first K)."""
    mask = torch.zeros(image_shape, dtype=torch.bool)
    mask[:, 0, :num_classes] = True
    return mask


def build(source: ImageSource, value: int = 255, seed: int = 0) -> DataBundle:
    """The one-pixel problem on ``source`` (any image source: mnist, cifar10)."""
    if not 0 <= value <= 255:
        raise ConfigError(f"one_pixel value must be a pixel value in [0, 255], got {value}")
    num_classes = int(source.y_train.max()) + 1
    x_train, x_test = as_nchw(source.x_train), as_nchw(source.x_test)
    if x_train.shape[-1] < num_classes:
        raise ConfigError(f"one_pixel needs images at least {num_classes} pixels wide")
    params = {"value": value, "seed": seed}
    y_train, y_test = source.y_train.astype(np.int64), source.y_test.astype(np.int64)
    b_test = np.random.default_rng([seed, 1]).integers(0, num_classes, len(y_test))

    def make(images, y, b, split):
        x = np.array(images) if b is None else set_class_pixel(images, b, value)
        return BiasedDataset(
            name=f"one_pixel/{split}", x=torch.from_numpy(x),
            y=torch.from_numpy(y), num_classes=num_classes,
            b=None if b is None else torch.from_numpy(b.astype(np.int64)),
            num_bias=0 if b is None else num_classes, meta={"split": split, **params})

    train = make(x_train, y_train, y_train, "train")
    evals = {"independent": make(x_test, y_test, b_test, "independent"),
             "conditioned": make(x_test, y_test, None, "conditioned")}
    return DataBundle(train=train, evals=evals, protocol="one_pixel",
                      params={"source": source.name, **params})
