"""Replay of the ``data-lff-cc10`` fixture (LfF's Corrupted CIFAR-10 type 0 generation,
recorded from alinlab/LfF's make_dataset.py by tools/parity/data/record_lff.py) through
debiaskit's own protocol pieces: :func:`~debiaskit.data.protocols.assignment.block_assignment`
and :func:`~debiaskit.data.protocols.corrupted_cifar10.corrupt_groups` (which
``corrupted_cifar10.build`` calls per split) on the real CIFAR-10 of DEBIASKIT_DATA.

The recorder ran LfF's corruption functions with the global ``np.random`` state of
debiaskit's per-corruption streams ``RandomState([seed, split_id, v])``, so the draws are
the same by construction; what is compared is the assignment and the images. Chunks
("steps") 0-19: 50 training images each (the first 1,000 of the training set), 20-29: 50
test images each (50 exact test images per class); per chunk and corruption, the number of
images differing from LfF's; 30: the assignment on the whole training set, counts per
(class, corruption), and the largest pixel difference per corruption over 3 raw images of
each corruption and split. Skips when the data directory lacks cifar10.npz.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from debiaskit.parity import Comparison

DATA_DIR = Path(os.environ.get("DEBIASKIT_DATA") or
                Path(__file__).resolve().parents[3] / "shared" / "data")
FP_PRIME, FP_SEED = 2_147_483_647, 20261207
CHUNK = 50


def fingerprint(images: np.ndarray) -> np.ndarray:
    """As tools/parity/data/common.py: ``sum(pixel * W) mod P`` per image."""
    w = np.random.default_rng(FP_SEED).integers(1, 2 ** 16, size=images.shape[1:],
                                                 dtype=np.int64).ravel()
    flat = images.reshape(len(images), -1)
    out = np.empty(len(images), dtype=np.int64)
    for lo in range(0, len(images), 4096):
        out[lo:lo + 4096] = (flat[lo:lo + 4096].astype(np.int64) @ w) % FP_PRIME
    return out.astype(np.uint32)


def replay(fixture, options: dict) -> Comparison:
    if not (DATA_DIR / "cifar10.npz").is_file():
        pytest.skip(f"real cifar10.npz not found in {DATA_DIR}; set DEBIASKIT_DATA")
    from debiaskit.data.protocols import corrupted_cifar10 as cc
    from debiaskit.data.protocols.assignment import block_assignment
    from debiaskit.data.sources import load_source

    src = load_source("cifar10", str(DATA_DIR))
    train, test = src.split("train"), src.split("test")
    n_train = len(fixture["b_train"])
    pick = fixture["test_pick"]
    splits = {"train": (train.x[:n_train], train.y[:n_train], 1.0 - options["conflict_ratio"]),
              "test": (test.x[pick], test.y[pick], cc.TEST_ALIGNED_RATIO)}
    names = cc.TYPES[options["type"]]
    severity = cc.hendrycks_severity(options["severity"])
    cmp = Comparison(tolerances=dict(fixture.manifest["tolerances"]))
    step, last = 0, []
    for split_id, (split, (images, y, aligned)) in enumerate(splits.items()):
        b = block_assignment(y.astype(np.int64), aligned, 10)
        x = cc.corrupt_groups(np.ascontiguousarray(images), b, names, severity,
                              options.get("seed", 0), split_id, progress=False)
        b_theirs = fixture[f"b_{split}"].astype(np.int64)
        fp, fp_theirs = fingerprint(x), fixture[f"fp_{split}"]
        for lo in range(0, len(y), CHUNK):
            sl = slice(lo, lo + CHUNK)
            cmp.absolute(step, "corruption of each image", b[sl], b_theirs[sl])
            for v, name in enumerate(names):
                here = b_theirs[sl] == v
                if here.any():
                    cmp.absolute(step, f"{name}: images differing (count)",
                                 np.count_nonzero(fp[sl][here] != fp_theirs[sl][here]), 0)
            step += 1
        raw, raw_theirs = x[fixture[f"raw_index_{split}"]], fixture[f"raw_{split}"]
        raw_b = b_theirs[fixture[f"raw_index_{split}"]]
        for v, name in enumerate(names):
            last.append((f"{name}: largest pixel difference of 3 {split} images",
                         raw[raw_b == v].astype(np.int64), raw_theirs[raw_b == v].astype(np.int64)))
        last.append((f"{split} images per (class, corruption)",
                     np.bincount(y * 10 + b, minlength=100),
                     np.bincount(y * 10 + b_theirs, minlength=100)))
    y_full = train.y.astype(np.int64)
    last.append(("corruption of each of the 50,000 training images",
                 block_assignment(y_full, 1.0 - options["conflict_ratio"], 10),
                 fixture["b_full_train"].astype(np.int64)))
    for name, mine, theirs in last:
        cmp.absolute(step, name, mine, theirs)
    return cmp
