"""Record LfF's dataset generation (alinlab/LfF make_dataset.py) from outside their code,
for the ``data-lff-cmnist`` and ``data-lff-cc10`` parity fixtures.

Run in an environment with their dependencies (torch, torchvision, sacred, OpenCV,
scikit-image, scipy, Wand + ImageMagick 6; see README.md)::

    python tools/parity/data/record_lff.py cmnist --ref CHECKOUT --data /work/shared/data
    python tools/parity/data/record_lff.py cc10 --ref CHECKOUT --data /work/shared/data

Both import their ``make_dataset`` module from CHECKOUT (working directory: the checkout,
as their relative resource paths expect) and call its own ``make_colored_mnist`` /
``make_corrupted_cifar10`` with explicit arguments. Hooked from outside:
- ``make_dataset.MNIST`` / ``make_dataset.CIFAR10`` (torchvision datasets that would
  download) replaced by a stand-in serving the arrays of ``mnist.npz`` / ``cifar10.npz``
  (``.data``, ``.targets``; CIFAR: a subset, see below);
- ``make_dataset.np`` replaced by a proxy of numpy whose ``save`` keeps the arrays
  (images, attrs) in memory instead of writing them;
- Colored MNIST: the protocol module's ``torch`` replaced by a proxy whose ``randn``
  records every draw (one (3, 1, 1) normal per image); the global torch generator seeded
  with ``--seed`` first (their script leaves it unseeded);
- Corrupted CIFAR-10: each protocol function wrapped so that, for an image given
  corruption v, the global ``np.random`` state is the one of a ``RandomState([seed,
  split_id, v])`` stream continued from the previous image of corruption v (debiaskit's
  per-corruption streams; their script draws from one unseeded global stream).
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

#: make_dataset's corruption lists, class k aligned with entry k
TYPES = {"type0": ["Snow", "Frost", "Fog", "Brightness", "Contrast", "Spatter", "Elastic",
                   "JPEG", "Pixelate", "Saturate"],
         "type1": ["Gaussian Noise", "Shot Noise", "Impulse Noise", "Speckle Noise",
                   "Gaussian Blur", "Defocus Blur", "Glass Blur", "Motion Blur", "Zoom Blur",
                   "Original"]}


class _Dataset:
    """Stand-in for torchvision's MNIST / CIFAR10: ``.data`` and ``.targets``."""

    def __init__(self, splits, train, as_tensor):
        import torch
        x, y = splits["train" if train else "test"]
        self.data = torch.from_numpy(np.array(x)) if as_tensor else np.array(x)
        self.targets = torch.from_numpy(np.array(y)) if as_tensor else [int(v) for v in y]


class _NumpyProxy(types.ModuleType):
    """numpy, except that ``save`` keeps (path, array) in ``saved``."""

    def __init__(self):
        super().__init__("numpy_proxy")
        self.saved = {}

    def __getattr__(self, name):
        return getattr(np, name)

    def save(self, path, array, *args, **kwargs):
        self.saved[os.path.join(os.path.basename(os.path.dirname(path)),
                                os.path.basename(path))] = np.array(array)


def _import_theirs(ref: str):
    sys.path.insert(0, ref)
    os.chdir(ref)
    import make_dataset
    return make_dataset


def record_cmnist(ref: str, data: str, skewed_ratio: float, severity: int, seed: int):
    import torch
    theirs = _import_theirs(ref)
    import data.colored_mnist_protocol as protocol
    with np.load(os.path.join(data, "mnist.npz")) as npz:
        splits = {"train": (npz["x_train"], npz["y_train"]), "test": (npz["x_test"], npz["y_test"])}
    draws = []

    class TorchProxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        def randn(self, *args, **kwargs):
            out = torch.randn(*args, **kwargs)
            draws.append(out.detach().reshape(-1).numpy().copy())
            return out

    proxy = _NumpyProxy()
    theirs.MNIST = lambda root, train=True, download=False: _Dataset(splits, train, True)
    theirs.np = proxy
    protocol.torch = TorchProxy("torch_proxy")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        theirs.make_colored_mnist(data_dir=tmp, skewed_ratio=skewed_ratio, severity=severity)
    arrays = {}
    n_train = len(splits["train"][1])
    draws = np.stack(draws).astype(np.float32)
    for split, key in (("train", "train"), ("valid", "test")):
        images = proxy.saved[f"{split}/images.npy"]
        attrs = proxy.saved[f"{split}/attrs.npy"]
        assert (attrs[:, 0] == splits[key][1]).all()
        arrays[f"b_{key}"] = attrs[:, 1].astype(np.uint8)
        arrays[f"fp_{key}"] = fingerprint(images)
        arrays[f"draws_{key}"] = draws[:n_train] if key == "train" else draws[n_train:]
        # raw images: per class the first 2 conflicting and the first aligned image
        y, b = splits[key][1], attrs[:, 1]
        pick = np.concatenate([np.concatenate([np.flatnonzero((y == c) & (b != c))[:2],
                                               np.flatnonzero((y == c) & (b == c))[:1]])
                               for c in range(10)])
        arrays[f"raw_index_{key}"] = pick.astype(np.int64)
        arrays[f"raw_{key}"] = images[pick]
    assert len(draws) == n_train + len(splits["test"][1])
    info = {"x_sha256": sha256(splits["train"][0]), "x_test_sha256": sha256(splits["test"][0]),
            "draws_sha256": sha256(draws), "n_draws": len(draws)}
    return arrays, info


def record_cc10(ref: str, data: str, skewed_ratio: float, severity: int, seed: int,
                n_train: int, n_test: int, kind: str = "type0"):
    theirs = _import_theirs(ref)
    with np.load(os.path.join(data, "cifar10.npz")) as npz:
        lossless, y_test = npz["test_lossless"], npz["y_test"]
        # the local test set is grouped by class: the first n_test / 10 exact (lossless)
        # images of every class, in local order
        test_pick = np.sort(np.concatenate([np.flatnonzero(lossless & (y_test == c))
                                            [:n_test // 10] for c in range(10)]))
        splits = {"train": (npz["x_train"][:n_train], npz["y_train"][:n_train]),
                  "test": (npz["x_test"][test_pick], npz["y_test"][test_pick])}
    proxy = _NumpyProxy()
    theirs.CIFAR10 = lambda root, train=True, download=False: _Dataset(splits, train, False)
    theirs.np = proxy
    streams = {}
    split_of = {"id": 0}
    protocol = theirs.CORRUPTED_CIFAR10_PROTOCOL
    originals = dict(protocol)

    def wrap(v, fn):
        def call(img, sev):
            key = (split_of["id"], v)
            if key not in streams:
                streams[key] = np.random.RandomState([seed, key[0], v]).get_state()
            np.random.set_state(streams[key])
            out = fn(img, sev)
            streams[key] = np.random.get_state()
            return out
        return call

    for v, name in enumerate(TYPES[kind]):
        protocol[name] = wrap(v, originals[name])
    real_make_attr = theirs.make_attr_labels
    calls = []

    def make_attr_labels(targets, ratio):  # marks which split is being corrupted
        split_of["id"] = len(calls)
        calls.append(ratio)
        return real_make_attr(targets, ratio)

    theirs.make_attr_labels = make_attr_labels
    with tempfile.TemporaryDirectory() as tmp:
        theirs.make_corrupted_cifar10(data_dir=tmp, skewed_ratio=skewed_ratio,
                                      corruption_names=TYPES[kind], severity=severity,
                                      postfix=kind[-1])
    # the assignment rule on the whole training and test sets (their own function)
    import torch
    with np.load(os.path.join(data, "cifar10.npz")) as npz:
        b_full = real_make_attr(torch.LongTensor(npz["y_train"]), 1 - skewed_ratio).numpy()
    arrays = {"b_full_train": b_full.astype(np.uint8)}
    for split, key in (("train", "train"), ("valid", "test")):
        images = proxy.saved[f"{split}/images.npy"]
        attrs = proxy.saved[f"{split}/attrs.npy"]
        assert (attrs[:, 0] == splits[key][1]).all()
        arrays[f"b_{key}"] = attrs[:, 1].astype(np.uint8)
        arrays[f"fp_{key}"] = fingerprint(images)
        # raw images: the first 3 of every corruption
        pick = np.concatenate([np.flatnonzero(attrs[:, 1] == v)[:3] for v in range(10)])
        arrays[f"raw_index_{key}"] = pick.astype(np.int64)
        arrays[f"raw_{key}"] = images[pick]
    arrays["test_pick"] = test_pick.astype(np.int64)
    info = {"x_sha256": sha256(splits["train"][0]), "x_test_sha256": sha256(splits["test"][0]),
            "ratios": calls, "type": kind, "n_train": n_train, "n_test": n_test}
    return arrays, info


def versions() -> dict:
    import PIL
    import cv2
    import scipy
    import skimage
    import torch
    out = {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-image": skimage.__version__,
           "opencv": cv2.__version__, "pillow": PIL.__version__, "torch": torch.__version__}
    try:
        import wand.version
        out["imagemagick"] = wand.version.MAGICK_VERSION
    except Exception:  # noqa: BLE001
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cmnist", "cc10"])
    parser.add_argument("--ref", required=True, help="checkout of alinlab/LfF")
    parser.add_argument("--data", default=os.environ.get("DEBIASKIT_DATA", "/work/shared/data"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skewed-ratio", type=float, default=None)
    parser.add_argument("--severity", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--type", default="type0", choices=sorted(TYPES))
    args = parser.parse_args()
    ref, data = os.path.abspath(args.ref), os.path.abspath(args.data)
    name = args.what if args.what == "cmnist" else f"cc10-{args.type}"
    out = os.path.abspath(args.out or REPO / f"tests/parity/fixtures/data-lff-{name}")
    from debiaskit.parity import write_fixture
    if args.what == "cmnist":
        ratio = 0.01 if args.skewed_ratio is None else args.skewed_ratio
        arrays, info = record_cmnist(ref, data, ratio, args.severity, args.seed)
    else:
        ratio = 0.05 if args.skewed_ratio is None else args.skewed_ratio
        arrays, info = record_cc10(ref, data, ratio, args.severity, args.seed, args.n_train,
                                   args.n_test, args.type)
    info.update(versions=versions(), skewed_ratio=ratio, severity=args.severity, seed=args.seed)
    command = ("OMP_NUM_THREADS=1 python tools/parity/data/record_lff.py "
               + " ".join(a for a in sys.argv[1:] if not a.startswith("/")
                          and a not in ("--ref", "--data", "--out"))
               + " --ref CHECKOUT --data DEBIASKIT_DATA")
    make = cmnist_manifest if args.what == "cmnist" else cc10_manifest
    path = write_fixture(out, arrays, make(ref, info, command))
    print(path, json.dumps(info))


def _record(info: dict, command: str, changes: str) -> dict:
    return {"recorder": "tools/parity/data/record_lff.py", "command": command,
            "torch": info["versions"]["torch"], "threads": 1,
            "libraries": info["versions"], "changes": changes}


def cmnist_manifest(ref: str, info: dict, command: str) -> dict:
    return {
        "kind": "data",
        "method": "protocol:colored_mnist",
        "reference": {"repo": "alinlab/LfF", "commit": git_head(ref),
                      "files": ["make_dataset.py", "data/colored_mnist_protocol.py",
                                "data/resource/colors.th"]},
        "record": _record(info, command,
                          "their make_dataset.make_colored_mnist(data_dir=<temporary folder>, "
                          f"skewed_ratio={info['skewed_ratio']}, severity={info['severity']}) "
                          "called directly (not through sacred's command line), working "
                          "directory the checkout; make_dataset.MNIST replaced by a stand-in "
                          "serving mnist.npz (.data uint8 tensor, .targets int64 tensor; the "
                          "torchvision download is not run); make_dataset.np replaced by a "
                          "numpy proxy whose save() keeps the arrays in memory; the protocol "
                          "module's torch replaced by a proxy recording each randn draw; "
                          f"torch.manual_seed({info['seed']}) before the call (their script "
                          "leaves the generator unseeded)"),
        "data": {"name": "mnist.npz (DEBIASKIT_DATA): all 60,000 training and 10,000 test "
                         "images, official order",
                 "selection": "the whole sets (the bias assignment is by dataset order over "
                              "each class); images are NOT stored: the replay rebuilds them "
                              "with debiaskit's protocol and compares fingerprints "
                              f"(debiaskit.parity.fingerprint, seed {FP_SEED}) and 60 raw images",
                 "sha256": info["x_sha256"], "sha256_test": info["x_test_sha256"],
                 "draws_sha256": info["draws_sha256"]},
        "network": None,
        "steps": 25,
        "replay": "data_lff",
        "options": {"conflict_ratio": info["skewed_ratio"], "severity": info["severity"],
                    "seed": 0},
        "negative_control": {"options": {"conflict_ratio": info["skewed_ratio"],
                                         "severity": info["severity"] - 1, "seed": 0},
                             "why": "the wrong severity (sigma 0.01 instead of 0.005): "
                                    "LfF's severity list and Hendrycks' are easily confused"},
        "compared": [
            "steps 0-19: 20 chunks of 3,000 training images in dataset order: the bias "
            "(colour) value of every image (abs 0) and the number of images differing from "
            "LfF's output (fingerprint of the 28 x 28 x 3 uint8 image; abs 0)",
            "steps 20-23: the same for 4 chunks of 2,500 test images (LfF's 'valid' split, "
            "10 % aligned)",
            "step 24: counts per (class, bias) for both splits and the raw pixels of 60 images "
            "(per class the first 2 conflicting and the first aligned; abs 0)",
            "given: LfF's torch colour-noise draws (standard normal, one (3, 1, 1) per image) "
            "injected in place of debiaskit's numpy draws"],
        "tolerances": {"abs": 1e-5, "rel": 1e-4},
        "measured": {},
        "divergences": [
            {"what": "debiaskit's MEAN_COLORS were LfF's colors.th rounded to 6 decimals: "
                     "with LfF's draws injected, 26 of 3,000 training and 20 of 2,500 test "
                     "images per chunk (about 0.7 %) differed by one level in some pixels",
             "action": "fixed in src/debiaskit/data/protocols/colored_mnist.py (the exact "
                       "float32 values), test tests/test_protocols.py::"
                       "test_lff_mean_colours_are_the_float32_values_of_colors_th"}],
        "deviations": [
            {"what": "the colour noise is drawn from numpy.random.default_rng([seed, split]) "
                     "as normal(0, sigma, (N, 3)); LfF draws torch.randn(3, 1, 1) per image "
                     "from the unseeded global torch generator",
             "why": "reproducible from debiaskit's seed without touching global generators; "
                    "the replay injects LfF's draws and the images are then identical"}],
        "notes": "The bias assignment (make_attr_labels) needs no injected draw: it is "
                 "deterministic and debiaskit's block_assignment gives the same value for "
                 "every one of the 70,000 images. The severity-k -> sigma map is LfF's "
                 "[0.05, 0.02, 0.01, 0.005] (their list's fifth value, 0.002, is unused by "
                 "make_dataset's severities 1-4).",
    }


def cc10_manifest(ref: str, info: dict, command: str) -> dict:
    kind, ratio, severity = info["type"], info["skewed_ratio"], info["severity"]
    n_train, n_test = info["n_train"], info["n_test"]
    steps = -(-n_train // 50) + -(-n_test // 50) + 1
    return {
        "kind": "data",
        "method": "protocol:corrupted_cifar10",
        "reference": {"repo": "alinlab/LfF", "commit": git_head(ref),
                      "files": ["make_dataset.py", "data/corrupted_cifar10_protocol.py"]
                      + (["data/resource/frost1.png", "data/resource/frost2.png",
                          "data/resource/frost3.png", "data/resource/frost4.jpg",
                          "data/resource/frost5.jpg"] if kind == "type0" else [])},
        "record": _record(info, command,
                          "their make_dataset.make_corrupted_cifar10(data_dir=<temporary "
                          f"folder>, skewed_ratio={ratio}, corruption_names=<make_dataset's "
                          f"{kind} list>, severity={severity}, postfix='{kind[-1]}') called "
                          "directly (not through sacred's command line), working directory "
                          "the checkout, in LfF's pinned environment (requirements.txt: Python "
                          "3.7, numpy 1.18.2, scipy 1.3.0, scikit-image 0.15.0, Pillow 7.1.1, "
                          "torch 1.4.0, torchvision 0.5.0, Wand 0.5.8; OpenCV 4.2.0 as "
                          "opencv-python-headless 4.2.0.34 instead of opencv-python 4.2.0.32, "
                          "which has no wheel left for Python 3.7; ImageMagick 6.9.11-60 Q16 "
                          "from Debian 12); make_dataset.CIFAR10 replaced by a stand-in serving "
                          "a subset of cifar10.npz (.data uint8 N x 32 x 32 x 3, .targets "
                          f"list): the first {n_train} training images and {n_test // 10} exact "
                          "(test_lossless) test images per class; make_dataset.np replaced by "
                          "a numpy proxy whose save() keeps the arrays in memory; each "
                          "CORRUPTED_CIFAR10_PROTOCOL entry wrapped so that the global "
                          "np.random state is that of RandomState([seed, split, v]) for the "
                          "image's corruption v, continued from the previous image of v "
                          "(their script draws from one unseeded global stream); "
                          "make_attr_labels wrapped only to know which split is running"),
        "data": {"name": "cifar10.npz (DEBIASKIT_DATA)",
                 "selection": f"training: the first {n_train} images (official order); test: "
                              f"the first {n_test // 10} images of each class among the 1,000 "
                              "exact ones (test_lossless), in local order (indices stored as "
                              "test_pick); the assignment rule also on all 50,000 training "
                              "images. Images are NOT stored except 3 per corruption and "
                              "split: the replay corrupts with debiaskit and compares "
                              f"fingerprints (debiaskit.parity.fingerprint, seed {FP_SEED})",
                 "sha256": info["x_sha256"], "sha256_test": info["x_test_sha256"]},
        "network": None,
        "steps": steps,
        "replay": "data_lff",
        "options": {"conflict_ratio": ratio, "type": kind, "severity": severity, "seed": 0},
        "negative_control": {"options": {"conflict_ratio": ratio, "type": kind,
                                         "severity": severity - 1, "seed": 0},
                             "why": f"LfF's severity {severity} taken as Hendrycks' severity "
                                    f"{severity} (LfF calls Hendrycks' corruption at severity "
                                    f"+ 1 = {severity + 1})"},
        "compared": [
            f"steps 0-{-(-n_train // 50) - 1}: chunks of 50 training images in dataset order: "
            "the corruption index of every image (abs 0) and, per corruption, the number of "
            "images differing from LfF's output (fingerprints; abs 0)",
            f"steps {-(-n_train // 50)}-{steps - 2}: the same for chunks of 50 test images "
            "(LfF's 'valid' split, 10 % aligned = uniform)",
            f"step {steps - 1}: the assignment on all 50,000 training images (LfF's "
            "make_attr_labels vs debiaskit's block_assignment), counts per (class, "
            "corruption) of both subsets, and per corruption the largest pixel difference "
            "over 3 stored raw images of each split",
            "given: the same random stream per corruption (the recorder runs LfF's functions "
            "on debiaskit's RandomState([seed, split, v]) streams)"],
        "tolerances": {"abs": 1e-5, "rel": 1e-4},
        "measured": {},
        "divergences": [],
        "deviations": [
            {"what": "debiaskit draws each corruption's randomness from its own stream "
                     "RandomState([seed, split, v]) in dataset order; LfF draws all from the "
                     "unseeded global np.random in dataset order",
             "why": "reproducible from debiaskit's seed and batchable per corruption; given "
                    "the same streams the images are identical"}],
        "notes": "Recorded in LfF's pinned environment. debiaskit's corruptions are a batched "
                 "re-implementation (no ImageMagick, no Wand): the replay runs only debiaskit's "
                 "code. JPEG in debiaskit needs the jpeglib package (libjpeg 9d, as Pillow 7.1 "
                 "bundled); without it debiaskit falls back to Pillow's libjpeg-turbo."
                 + (" The pinned environment matters: LfF's own code run with numpy 1.26.4, "
                    "scipy 1.10.1, scikit-image 0.20.0, OpenCV 4.8.1, Pillow 9.5.0 "
                    "(libjpeg-turbo) on the same subset and streams gave other images for "
                    "elastic (about 60 % of its images, up to 60 levels: SciPy 1.6 changed "
                    "map_coordinates' 'reflect'), JPEG (about 60 %, up to 40 levels: "
                    "libjpeg-turbo) and snow (8 %, OpenCV's float grey conversion), while the "
                    "7 others stayed bit-identical; debiaskit follows the pinned versions, "
                    "which made LfF's datasets." if kind == "type0" else ""),
    }


if __name__ == "__main__":
    main()
