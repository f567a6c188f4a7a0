"""Write the small Colored MNIST subset the JTT parity record runs on (debiaskit's venv).

The training images are debiaskit's own ``colored_mnist`` protocol (conflict ratio 0.05,
severity 4, seed 0) cut by debiaskit's ``random_subset`` (seed 0); the reference's
validation and test splits (evaluated by its training loop, never trained on) are two
further subsets of the protocol's test split. Writes one ``.npz`` with uint8 images.

usage: DEBIASKIT_DATA=/work/shared/data python tools/parity/jtt/make_data.py OUT.npz [N_TRAIN]
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np

from debiaskit.data.protocols import build_data
from debiaskit.train import random_subset

PARAMS = {"conflict_ratio": 0.05, "severity": 4, "seed": 0}
EVAL = 24   # images per reference validation / test split


def main(out: str, n_train: int = 250) -> None:
    bundle = build_data("colored_mnist", os.environ["DEBIASKIT_DATA"], **PARAMS)
    train = random_subset(bundle.train, n_train, 0)
    test = random_subset(bundle.evals["test"], 2 * EVAL, 0)
    x = train.x.numpy()
    arrays = {"x": x, "y": train.y.numpy(), "b": train.b.numpy(),
              "x_val": test.x[:EVAL].numpy(), "y_val": test.y[:EVAL].numpy(),
              "b_val": test.b[:EVAL].numpy(),
              "x_test": test.x[EVAL:].numpy(), "y_test": test.y[EVAL:].numpy(),
              "b_test": test.b[EVAL:].numpy()}
    np.savez_compressed(out, **arrays)
    print(out, x.shape, "sha256", hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
          "conflicting", int((train.y != train.b).sum()))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
