"""Write the Colored MNIST subset of the DisEnt parity fixture (run in debiaskit's venv).

The subset comes from debiaskit's own ``colored_mnist`` protocol (5 % conflicting,
severity 4, ``train_subset`` drawn with seed 0 as ``debiaskit train`` does), then is
written twice under WORK:

- ``WORK/subset.npz``: ``x`` (N x 3 x 28 x 28 uint8), ``y``, ``b`` in debiaskit's order,
  which the recorder copies into the fixture;
- ``WORK/data/cmnist/<percent>/{align,conflict}/<y>/<i>_<y>_<b>.png``: the same images as
  lossless PNG files in the folder layout the authors' CMNISTDataset globs (``i`` is the
  debiaskit index, so the recorder maps their dataset positions back to ours by file
  name), with a few images under ``valid/`` and ``test/`` for their start-up evaluation.

usage: DEBIASKIT_DATA=/work/shared/data python tools/parity/disent/make_data.py WORK [N]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from debiaskit.train import RunConfig, prepare

CONFLICT, SEVERITY, SEED, PERCENT = 0.05, 4, 0, "5pct"


def main(work: str, n: int = 900) -> None:
    work = Path(work)
    cfg = RunConfig(method="disent", data_params={"conflict_ratio": CONFLICT, "severity": SEVERITY},
                    train_subset=n, eval_subset=20, seed=SEED, progress=False,
                    data_dir=os.environ.get("DEBIASKIT_DATA"), drop_bias_labels=False)
    train = prepare(cfg).train
    x, y, b = train.x.numpy(), train.y.numpy(), train.b.numpy()
    root = work / "data" / "cmnist" / PERCENT
    for i in range(len(y)):
        kind = "align" if y[i] == b[i] else "conflict"
        folder = root / kind / str(y[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i].transpose(1, 2, 0)).save(folder / f"{i}_{y[i]}_{b[i]}.png")
    for split, folder in (("valid", root / "valid"), ("test", root.parent / "test" / "0")):
        folder.mkdir(parents=True, exist_ok=True)   # their test glob is <percent>/../test/*/*
        for i in range(10):
            Image.fromarray(x[i].transpose(1, 2, 0)).save(folder / f"{i}_{y[i]}_{b[i]}.png")
    sha = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    np.savez(work / "subset.npz", x=x, y=y, b=b)
    info = {"selection": (f"debiaskit colored_mnist protocol (conflict_ratio {CONFLICT}, "
                          f"severity {SEVERITY}), RunConfig(train_subset={n}, seed={SEED}) as "
                          "'debiaskit train' draws it (debiaskit.train.prepare)"),
            "n": int(len(y)), "conflicting": int((y != b).sum()), "sha256": sha,
            "checksum": train.checksum()}
    (work / "subset.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
