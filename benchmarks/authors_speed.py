"""The authors' LfF code and ours side by side: seconds per epoch, same machine, one run.

Given the git directory of a clone of the authors' LfF repository (alinlab/LfF), this
script unpacks it into a throwaway folder (``--work``, removed afterwards unless
``--keep``), runs it in its own virtual environment (``--venv``: reused when it exists,
else created with the torch and torchvision versions of this interpreter and the authors'
few dependencies) and times, alternately with ours:

  * Colored MNIST (1 % conflicting, severity 4; MLP; batch 256; 235 steps an epoch): the
    authors' ``train.py`` (LfF) and ``train_vanilla.py`` against ``debiaskit train --method
    lff`` / ``erm`` with ``input_scale_quirk`` (their input scaling). Per-epoch time =
    (time of ``--cmnist-epochs LONG`` epochs - time of SHORT) / (LONG - SHORT), so start-up,
    data loading and the first evaluation cancel; evaluation after each epoch is included
    on both sides. Their data comes from their own ``make_dataset.py`` on our MNIST files.
  * Corrupted CIFAR-10 type0 (1 % conflicting, severity 4; ResNet-20; batch 256; random
    crop + flip): a fixed number of training steps, short and long (``--cc10-steps``),
    their per-step time scaled to an epoch of 196 steps; evaluation is left out on both
    sides (theirs evaluates at step 0 only, ours once at the end of the run, in both the
    short and the long run). Both read the same images: ours generates the set and writes
    it in the authors' folder layout (``SPLIT/images.npy``, ``SPLIT/attrs.npy``,
    ``attr_names.pkl``).

Same threads on both sides (``--threads``: torch's intra-op threads, ``OMP_NUM_THREADS``
for theirs, plus ``--loader-workers`` data-loader processes for theirs, which decodes and
augments image by image); same precision: float32 on both, and for ours also with the
precision and compilation that ``--precision auto`` / ``--compile auto`` choose for a
run of the preset's length (theirs has no other precision; the row says so). The authors'
code is patched only to run on the CPU with the given loader workers and to skip the
datasets not timed. Writes JSON (``--out``) with the ratios, every raw time, the commands
and a ``machine`` record.

    python benchmarks/authors_speed.py LFF_GIT_DIR [--data-dir DIR] [--threads 2]
        [--parts cmnist,cc10] [--cmnist-epochs 1,4] [--cc10-steps 8,32]
        [--ours fp32,auto] [--venv DIR] [--out benchmarks/results/authors_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from debiaskit import runs
from debiaskit.data.protocols import build_data
from debiaskit.data.sources import resolve_data_dir
from debiaskit.methods import get_method
from debiaskit.train import COMPILE_MIN_STEPS, machine

CC10_STEPS_PER_EPOCH, BATCH = 196, 256
#: Epochs of the CPU preset lff-cc10-type0-cpu (for the compile decision auto makes).
PRESET_EPOCHS = 5
CC10_TAG = "CorruptedCIFAR10-Type0-Skewed0.01-Severity4"
CC10_PARAMS = {"type": "type0", "conflict_ratio": 0.01, "severity": 4, "seed": 0}
#: The authors' dependencies besides torch (their code imports these).
AUTHORS_DEPS = ["sacred", "tensorboard", "tqdm", "opencv-python-headless", "setuptools<81"]


def sh(cmd, cwd=None, env=None) -> float:
    """Run ``cmd``; its wall-clock seconds. Fails loudly with the command's last output."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return seconds


def unpack(git_dir: Path, work: Path) -> str:
    """The authors' code at HEAD of ``git_dir`` into ``work``; returns the commit."""
    work.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(work)], input=archive, check=True)
    return subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


def patch(work: Path, loader_workers: int) -> None:
    """CPU, ``loader_workers`` loader processes, only the datasets timed here."""
    make = work / "make_dataset.py"
    text = make.read_text()
    text = text.replace("for skewed_ratio in [5e-2, 2e-2, 1e-2, 5e-3]:",
                        "for skewed_ratio in [1e-2]:")
    text = text.replace("for severity in [1, 2, 3, 4]:", "for severity in [4]:")
    text = text.replace("from data.corrupted_cifar10_protocol import CORRUPTED_CIFAR10_PROTOCOL",
                        "CORRUPTED_CIFAR10_PROTOCOL = None")
    make.write_text(text)
    for name in ("train.py", "train_vanilla.py"):
        path = work / name
        path.write_text(path.read_text().replace("num_workers=16,",
                                                 f"num_workers={loader_workers},"))


def ensure_venv(venv: Path) -> Path:
    """The authors' interpreter: ``venv`` (created with this torch when missing)."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    sh([sys.executable, "-m", "venv", str(venv)])
    version = torch.__version__.split("+")[0]
    import torchvision
    sh([str(python), "-m", "pip", "install", "-q", f"torch=={version}",
        f"torchvision=={torchvision.__version__.split('+')[0]}", *AUTHORS_DEPS])
    return python


def write_idx(data_dir: Path, out: Path) -> None:
    """Our MNIST (mnist.npz, official order) as the idx files torchvision's MNIST reads."""
    import struct
    d = np.load(data_dir / "mnist.npz")
    out.mkdir(parents=True, exist_ok=True)
    for name, key, magic in (("train-images-idx3-ubyte", "x_train", 2051),
                             ("train-labels-idx1-ubyte", "y_train", 2049),
                             ("t10k-images-idx3-ubyte", "x_test", 2051),
                             ("t10k-labels-idx1-ubyte", "y_test", 2049)):
        arr = d[key].astype(np.uint8)
        with open(out / name, "wb") as f:
            f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape))
            f.write(arr.tobytes())


def write_cc10(data_dir: Path, root: Path) -> dict:
    """Our Corrupted CIFAR-10 type0 (1 %, severity 4) in the authors' folder layout."""
    bundle = build_data("corrupted_cifar10", str(data_dir), **CC10_PARAMS)
    test = next(iter(bundle.evals.values()))
    for split, ds in (("train", bundle.train), ("valid", test)):
        folder = root / CC10_TAG / split
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", ds.x.permute(0, 2, 3, 1).contiguous().numpy())
        np.save(folder / "attrs.npy", torch.stack([ds.y, ds.b], 1).numpy().astype(np.int64))
    with open(root / CC10_TAG / "attr_names.pkl", "wb") as f:
        pickle.dump(["object", "corruption"], f)
    return {"train": len(bundle.train), "valid": len(test),
            "train_checksum": bundle.train.checksum()}


def per_unit(short: float, long: float, n_short: int, n_long: int) -> float:
    return (long - short) / (n_long - n_short)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("git_dir", help="git directory of a clone of alinlab/LfF")
    ap.add_argument("--data-dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--parts", default="cmnist,cc10")
    ap.add_argument("--cmnist-epochs", default="1,4")
    ap.add_argument("--cc10-steps", default="8,32")
    ap.add_argument("--ours", default="fp32,auto",
                    help="our settings to time on Corrupted CIFAR-10: fp32 (float32, no "
                         "compilation) and/or auto (the precision and compilation auto "
                         "chooses for a run of the preset's length)")
    ap.add_argument("--venv", help="the authors' virtual environment (created if missing; "
                    "default: inside the work folder)")
    ap.add_argument("--work", help="throwaway folder (default: a new temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out")
    args = ap.parse_args()
    git_dir = Path(args.git_dir).resolve()
    if not (git_dir / "HEAD").exists():
        ap.error(f"{git_dir} is not a git directory (give the .git folder of a clone of "
                 "alinlab/LfF)")
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"cmnist", "cc10"}
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose cmnist and/or cc10")
    ours_modes = [m for m in args.ours.split(",") if m]
    if set(ours_modes) - {"fp32", "auto"}:
        ap.error("--ours takes fp32 and/or auto")
    ep_short, ep_long = (int(v) for v in args.cmnist_epochs.split(","))
    st_short, st_long = (int(v) for v in args.cc10_steps.split(","))
    if not (0 < ep_short < ep_long and 0 < st_short < st_long):
        ap.error("--cmnist-epochs and --cc10-steps take SHORT,LONG with 0 < SHORT < LONG")
    data_dir = resolve_data_dir(args.data_dir)
    if args.out:
        runs.check_out(Path(args.out))
    work = Path(args.work or tempfile.mkdtemp(prefix="authors-lff-")).resolve()
    commit = unpack(git_dir, work)
    patch(work, args.loader_workers)
    python = ensure_venv(Path(args.venv).resolve() if args.venv else work / "venv")
    datasets, logs = work / "datasets", work / "log"
    logs.mkdir(exist_ok=True)
    env_theirs = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
                  "MKL_NUM_THREADS": str(args.threads)}
    env_ours = {**os.environ, "DEBIASKIT_DATA": str(data_dir)}
    ours_cmd = [sys.executable, "-m", "debiaskit", "train", "--threads", str(args.threads),
                "--data-dir", str(data_dir)]
    res = {"machine": machine(), "threads": args.threads,
           "authors_loader_workers": args.loader_workers, "authors_commit": commit,
           "torch": torch.__version__, "script": "benchmarks/authors_speed.py",
           "arguments": sys.argv[1:]}

    def theirs(script: str, named: list[str], extra: list[str]) -> float:
        return sh([str(python), script, "with", "server_user", *named, "device=cpu",
                   f"data_dir={datasets}", f"log_dir={logs}", *extra], cwd=work, env=env_theirs)

    def ours(options: list[str]) -> float:
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        return sh([*ours_cmd, *options, "--out", str(out)], env=env_ours)

    if "cmnist" in parts:
        write_idx(data_dir, datasets / "MNIST" / "MNIST" / "raw")
        sh([str(python), "make_dataset.py", "with", "make_target=colored_mnist",
            f"data_dir={datasets}"], cwd=work, env=env_theirs)
        named = ["colored_mnist", "skewed3", "severity4", "log_epochs"]
        common = ["--model-opt", "input_scale_quirk=true", "--aligned-ratio", "0.99",
                  "--precision", "fp32", "--compile", "off"]
        ours(["--method", "erm", "--epochs", "1", *common])  # warm-up: cold caches
        cm = {}
        for label, script, method in (("LfF", "train.py", "lff"),
                                      ("Vanilla", "train_vanilla.py", "erm")):
            t = {"authors": [], "ours": []}
            for e in (ep_short, ep_long):  # interleaved, so a change of load hits both
                t["authors"].append(theirs(script, named, [f"epochs={e}"]))
                t["ours"].append(ours(["--method", method, "--epochs", str(e), *common]))
            a, o = per_unit(*t["authors"], ep_short, ep_long), per_unit(*t["ours"], ep_short,
                                                                       ep_long)
            cm[label] = {"authors_seconds_per_epoch": a, "ours_seconds_per_epoch": o,
                         "ratio": a / o, "raw_seconds": t, "epochs": [ep_short, ep_long]}
            print(f"Colored MNIST {label:8s} s/epoch: authors {a:.2f}, ours {o:.2f} "
                  f"-> {a / o:.2f}x", flush=True)
        res["colored_mnist"] = {"precision": "float32 on both", **cm}

    if "cc10" in parts:
        res["cc10_data"] = write_cc10(data_dir, datasets)
        named = ["corrupted_cifar10", "type0", "skewed3", "severity4"]
        # evaluation only at step 0 in theirs (in both the short and the long run)
        valid = [f"main_valid_freq={10 ** 9}"]
        common = ["--dataset", "corrupted_cifar10", "--data", "type=type0",
                  "--data", "severity=4", "--aligned-ratio", "0.99", "--model", "resnet20",
                  "--augment", "crop_flip", "--model-opt", "mean=[0.4914,0.4822,0.4465]",
                  "--model-opt", "std=[0.2023,0.1994,0.201]", "--eval-subset", "1000"]
        cc = {}
        for label, script, method in (("LfF", "train.py", "lff"),
                                      ("Vanilla", "train_vanilla.py", "erm")):
            # the compilation auto gives a run of the CPU preset's length; the short and
            # the long timing run both pay for it, so it cancels
            auto_compiles = (get_method(method).compile_step and
                             PRESET_EPOCHS * CC10_STEPS_PER_EPOCH >= COMPILE_MIN_STEPS)
            modes = {"fp32": ["--precision", "fp32", "--compile", "off"],
                     "auto": ["--precision", "auto",
                              "--compile", "on" if auto_compiles else "off"]}
            summaries = {}

            def ours_step(s, mode):
                seconds = ours(["--method", method, "--epochs", "1", "--train-subset",
                                str(s * BATCH), *common, *modes[mode]])
                summaries[mode] = json.loads((work / "ours" / "summary.json").read_text())
                return seconds

            theirs_step = (lambda s: theirs(script, named, [f"main_num_steps={s}", *valid]))
            # warm-up: file cache and first imports for both, and our compiled step's
            # caches (else the first timed run would pay a cold compilation, the second not)
            theirs_step(1)
            for mode in ours_modes:
                ours_step(1, mode)
            a_raw, o_raws = [], {mode: [] for mode in ours_modes}
            for s in (st_short, st_long):  # interleaved
                a_raw.append(theirs_step(s))
                for mode in ours_modes:
                    o_raws[mode].append(ours_step(s, mode))
            a = per_unit(*a_raw, st_short, st_long) * CC10_STEPS_PER_EPOCH
            row = {"authors_seconds_per_epoch": a, "authors_raw_seconds": a_raw,
                   "steps": [st_short, st_long]}
            for mode in ours_modes:
                o_raw = o_raws[mode]
                o = per_unit(*o_raw, st_short, st_long) * CC10_STEPS_PER_EPOCH
                summary = summaries[mode]
                row[mode] = {"ours_seconds_per_epoch": o, "ratio": a / o, "raw_seconds": o_raw,
                             "options": modes[mode], "precision": summary.get("precision"),
                             "compile": summary.get("compile")}
                print(f"Corrupted CIFAR-10 {label:8s} ({mode}) s/epoch: authors {a:.1f}, "
                      f"ours {o:.1f} -> {a / o:.2f}x", flush=True)
            cc[label] = row
        res["corrupted_cifar10"] = {
            "precision": "authors float32 (their only one); ours float32 (fp32) and as auto "
                         "chooses (auto)", **cc}
    if args.out:
        runs.write_json(args.out, res)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
