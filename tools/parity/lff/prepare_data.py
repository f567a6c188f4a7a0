"""Make the small training sets of the LfF parity fixtures with debiaskit's own data code.

Runs in debiaskit's environment (it imports debiaskit.data); writes WORK/<data>.npz with
``x`` (N, 3, H, W) uint8, ``y``, ``b`` (int64), ``pick`` (indices into the source) and the
sha256 of ``x``. ``record.py`` reads it, writes the layout the authors' AttributeDataset
reads and puts the images into the fixture.

- cmnist: debiaskit's ``colored_mnist`` protocol (conflict ratio 0.01, severity 4, i.e.
  sigma 0.005, data seed 0), training subset ``numpy.random.default_rng(12345).choice(60000,
  4000, replace=False)`` sorted (4,000 = 15 x 256 + 160: step 15 is a partial batch); the
  worked example's subset.
- cc10: CIFAR-10 training images (cifar10.npz, exact), the first 20 of each class after
  ``default_rng(12345).permutation(50000)``, in source order (200 images); bias values by
  debiaskit's ``block_assignment`` (LfF's protocol) at 95 % aligned (one conflicting image a
  class); each image corrupted by debiaskit's ``corrupt_groups`` with the type0 corruptions
  at LfF severity 4 (Hendrycks 5), data seed 0, split id 0, as ``corrupted_cifar10`` does
  for its training split (the corruption's random draws differ from the full protocol's,
  which corrupts all 50,000 images in one sequence).

usage: DEBIASKIT_DATA=... python tools/parity/lff/prepare_data.py cmnist|cc10 WORK
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np


def cmnist():
    from debiaskit.data.protocols import build_data
    bundle = build_data("colored_mnist", data_dir=os.environ.get("DEBIASKIT_DATA"),
                        conflict_ratio=0.01, severity=4)
    tr = bundle.train
    pick = np.sort(np.random.default_rng(12345).choice(len(tr.y), 4000, replace=False))
    return pick, tr.x[pick].numpy(), tr.y[pick].numpy(), tr.b[pick].numpy()


def cc10(per_class: int = 20, aligned: float = 0.95):
    from debiaskit.data.protocols.assignment import block_assignment
    from debiaskit.data.protocols.corrupted_cifar10 import TYPES, corrupt_groups, hendrycks_severity
    from debiaskit.data.sources import resolve_data_dir
    src = np.load(os.path.join(resolve_data_dir(None), "cifar10.npz"))
    x_all, y_all = src["x_train"], src["y_train"]
    order = np.random.default_rng(12345).permutation(len(y_all))
    pick = np.sort(np.concatenate([order[y_all[order] == c][:per_class] for c in range(10)]))
    y = y_all[pick].astype(np.int64)
    b = block_assignment(y, aligned, 10)
    x = corrupt_groups(np.ascontiguousarray(x_all[pick]), b, TYPES["type0"],
                       hendrycks_severity(4), seed=0, split_id=0, progress=False)
    return pick, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y, b


def main(which: str, work: str) -> None:
    pick, x, y, b = {"cmnist": cmnist, "cc10": cc10}[which]()
    assert x.dtype == np.uint8 and x.shape[1] == 3
    sha = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    os.makedirs(work, exist_ok=True)
    np.savez(os.path.join(work, f"{which}.npz"), x=x, y=y.astype(np.int64),
             b=b.astype(np.int64), pick=pick.astype(np.int64), sha256=np.array(sha))
    print(which, x.shape, "conflicting:", int((y != b).sum()), "sha256:", sha)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
