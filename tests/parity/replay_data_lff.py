"""Replay of LfF's data-protocol fixtures (alinlab/LfF's make_dataset.py, recorded by
tools/parity/data/record_lff.py) through debiaskit's own protocol code, on the real data of
DEBIASKIT_DATA (skips without it; fails under CI=true). ``replay`` dispatches on the manifest's ``method``:

``protocol:colored_mnist`` (``data-lff-cmnist``): :func:`debiaskit.data.protocols.colored_mnist.build`.
LfF draws each image's colour noise from torch (``randn(3, 1, 1)`` per image), debiaskit
from a numpy Generator (``normal(0, sigma, (N, 3))`` per split): the recorded standard
normal draws are injected in place of debiaskit's (``np.random.default_rng`` answers the
protocol's two generators with the recorded draws of its split, scaled by ``normal``'s own
``loc`` and ``scale``). Compared: the bias value of every image and whether each image
equals LfF's (fingerprints); chunks ("steps") 0-19: 3,000 training images each, 20-23:
2,500 test images each, 24: counts per (class, bias) and the raw pixels of 60 images.

``protocol:corrupted_cifar10`` (``data-lff-cc10-type0``/``-type1``):
:func:`~debiaskit.data.protocols.assignment.block_assignment` and
:func:`~debiaskit.data.protocols.corrupted_cifar10.corrupt_groups` (which
``corrupted_cifar10.build`` calls per split). The recorder ran LfF's corruption functions
with the global ``np.random`` state of debiaskit's per-corruption streams
``RandomState([seed, split_id, v])``, so the draws are the same by construction; what is
compared is the assignment and the images. Chunks 0-19: 50 training images each (the first
1,000 of the training set), 20-29: 50 test images each (50 exact test images per class);
per chunk and corruption, the number of images differing from LfF's; 30: the assignment on
the whole training set, counts per (class, corruption), and the largest pixel difference
per corruption over 3 raw images of each corruption and split.
"""

from __future__ import annotations

import contextlib

import numpy as np

from debiaskit.parity import Comparison, fingerprint

from . import DATA_DIR, require_data

CHUNKS = {"train": 3000, "test": 2500}  # Colored MNIST
CHUNK = 50  # Corrupted CIFAR-10


class RecordedNormal:
    """Stands in for a numpy Generator whose only draw is ``normal(loc, scale, size)``."""

    def __init__(self, z: np.ndarray):
        self.z = z

    def normal(self, loc=0.0, scale=1.0, size=None):
        if tuple(size) != self.z.shape:
            raise ValueError(f"recorded draws {self.z.shape}, asked for {size}")
        return loc + scale * self.z.astype(np.float64)


@contextlib.contextmanager
def recorded_generators(draws: dict):
    """``np.random.default_rng([seed, k])``: k = 0 the training draws, 1 the test draws."""
    real = np.random.default_rng

    def fake(seed=None):
        return RecordedNormal(draws[("train", "test")[int(seed[1])]])

    np.random.default_rng = fake
    try:
        yield
    finally:
        np.random.default_rng = real


def replay_cmnist(fixture, options: dict) -> Comparison:
    require_data("mnist.npz")
    from debiaskit.data.protocols import colored_mnist
    from debiaskit.data.sources import load_source

    src = load_source("mnist", str(DATA_DIR))
    draws = {k: fixture[f"draws_{k}"] for k in ("train", "test")}
    with recorded_generators(draws):
        bundle = colored_mnist.build(src, conflict_ratio=options["conflict_ratio"],
                                     severity=options["severity"], seed=options.get("seed", 0))
    cmp = Comparison(tolerances=dict(fixture.manifest["tolerances"]))
    step = 0
    mine = {"train": bundle.train, "test": bundle.evals["test"]}
    counts = []
    for split in ("train", "test"):
        data = mine[split]
        x = data.x.numpy().transpose(0, 2, 3, 1)
        b, fp = data.b.numpy(), fingerprint(x)
        b_theirs, fp_theirs = fixture[f"b_{split}"].astype(np.int64), fixture[f"fp_{split}"]
        for lo in range(0, len(b_theirs), CHUNKS[split]):
            sl = slice(lo, lo + CHUNKS[split])
            cmp.absolute(step, f"bias value of each {split} image", b[sl], b_theirs[sl])
            cmp.absolute(step, f"{split} images differing (count)",
                         np.count_nonzero(fp[sl] != fp_theirs[sl]), 0)
            step += 1
        y = data.y.numpy()
        counts.append((f"{split} images per (class, bias)",
                       np.bincount(y * 10 + b, minlength=100),
                       np.bincount(y * 10 + b_theirs, minlength=100)))
        pick = fixture[f"raw_index_{split}"]
        counts.append((f"raw pixels of {len(pick)} {split} images",
                       x[pick].astype(np.int64), fixture[f"raw_{split}"].astype(np.int64)))
    for name, a, b in counts:
        cmp.absolute(step, name, a, b)
    return cmp


def replay_cc10(fixture, options: dict) -> Comparison:
    require_data("cifar10.npz")
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


def replay(fixture, options: dict) -> Comparison:
    method = fixture.manifest["method"]
    if method == "protocol:colored_mnist":
        return replay_cmnist(fixture, options)
    if method == "protocol:corrupted_cifar10":
        return replay_cc10(fixture, options)
    raise ValueError(f"{fixture.name}: no LfF data replay for {method}")
