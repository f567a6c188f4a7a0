"""How bias values are assigned to samples, shared by the published protocols."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError


def check_conflict_ratio(conflict_ratio: float, num_bias: int) -> float:
    """Validate the API's single bias convention: the fraction of bias-conflicting samples.

    0 means every sample is aligned (100 % bias); ``1 - 1/num_bias`` means the bias value is
    independent of the class (uniform). LfF's "ratio" (share aligned) is ``1 - conflict``.
    """
    top = 1.0 - 1.0 / num_bias
    if not 0.0 <= float(conflict_ratio) <= top + 1e-12:
        raise ConfigError(
            f"conflict ratio {conflict_ratio} is out of range; give the fraction of "
            f"bias-conflicting samples in [0, {top:.2f}] (e.g. 0.01 for LfF's 99 % aligned)")
    return float(conflict_ratio)


def block_assignment(y: np.ndarray, aligned_ratio: float, num_bias: int) -> np.ndarray:
    """LfF's deterministic bias assignment (docs/datasets.md, "Bias assignment").

    For each class c, its samples in dataset order are cut into contiguous blocks in
    bias-index order 0..C-1. Block c (aligned) has a share ``aligned_ratio`` and every other
    block ``(1 - aligned_ratio) / (C - 1)``; block edges are the cumulative shares times the
    class size, rounded. Which samples conflict therefore never depends on a seed.
    """
    b = np.empty(len(y), dtype=np.int64)
    off = (1.0 - aligned_ratio) / (num_bias - 1)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        shares = np.full(num_bias, off)
        shares[c] = aligned_ratio
        edges = np.round(np.cumsum(shares) * len(idx)).astype(np.int64)
        edges[-1] = len(idx)
        starts = np.concatenate([[0], edges[:-1]])
        for value, (lo, hi) in enumerate(zip(starts, edges)):
            b[idx[lo:hi]] = value
    return b


def shuffled_assignment(y: np.ndarray, aligned_ratio: float, num_bias: int,
                        rng: np.random.Generator) -> np.ndarray:
    """ReBias' Biased-MNIST assignment (docs/datasets.md, "Bias assignment").

    Per class: shuffle its indices; the first ``int(n * rho)`` take the class's own bias
    value; the rest are cut, in order, into chunks of ``ceil(rest / (C - 1))`` that go to the
    other bias values taken in a shuffled order.
    """
    b = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_aligned = int(len(idx) * aligned_ratio)
        b[idx[:n_aligned]] = c
        rest = idx[n_aligned:]
        others = rng.permutation([v for v in range(num_bias) if v != c])
        chunk = int(np.ceil(len(rest) / (num_bias - 1))) if len(rest) else 1
        for k, value in enumerate(others):
            b[rest[k * chunk:(k + 1) * chunk]] = value
    return b
