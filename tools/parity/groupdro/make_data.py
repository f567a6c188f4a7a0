"""Write the Colored MNIST subset of the groupdro parity fixture (run with debiaskit's venv).

debiaskit's own ``colored_mnist`` protocol (conflict_ratio 0.05, severity 4, seed 0) on
MNIST from DEBIASKIT_DATA, then a reproducible subset of its training split whose 100
(class, colour) groups are all non-empty but mostly rare:
- for each class c, 90 aligned images (colour c), drawn with ``default_rng(SEED)``;
- for each of the 90 conflicting groups (c, b != c), one image;
- 10 more conflicting images drawn from the remaining conflicting ones;
1,000 images in all (sorted by their index in the protocol's training split). The
validation split the authors' loop runs after each epoch (it does not train) is the
first 200 images of the protocol's test split.

usage: python make_data.py OUT.npz
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np

from debiaskit.data.protocols import build_data

SEED = 20261207
PROTOCOL = {"conflict_ratio": 0.05, "severity": 4, "seed": 0}


def select(y: np.ndarray, b: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    picked = []
    for c in range(10):
        picked += list(rng.choice(np.flatnonzero((y == c) & (b == c)), 90, replace=False))
    for c in range(10):
        for k in range(10):
            if k != c:
                picked.append(rng.choice(np.flatnonzero((y == c) & (b == k))))
    rest = np.setdiff1d(np.flatnonzero(y != b), picked)
    picked += list(rng.choice(rest, 10, replace=False))
    return np.sort(np.asarray(picked, dtype=np.int64))


def build(data_dir=None):
    bundle = build_data("colored_mnist", data_dir=data_dir or os.environ.get("DEBIASKIT_DATA"),
                        **PROTOCOL)
    tr, te = bundle.train, bundle.evals["test"]
    pick = select(tr.y.numpy(), tr.b.numpy())
    out = {"x": tr.x[pick].numpy(), "y": tr.y[pick].numpy(), "b": tr.b[pick].numpy(),
           "source_index": pick,
           "val_x": te.x[:200].numpy(), "val_y": te.y[:200].numpy(), "val_b": te.b[:200].numpy()}
    assert out["x"].dtype == np.uint8 and out["x"].shape == (1000, 3, 28, 28)
    return out


def sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


if __name__ == "__main__":
    data = build()
    np.savez_compressed(sys.argv[1], **data)
    counts = np.bincount(data["y"] * 10 + data["b"], minlength=100)
    print("images", data["x"].shape, "sha256", sha256(data["x"]),
          "group counts min/max", counts.min(), counts.max(),
          "conflicting", int((data["y"] != data["b"]).sum()))
