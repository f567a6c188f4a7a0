"""Noise corruptions of CIFAR-10-C: gaussian_noise, shot_noise, impulse_noise,
speckle_noise.

Each works on the image scaled to [0, 1] in float64 (``x / 255.``), clips the result to
[0, 1] and returns it times 255, which :func:`~debiaskit.data.corruptions.corrupt`
truncates to uint8. The draws of a batch are the draws of the original per-image loop:
one bulk draw of shape (N, 32, 32, 3) from a legacy ``RandomState`` yields the same
numbers, in the same order, as N calls of shape (32, 32, 3).
"""

from __future__ import annotations

import numpy as np

from debiaskit.data.corruptions._common import Corruption, to_unit

__all__ = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "CORRUPTIONS"]

GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE = (500, 250, 100, 75, 50)
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_NOISE = (0.06, 0.10, 0.12, 0.16, 0.20)


def gaussian_noise(images: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Additive Gaussian noise: ``clip(x + N(0, c^2), 0, 1) * 255`` per pixel and channel,
    ``x`` in [0, 1]; ``c`` = 0.04, 0.06, 0.08, 0.09, 0.10 for severities 1..5.

    Draws ``rng.normal(size=(H, W, 3), scale=c)`` per image, in image order.
    """
    x = to_unit(images)
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(images: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Poisson (photon-count) noise: ``clip(Poisson(x * c) / c, 0, 1) * 255``, ``x`` in
    [0, 1]; ``c`` = 500, 250, 100, 75, 50 photons per unit intensity (fewer = noisier).

    Draws ``rng.poisson(x * c)`` per image (one draw per pixel and channel), in order.
    """
    x = to_unit(images)
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(images: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Salt-and-pepper noise as ``skimage.util.random_noise(x, mode='s&p', amount=c)``:
    every channel value independently is hit with probability ``c`` (= 0.01, 0.02, 0.03,
    0.05, 0.07), and a hit value becomes 1 or 0 with probability 1/2 each.

    Draws: per image, the two ``np.random.choice([True, False], size=(H, W, 3), p=...)``
    calls of scikit-image 0.13.1 to 0.17 (LfF pins 0.15), i.e. ``H*W*3`` uniforms for
    "flipped" (p = c) then ``H*W*3`` for "salted" (p = 0.5), compared with the normalised
    cumulative probabilities as ``RandomState.choice`` does. Feeding ``RandomState(s)``
    therefore reproduces the original run under ``np.random.seed(s)`` with those
    scikit-image versions. It does NOT reproduce a run with a newer
    scikit-image (0.20 and 0.26 checked), whose ``random_noise`` draws from its own
    ``np.random.default_rng`` (seeded from OS entropy when no seed is passed), which
    ``np.random.seed`` does not control: such runs can only match in distribution.
    """
    x = to_unit(images)
    n = x.shape[0]
    # RandomState.choice(a, p=[p0, p1]) returns a[searchsorted(cdf, u, 'right')] with
    # cdf = cumsum(p) / cumsum(p)[-1]: index 0 (True) exactly when u < cdf[0].
    cdf_flip = np.cumsum(np.array([c, 1 - c], dtype=np.float64))
    cdf_flip /= cdf_flip[-1]
    cdf_salt = np.cumsum(np.array([0.5, 0.5], dtype=np.float64))
    cdf_salt /= cdf_salt[-1]
    u = rng.random_sample((n, 2) + x.shape[1:])
    flipped = u[:, 0] < cdf_flip[0]
    salted = u[:, 1] < cdf_salt[0]
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return np.clip(out, 0, 1) * 255


def speckle_noise(images: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Multiplicative Gaussian noise: ``clip(x + x * N(0, c^2), 0, 1) * 255``, ``x`` in
    [0, 1]; ``c`` = 0.06, 0.10, 0.12, 0.16, 0.20. Dark pixels barely change.

    Draws ``rng.normal(size=(H, W, 3), scale=c)`` per image, in order.
    """
    x = to_unit(images)
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


CORRUPTIONS = [
    Corruption("gaussian_noise", "noise", GAUSSIAN_NOISE,
               "additive Gaussian noise of standard deviation c on the [0,1] image", False,
               None, gaussian_noise),
    Corruption("shot_noise", "noise", SHOT_NOISE,
               "Poisson photon noise: Poisson(x*c)/c", False, None, shot_noise),
    Corruption("impulse_noise", "noise", IMPULSE_NOISE,
               "salt-and-pepper noise hitting a fraction c of the channel values", False,
               None, impulse_noise),
    Corruption("speckle_noise", "noise", SPECKLE_NOISE,
               "multiplicative Gaussian noise x + x*N(0, c^2)", False, None, speckle_noise),
]
