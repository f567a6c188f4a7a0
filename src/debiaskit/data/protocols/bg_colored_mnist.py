"""Colored MNIST with a coloured background (ReBias' Biased-MNIST; LAD's "BG coloured MNIST").

ReBias' protocol (docs/datasets.md, ``bg_colored_mnist``): the digit is binarised to white
and the background takes the colour of the bias value; per class, ``int(n * rho)``
shuffled samples take the class colour and the rest are split over the other nine colours.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import ImageSource
from .assignment import check_conflict_ratio, shuffled_assignment
from .colored_mnist import plain_split

#: ReBias' colour map (RGB 0..255), index = bias value.
COLOR_MAP = np.array([
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (225, 225, 0), (225, 0, 225),
    (0, 255, 255), (255, 128, 0), (255, 0, 128), (128, 0, 255), (128, 128, 128),
], dtype=np.uint8)

#: ReBias' "unbiased" evaluation: rho = 0.1, i.e. the colour is independent of the digit.
UNBIASED_RHO = 0.1


def colorize_background(gray: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """White binarised digit on the colour of its bias value; N x 3 x H x W uint8."""
    fg = (gray != 0)[:, None]
    bg = COLOR_MAP[bias][:, :, None, None]
    return np.where(fg, np.uint8(255), bg).astype(np.uint8)


def build(source: ImageSource, conflict_ratio: float = 0.0, seed: int = 0) -> DataBundle:
    """Background-coloured MNIST with ``rho = 1 - conflict_ratio`` (LAD trains at rho = 1).

    Evaluation splits: "unbiased" (test set at rho = 0.1) and "conditioned" (plain MNIST).
    """
    if source.name != "mnist":
        raise ConfigError(f"bg_colored_mnist needs the mnist source, got {source.name}")
    conflict_ratio = check_conflict_ratio(conflict_ratio, 10)
    rho = 1.0 - conflict_ratio
    params = {"conflict_ratio": conflict_ratio, "rho": rho, "seed": seed}

    def make(gray, y, rho_split, rng, split):
        b = shuffled_assignment(y, rho_split, 10, rng)
        return BiasedDataset(
            name=f"bg_colored_mnist/{split}", x=torch.from_numpy(colorize_background(gray, b)),
            y=torch.from_numpy(y.astype(np.int64)), num_classes=10, b=torch.from_numpy(b),
            num_bias=10, mask=torch.from_numpy(gray != 0), meta={"split": split, **params})

    rng_train, rng_test = (np.random.default_rng([seed, k]) for k in (0, 1))
    train = make(source.x_train, source.y_train, rho, rng_train, "train")
    evals = {"unbiased": make(source.x_test, source.y_test, UNBIASED_RHO, rng_test, "unbiased"),
             "conditioned": plain_split(source.x_test, source.y_test, "conditioned")}
    return DataBundle(train=train, evals=evals, protocol="bg_colored_mnist", params=params)
