"""Write the Colored MNIST subset of the SiH parity fixture in the layout SiH's code reads.

Runs in debiaskit's environment (it uses debiaskit's own ``colored_mnist`` protocol):

    python tools/parity/sih/make_data.py OUT_DIR

writes ``OUT_DIR/ColoredMNIST-Skewed0.01-Severity4/{train,test}/{images.npy,attrs.npy}``
(images N x 28 x 28 x 3 uint8, attributes N x 2 int64: digit, colour) with
``attr_names.pkl``, and ``OUT_DIR/selection.json``: the protocol parameters, the chosen
indices into debiaskit's training and test splits and the SHA-256 of the chosen uint8
training images (N x 3 x 28 x 28, in the chosen order), which the recorder copies into the
fixture and the replay checks after regenerating the same images.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

from debiaskit.data.protocols import build_data

PARAMS = {"conflict_ratio": 0.01, "severity": 4}
N_TRAIN = 2600   # SiH's loader: 90 % = 2,340 = 9 x 256 + 36 to train, 260 held out
N_TEST = 512     # their per-epoch test evaluation only (it changes nothing in training)
SEED = 28        # numpy.random.default_rng(SEED).choice, sorted


def select(n_train: int, n_test: int, seed: int, train_len: int, test_len: int):
    rng = np.random.default_rng(seed)
    return (np.sort(rng.choice(train_len, n_train, replace=False)),
            np.sort(rng.choice(test_len, n_test, replace=False)))


def images_sha256(x_u8: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x_u8, dtype=np.uint8).tobytes()).hexdigest()


def main(out: str) -> None:
    data_dir = os.environ.get("DEBIASKIT_DATA")
    bundle = build_data("colored_mnist", data_dir=data_dir, **PARAMS)
    train, test = bundle.train, bundle.evals["test"]
    pick_train, pick_test = select(N_TRAIN, N_TEST, SEED, len(train.y), len(test.y))
    root = Path(out) / "ColoredMNIST-Skewed0.01-Severity4"
    shas = {}
    for split, ds, pick in (("train", train, pick_train), ("test", test, pick_test)):
        x = ds.x[pick].numpy()
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 28, 28)
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "images.npy", np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        np.save(root / split / "attrs.npy",
                np.stack([ds.y[pick].numpy(), ds.b[pick].numpy()], 1).astype(np.int64))
        shas[split] = images_sha256(x)
        print(split, x.shape, "conflicting:", int((ds.y[pick] != ds.b[pick]).sum()))
    with open(root / "attr_names.pkl", "wb") as f:
        pickle.dump(["digit", "color"], f)
    selection = {"protocol": bundle.protocol, "params": bundle.params, "seed": SEED,
                 "train_index": pick_train.tolist(), "test_index": pick_test.tolist(),
                 "train_sha256": shas["train"], "test_sha256": shas["test"]}
    (Path(out) / "selection.json").write_text(json.dumps(selection))


if __name__ == "__main__":
    main(sys.argv[1])
