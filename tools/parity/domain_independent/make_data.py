"""The CIFAR-10S subset of the domain_independent parity fixture (run in debiaskit's venv).

Builds debiaskit's own ``cifar10s`` protocol (skew 0.95, test_set "lossless") from
DEBIASKIT_DATA and keeps, in dataset order:
- training: for each class 0..9, its first 2 images of the class's dominant domain and its
  first image of the other domain (30 images: 7 batches of 4 and a last batch of 2);
- test: for each class, its first exact (lossless) test image, in colour and in grey
  (the protocol's test split: colour images first, then the same images in grey).
Writes OUT.npz with uint8 NCHW images, labels, domains (0 colour, 1 grey) and the indices
into the protocol's splits.

    python tools/parity/domain_independent/make_data.py OUT.npz
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from debiaskit.data.protocols import build_data

TRAIN_DOMINANT, TRAIN_MINORITY, TEST_PER_CLASS = 2, 1, 1


def select(bundle) -> dict:
    train, test = bundle.train, bundle.evals["test"]
    y, b = train.y.numpy(), train.b.numpy()
    dominant = train.aligned_bias.numpy()
    picked = []
    for c in range(10):
        members = np.flatnonzero(y == c)
        picked += list(members[b[members] == dominant[c]][:TRAIN_DOMINANT])
        picked += list(members[b[members] != dominant[c]][:TRAIN_MINORITY])
    train_index = np.sort(np.array(picked, dtype=np.int64))
    n = len(test) // 2  # colour images first, then the same images in grey
    yt = test.y.numpy()[:n]
    colour = np.sort(np.concatenate([np.flatnonzero(yt == c)[:TEST_PER_CLASS] for c in range(10)]))
    test_index = np.concatenate([colour, colour + n])
    arrays = {
        "x_train": train.x.numpy()[train_index], "y_train": y[train_index], "b_train": b[train_index],
        "train_index": train_index,
        "x_test": test.x.numpy()[test_index], "y_test": test.y.numpy()[test_index],
        "b_test": test.b.numpy()[test_index], "test_index": test_index,
    }
    return arrays


def images_sha256(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in ("x_train", "x_test"):
        h.update(np.ascontiguousarray(arrays[key], dtype=np.uint8).tobytes())
    return h.hexdigest()


def main(out: str) -> None:
    bundle = build_data("cifar10s", skew=0.95, test_set="lossless")
    arrays = select(bundle)
    np.savez_compressed(out, **arrays)
    print(out, {k: v.shape for k, v in arrays.items()}, "sha256", images_sha256(arrays))


if __name__ == "__main__":
    main(sys.argv[1])
