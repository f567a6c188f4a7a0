"""Colored MNIST with a coloured digit (LfF, Nam et al. 2020; LAD's "FG coloured MNIST").

LfF's protocol (docs/datasets.md, ``colored_mnist``): each image gets one colour, the mean
colour of its bias value plus N(0, sigma^2) noise per channel, clamped to [0, 1] and
multiplied into the grey digit; the background stays black; uint8 by truncation.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import ImageSource
from .assignment import block_assignment, check_conflict_ratio

#: The ten mean colours of LfF (RGB in [0, 1]), index = bias value: exactly the float32
#: values of LfF's ``data/resource/colors.th`` (rounded values change some images by one
#: grey level: docs/parity.md, fixture ``data-lff-cmnist``).
MEAN_COLORS = np.array([
    [0.98368233, 0.312519, 0.16857535], [0.99052966, 0.91560525, 0.3515122],
    [0.672964, 0.46107048, 0.5798082], [0.78325194, 0.8315559, 0.6013294],
    [0.088015795, 0.77796334, 0.98180777], [0.32139337, 0.96105456, 0.44644988],
    [0.024615884, 0.23565048, 0.7586663], [0.55524695, 0.10158014, 0.76176316],
    [0.2077232, 0.3929485, 0.018702388], [0.8336576, 0.20240927, 0.2669431],
], dtype=np.float32)

#: LfF's colour-noise "severity" -> standard deviation sigma.
SEVERITY_SIGMA = {1: 0.05, 2: 0.02, 3: 0.01, 4: 0.005}

#: LfF's test split: the same block assignment with 10 % aligned, i.e. uniform bias.
TEST_ALIGNED_RATIO = 0.1


def colorize_foreground(gray: np.ndarray, bias: np.ndarray, sigma: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Colour grey digits (N, H, W uint8) by their bias value; returns N x 3 x H x W uint8."""
    noise = rng.normal(0.0, sigma, size=(len(gray), 3)).astype(np.float32)
    colors = np.clip(MEAN_COLORS[bias] + noise, 0.0, 1.0)
    out = np.empty((len(gray), 3) + gray.shape[1:], dtype=np.uint8)
    for lo in range(0, len(gray), 8192):  # chunks keep the float temporary small
        g = gray[lo:lo + 8192, None].astype(np.float32)
        out[lo:lo + 8192] = np.floor(g * colors[lo:lo + 8192, :, None, None]).astype(np.uint8)
    return out


def plain_split(gray: np.ndarray, y: np.ndarray, name: str) -> BiasedDataset:
    """The plain MNIST digits, grey replicated to 3 channels, with no bias labels.

    LAD's "conditioned" test condition: the bias is held constant (no colour at all).
    """
    x = torch.from_numpy(np.repeat(gray[:, None], 3, axis=1))
    return BiasedDataset(name=name, x=x, y=torch.from_numpy(y.astype(np.int64)), num_classes=10,
                         mask=torch.from_numpy(gray > 0), meta={"split": name})


def resolve_sigma(severity: int | None, sigma: float | None) -> float:
    """sigma from LfF's severity 1-4, or given directly (which wins)."""
    if sigma is not None:
        if not 0.0 <= sigma <= 1.0:
            raise ConfigError(f"colour noise sigma {sigma} is out of range; give a value in [0, 1]")
        return float(sigma)
    if severity not in SEVERITY_SIGMA:
        raise ConfigError(f"severity {severity} is out of range; give 1, 2, 3 or 4 "
                          "(sigma 0.05, 0.02, 0.01, 0.005) or --sigma")
    return SEVERITY_SIGMA[severity]


def build(source: ImageSource, conflict_ratio: float = 0.01, severity: int | None = 4,
          sigma: float | None = None, seed: int = 0, conditioned: bool = False) -> DataBundle:
    """Colored MNIST (foreground). ``conflict_ratio`` is the share of conflicting samples.

    The uniform test split is "test"; ``conditioned=True`` adds the plain MNIST test set.
    Which samples conflict is fixed by dataset order; ``seed`` only moves the colour noise.
    """
    if source.name != "mnist":
        raise ConfigError(f"colored_mnist needs the mnist source, got {source.name}")
    conflict_ratio = check_conflict_ratio(conflict_ratio, 10)
    sigma = resolve_sigma(severity, sigma)
    rng_train, rng_test = (np.random.default_rng([seed, k]) for k in (0, 1))
    params = {"conflict_ratio": conflict_ratio, "sigma": sigma, "seed": seed}

    def make(gray, y, aligned_ratio, rng, split):
        b = block_assignment(y, aligned_ratio, 10)
        x = colorize_foreground(gray, b, sigma, rng)
        return BiasedDataset(
            name=f"colored_mnist/{split}", x=torch.from_numpy(x),
            y=torch.from_numpy(y.astype(np.int64)), num_classes=10,
            b=torch.from_numpy(b), num_bias=10, mask=torch.from_numpy(gray > 0),
            meta={"split": split, **params})

    train = make(source.x_train, source.y_train, 1.0 - conflict_ratio, rng_train, "train")
    evals = {"test": make(source.x_test, source.y_test, TEST_ALIGNED_RATIO, rng_test, "test")}
    if conditioned:
        evals["conditioned"] = plain_split(source.x_test, source.y_test, "conditioned")
    return DataBundle(train=train, evals=evals, protocol="colored_mnist", params=params)
