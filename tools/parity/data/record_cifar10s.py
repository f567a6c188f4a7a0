"""Record the CIFAR-10S selection of Wang et al. (princetonvisualai/DomainBiasMitigation)
from outside their code, for the ``data-cifar10s`` parity fixture.

Run in the reference environment (numpy, Pillow, h5py: their module imports it)::

    python tools/parity/data/record_cifar10s.py --ref CHECKOUT --data /work/shared/data

It imports their ``preprocess_data`` module from CHECKOUT and calls its
``create_cifar_s_data(train_imgs, train_labels, 0.95)`` on the CIFAR-10 training set of
``cifar10.npz`` (the same array their pickle reading builds: official order, N x 32 x 32 x
3 uint8, labels a list of ints), with the working directory a temporary folder and the
module's ``pickle`` replaced by a recorder that keeps every object it is asked to dump
(nothing is written but empty files). Their ``rgb_to_grayscale`` is applied to every image
of the local test set, as their ``create_cifar_data`` does for the test batch.
Recorded: the domain of every training image (1 = in their ``gray_idx``), the order in
which ``random.sample`` drew each class's dominant images, fingerprints of every output
image (train and grey test) and the raw luma of a few grey images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))
from common import FP_SEED, fingerprint, git_head, sha256  # noqa: E402

SKEW = 0.95
CHUNK = 2500          # training images per compared chunk (20 chunks)
TEST_CHUNK = 2500     # test images per compared chunk (4 chunks)
RAW_PER_CLASS = 4     # grey training images per class whose luma is stored raw


def record(ref: str, data: str) -> tuple[dict, dict]:
    sys.path.insert(0, ref)
    import preprocess_data as theirs

    with np.load(os.path.join(data, "cifar10.npz")) as npz:
        x_train, y_train = npz["x_train"], npz["y_train"]
        x_test = npz["x_test"]
    dumped = {}

    def dump(obj, f, *args, **kwargs):
        dumped[os.path.relpath(f.name, "data")] = obj

    shim = types.SimpleNamespace(dump=dump, load=None)
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.makedirs("data")
        theirs.pickle = shim
        try:
            theirs.create_cifar_s_data(x_train.copy(), [int(v) for v in y_train], SKEW)
        finally:
            os.chdir(old_cwd)
    folder = f"cifar-s/p{SKEW * 100}"
    domain_idx = dumped[f"{folder}/domain_idx"]
    out_train = dumped[f"{folder}/train_imgs"]
    b = np.zeros(len(y_train), dtype=np.uint8)
    for idx in domain_idx["gray_idx"].values():
        b[np.asarray(idx, dtype=np.int64)] = 1
    # the order random.sample drew the dominant images of each class, as positions in
    # the class's dataset-order index list
    colour_dominant = {theirs.cifar_class_dict[n] for n in theirs.cifar_color_class}
    draw_pos = []
    for c in range(10):
        members = np.flatnonzero(y_train == c)
        pos = {int(i): k for k, i in enumerate(members)}
        picked = domain_idx["color_idx" if c in colour_dominant else "gray_idx"][c]
        draw_pos.append(np.array([pos[int(i)] for i in picked], dtype=np.uint16))
    grey_test = np.stack([theirs.rgb_to_grayscale(img) for img in x_test])
    raw_idx = np.concatenate([np.flatnonzero((y_train == c) & (b == 1))[:RAW_PER_CLASS]
                              for c in range(10)])
    arrays = {
        "b_train": b,
        "draw_positions": np.concatenate(draw_pos),
        "draw_counts": np.array([len(p) for p in draw_pos], dtype=np.int64),
        "fp_train": fingerprint(out_train),
        "fp_test_grey": fingerprint(grey_test),
        "raw_index": raw_idx.astype(np.int64),
        "raw_luma": out_train[raw_idx][..., 0].copy(),
        "chunk": np.array([CHUNK, TEST_CHUNK], dtype=np.int64),
    }
    assert (out_train[raw_idx][..., 0] == out_train[raw_idx][..., 2]).all()
    info = {"colour_dominant": sorted(colour_dominant), "skew": SKEW,
            "k": len(draw_pos[0]), "x_train_sha256": sha256(x_train),
            "x_test_sha256": sha256(x_test)}
    return arrays, info


def manifest(ref: str, info: dict, command: str) -> dict:
    import PIL
    import torch
    return {
        "kind": "data",
        "method": "protocol:cifar10s",
        "reference": {"repo": "princetonvisualai/DomainBiasMitigation", "commit": git_head(ref),
                      "files": ["preprocess_data.py"]},
        "record": {"recorder": "tools/parity/data/record_cifar10s.py", "command": command,
                   "torch": torch.__version__, "threads": 1,
                   "libraries": {"python": sys.version.split()[0], "numpy": np.__version__,
                                 "pillow": PIL.__version__},
                   "changes": "their preprocess_data module imported from the checkout; "
                              "create_cifar_s_data(train_imgs, train_labels, 0.95) called "
                              "directly (create_cifar_data would first read the CIFAR-10 python "
                              "pickles and then build 8 other skews, CIFAR-I from CINIC and "
                              "CIFAR-D/C); train_imgs = cifar10.npz x_train (the array their "
                              "pickle reading builds), train_labels its labels as a list of "
                              "ints; the module's pickle replaced by a recorder of dumped "
                              "objects, the working directory a temporary folder (nothing but "
                              "empty files written); their rgb_to_grayscale applied to each "
                              "local test image as create_cifar_data does to the test batch"},
        "data": {"name": "cifar10.npz (DEBIASKIT_DATA): all 50,000 training images, all "
                         "10,000 local test images",
                 "selection": "the whole training set (the selection draws per class of "
                              "5,000); test set in the local order; images are NOT stored: "
                              "the replay rebuilds them from DEBIASKIT_DATA and compares "
                              "fingerprints (debiaskit.parity.fingerprint, "
                              f"seed {FP_SEED})",
                 "sha256": info["x_train_sha256"], "sha256_test": info["x_test_sha256"]},
        "network": None,
        "steps": 25,
        "replay": "data_cifar10s",
        "options": {"skew": 0.95, "test_set": "all"},
        "negative_control": {"options": {"skew": 0.9, "test_set": "all"},
                             "why": "the wrong skew level (90/10 instead of 95/5): a wrong "
                                    "number of images drawn per class shifts every later "
                                    "draw of the shared random.Random(42) stream"},
        "compared": [
            "steps 0-19: 20 chunks of 2,500 training images in dataset order: the domain "
            "(0 colour, 1 grey) of every image (abs 0) and the number of images whose "
            "fingerprint differs from the authors' output image (abs 0)",
            "steps 20-23: 4 chunks of 2,500 local test images: fingerprints of the grey copy "
            "debiaskit's test split holds (image i + n) vs their rgb_to_grayscale (count, abs 0)",
            "step 24: per class, the order in which random.sample drew the dominant-domain "
            "images (positions in the class's dataset-order list) vs debiaskit's "
            "dominant_indices (abs 0), the counts per (class, domain) and the raw luma of 40 "
            "grey training images (abs 0)"],
        "tolerances": {"abs": 1e-5, "rel": 1e-4},
        "measured": {},
        "divergences": [],
        "deviations": [
            {"what": "debiaskit draws round(skew * n_c) dominant images per class; the "
                     "authors int(5000 * skew)",
             "why": "the same k (4,750) at 0.95 and at every skew they build; round() avoids "
                    "float truncation at other skews (e.g. 0.57)"}],
        "notes": "Their create_cifar_s_data also writes per-sample weights, 2n labels and a "
                 "balanced (oversampled) copy; debiaskit derives these from (y, b) in its "
                 "methods and they are not compared. The test set here is the local "
                 "cifar10.npz test set (mostly JPEG-decoded, grouped by class): the grey "
                 "conversion is compared on it, not the official test order.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="checkout of DomainBiasMitigation")
    parser.add_argument("--data", default=os.environ.get("DEBIASKIT_DATA", "/work/shared/data"))
    parser.add_argument("--out", default=str(REPO / "tests/parity/fixtures/data-cifar10s"))
    args = parser.parse_args()
    from debiaskit.parity import write_fixture
    arrays, info = record(os.path.abspath(args.ref), args.data)
    command = ("OMP_NUM_THREADS=1 python tools/parity/data/record_cifar10s.py --ref CHECKOUT "
               "--data DEBIASKIT_DATA")
    path = write_fixture(args.out, arrays, manifest(os.path.abspath(args.ref), info, command))
    print(path, json.dumps(info))


if __name__ == "__main__":
    main()
