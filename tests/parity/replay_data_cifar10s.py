"""Replay of the ``data-cifar10s`` fixture (Wang et al.'s CIFAR-10S selection, recorded from
princetonvisualai/DomainBiasMitigation's preprocess_data.py by
tools/parity/data/record_cifar10s.py) through debiaskit's own protocol
:func:`debiaskit.data.protocols.cifar10s.build` on the real CIFAR-10 of DEBIASKIT_DATA.

Chunks ("steps") 0-19: 2,500 training images each in dataset order: the domain of every
image and whether its image equals the authors' (fingerprints); 20-23: the grey test
copies; 24: the order of the random.sample draws, the counts per (class, domain) and the
raw luma of 40 grey training images. Skips when the data directory lacks cifar10.npz.
"""

from __future__ import annotations


import numpy as np

from debiaskit.parity import Comparison, fingerprint

from . import DATA_DIR, require_data



def source():
    require_data("cifar10.npz")
    from debiaskit.data.sources import load_source
    return load_source("cifar10", str(DATA_DIR))


def replay(fixture, options: dict) -> Comparison:
    from debiaskit.data.protocols import cifar10s

    src = source()
    bundle = cifar10s.build(src, skew=options["skew"], test_set=options.get("test_set", "all"))
    train, test = bundle.train, bundle.evals["test"]
    x_train = train.x.numpy().transpose(0, 2, 3, 1)
    b_mine = train.b.numpy()
    fp_mine = fingerprint(x_train)
    chunk, test_chunk = (int(v) for v in fixture["chunk"])
    cmp = Comparison(tolerances=dict(fixture.manifest["tolerances"]))
    b_theirs, fp_theirs = fixture["b_train"].astype(np.int64), fixture["fp_train"]
    step = 0
    for lo in range(0, len(b_theirs), chunk):
        sl = slice(lo, lo + chunk)
        cmp.absolute(step, "domain of each training image", b_mine[sl], b_theirs[sl])
        cmp.absolute(step, "training images differing (count)",
                     np.count_nonzero(fp_mine[sl] != fp_theirs[sl]), 0)
        step += 1
    n = len(test.y) // 2
    fp_grey = fingerprint(test.x.numpy()[n:].transpose(0, 2, 3, 1))
    theirs_grey = fixture["fp_test_grey"]
    for lo in range(0, len(theirs_grey), test_chunk):
        sl = slice(lo, lo + test_chunk)
        cmp.absolute(step, "grey test images differing (count)",
                     np.count_nonzero(fp_grey[sl] != theirs_grey[sl])
                     if len(fp_grey) == len(theirs_grey) else len(theirs_grey[sl]), 0)
        step += 1
    # the draws: order of random.sample per class (positions in the class's index list)
    y = train.y.numpy()
    picked = cifar10s.dominant_indices(y, options["skew"])
    theirs_pos = np.split(fixture["draw_positions"].astype(np.int64),
                          np.cumsum(fixture["draw_counts"])[:-1])
    for c in range(10):
        members = np.flatnonzero(y == c)
        mine_pos = np.searchsorted(members, picked[c])
        if len(mine_pos) != len(theirs_pos[c]):
            cmp.absolute(step, "dominant draws per class (count)", len(mine_pos),
                         len(theirs_pos[c]))
        else:
            cmp.absolute(step, "order of the dominant draws", mine_pos, theirs_pos[c])
    counts = lambda b: np.stack([np.bincount(y[b == d], minlength=10) for d in (0, 1)])
    cmp.absolute(step, "images per (class, domain)", counts(b_mine), counts(b_theirs))
    raw = fixture["raw_index"]
    cmp.absolute(step, "raw luma of grey training images",
                 x_train[raw].astype(np.int64),
                 np.repeat(fixture["raw_luma"][..., None], 3, axis=-1).astype(np.int64))
    return cmp
