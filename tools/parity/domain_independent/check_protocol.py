"""Check debiaskit's ``cifar10s`` protocol against the authors' own CIFAR-10S generation
(princetonvisualai/DomainBiasMitigation ``preprocess_data.create_cifar_s_data``) on the
whole CIFAR-10 training set: the same domain (colour / grey) for every image and the same
images, byte for byte.

Two steps, two environments:

    # their code (needs h5py, pillow, numpy; writes about 0.5 GB under WORK, removed after)
    python check_protocol.py reference --ref REF --cifar DATA/cifar10.npz --work WORK
    # debiaskit (its venv, DEBIASKIT_DATA set)
    python check_protocol.py compare WORK/their_cifar10s.npz

The first calls their ``create_cifar_s_data(train_imgs, train_labels, 0.95)`` (the
function their README's preprocessing runs for CIFAR-10S) in WORK, reads back the
``train_imgs`` and ``train_2n_labels`` it wrote and keeps the domains (label >= 10) and a
sha256 of the images; the second builds debiaskit's protocol and compares.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np


def reference(args) -> None:
    with np.load(args.cifar) as f:
        x, y = f["x_train"], f["y_train"]
    work, ref = Path(args.work).resolve(), Path(args.ref).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    sys.path.insert(0, str(ref))
    import preprocess_data  # noqa: E402 (their module, from --ref)
    preprocess_data.create_cifar_s_data(np.array(x, copy=True), [int(v) for v in y], 0.95)
    folder = work / "data" / "cifar-s" / "p95.0"
    with open(folder / "train_imgs", "rb") as f:
        images = pickle.load(f)
    with open(folder / "train_2n_labels", "rb") as f:
        labels = np.array(pickle.load(f))
    b = (labels >= 10).astype(np.int8)
    if not np.array_equal(labels - 10 * b, y):
        raise SystemExit("their labels are not class + 10 x domain")
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()
    np.savez_compressed(work / "their_cifar10s.npz", b=b, images_sha256=np.array(digest))
    shutil.rmtree(work / "data")
    print(f"theirs: {int(b.sum())} grey of {len(b)}, images sha256 {digest}")


def compare(args) -> None:
    from debiaskit.data.protocols import build_data
    with np.load(args.theirs) as f:
        b, digest = f["b"], str(f["images_sha256"])
    train = build_data("cifar10s", skew=0.95, test_set="lossless").train
    ours_b = train.b.numpy()
    ours = hashlib.sha256(np.ascontiguousarray(train.x.numpy().transpose(0, 2, 3, 1)).tobytes())
    same_b = int((ours_b == b).sum())
    print(f"domains equal for {same_b} of {len(b)} images; images "
          f"{'identical' if ours.hexdigest() == digest else 'DIFFER'}")
    if same_b != len(b) or ours.hexdigest() != digest:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--ref", required=True)
    r.add_argument("--cifar", required=True, help="cifar10.npz (x_train, y_train, official order)")
    r.add_argument("--work", required=True)
    c = sub.add_parser("compare")
    c.add_argument("theirs")
    args = ap.parse_args()
    reference(args) if args.mode == "reference" else compare(args)


if __name__ == "__main__":
    main()
