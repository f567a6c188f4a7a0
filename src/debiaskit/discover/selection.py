"""The label-free rule that chooses the primary ranking: the separation of each ranking's
per-image loss into a small high-loss minority and a low-loss majority.

A biased model that took the shortcut fits the images that follow it (low loss) and not
the few that go against it (high loss): its per-image loss falls into two groups far
apart. The rule measures that with Otsu's separability (Otsu 1979): over every threshold
``t`` of the loss ``s`` that leaves at most half the images above it,

    eta = max_t  w_lo w_hi (mu_hi - mu_lo)^2 / sigma^2,

the variance between the two sides (``w`` their shares of the images, ``mu`` their mean
losses) over the total variance ``sigma^2``. ``eta`` is in [0, 1], does not change when
the loss is scaled or shifted, is about 0.64 for a normal distribution, and approaches 1
when a minority sits far from a tight majority. A threshold only falls between two
different values (tied images stay on one side). The ranking with the largest ``eta``
becomes the primary one (ties: the first in :data:`~.config.RANKINGS` order); only the
training images and their class labels are read.

For ``jtt`` the split is not chosen: it is the ERM model's error set, so its value is
``w_err w_rest (mu_err - mu_rest)^2 / sigma^2`` of the ERM model's cross-entropy with the
error set as the high side. The same measure stops the ERM model early
(:func:`~.biased.train_model`): it keeps the epoch whose cross-entropy separates best.
"""

from __future__ import annotations

import numpy as np

from .config import AUTO, RANKINGS

#: One line naming the rule, for discovery.json and the page.
RULE = ("separation of the per-image loss: Otsu's between-side variance over the total "
        "variance at the best threshold leaving at most half the images above it (jtt: "
        "the ERM model's error set as the high side); the largest value wins")


def separation(scores: np.ndarray, max_share: float = 0.5) -> dict:
    """Otsu's separability ``eta`` of ``scores`` at its best threshold with at most
    ``max_share`` of the images above it (module docstring): ``eta``, the threshold (the
    lowest score of the high side) and the size of the high side. Constant scores (no
    threshold) give ``eta`` 0 and no threshold."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    var = float(s.var()) if n else 0.0
    # k = images on the low side; a split is allowed between different values only
    k = np.arange(1, n)
    allowed = (s[1:] > s[:-1]) & (n - k <= max_share * n)
    if var <= 0.0 or not allowed.any():
        return {"eta": 0.0, "threshold": None, "minority": 0}
    csum = np.cumsum(s)
    lo_mean = csum[:-1] / k
    hi_mean = (csum[-1] - csum[:-1]) / (n - k)
    between = (k / n) * (1 - k / n) * (hi_mean - lo_mean) ** 2
    between = np.where(allowed, between, -1.0)
    j = int(np.argmax(between))
    return {"eta": float(min(between[j] / var, 1.0)), "threshold": float(s[j + 1]),
            "minority": int(n - k[j])}


def split_separation(scores: np.ndarray, high: np.ndarray) -> dict:
    """``eta`` of ``scores`` with the given split (``high``: bool per image, the high side):
    the between-side variance over the total variance; 0 when a side is empty or the
    scores are constant."""
    s = np.asarray(scores, dtype=np.float64)
    high = np.asarray(high, dtype=bool)
    n, m = len(s), int(high.sum())
    var = float(s.var()) if n else 0.0
    if var <= 0.0 or m in (0, n):
        return {"eta": 0.0, "threshold": None, "minority": m}
    w = m / n
    between = w * (1 - w) * (s[high].mean() - s[~high].mean()) ** 2
    return {"eta": float(min(between / var, 1.0)), "threshold": None, "minority": m}


def choose_primary(values: dict[str, dict], choice: str) -> dict:
    """The primary ranking from each ranking's rule value (``values``: name ->
    :func:`separation` result) under ``choice`` (``auto``: the largest ``eta``, ties to the
    first in :data:`RANKINGS` order; otherwise the named ranking). Returns the record
    written to discovery.json: the rule, every value, the chosen name and why."""
    names = [n for n in RANKINGS if n in values]
    best = max(names, key=lambda n: (values[n]["eta"], -names.index(n)))
    record = {"mode": choice, "rule": RULE,
              "values": {n: round(values[n]["eta"], 6) for n in names},
              "minority": {n: values[n]["minority"] for n in names},
              "rule_prefers": best}
    if choice == AUTO:
        others = [n for n in names if n != best]
        runner = max(others, key=lambda n: values[n]["eta"]) if others else None
        record["chosen"] = best
        record["reason"] = (
            f"--ranking auto: {best} separates its loss best (eta {values[best]['eta']:.3f}"
            + (f"; next {runner}, {values[runner]['eta']:.3f})" if runner else
               "; the only ranking computed)"))
    else:
        record["chosen"] = choice
        record["reason"] = (f"--ranking {choice} (given); the rule would choose {best} "
                            f"(eta {values[best]['eta']:.3f})")
    return record
