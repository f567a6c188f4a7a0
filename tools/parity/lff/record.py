"""Record alinlab/LfF's own training run from outside its code (parity fixtures ``lff-*``).

Runs the authors' ``train.py`` (its sacred experiment, imported from the checkout given with
``--ref``) with its own named configs, on the CPU, and records through hooks only; no file
of the checkout is edited and none of its code is copied here:

- ``train.DataLoader`` is replaced by a DataLoader subclass that forces ``num_workers=0``
  and, for the training loader (the first one built), records each batch's dataset indices
  and the augmentation draws made while fetching it;
- ``torchvision.transforms.RandomCrop.get_params`` and ``torchvision.transforms.functional
  .hflip`` are wrapped to record each sample's crop offsets (top, left in the padded
  image) and whether it was flipped (Corrupted CIFAR-10 only: Colored MNIST has no
  augmentation);
- ``train.get_model`` is wrapped to keep the two networks (biased first) and their initial
  state dicts;
- ``train.EMA`` is subclassed: ``update`` records the per-sample cross-entropy it receives
  and the EMA values at the batch after the update; the final tables are kept;
- ``torch.nn.CrossEntropyLoss`` is subclassed to know the criterion's outputs; a
  ``TorchFunctionMode`` records the operand multiplied with the step's third criterion
  output (the relative-difficulty weight) and the product (the debiased per-sample loss);
- a global optimiser step post-hook (``torch.optim.optimizer
  .register_optimizer_step_post_hook``) takes, after the debiased model's step, a sketch
  of both networks' parameters and of their BatchNorm running statistics.

Only the device (``device=cpu``), the loaders' workers (0), the paths (``data_dir``,
``log_dir``), the number of steps, the validation frequency and, for Corrupted CIFAR-10, the
batch size are changed, all through the experiment's own config.

Data: ``prepare_data.py`` (debiaskit's environment) makes WORK/<data>.npz first; this
script writes it in the layout the authors' AttributeDataset reads (WORK/data/<tag>/) and
stores the images in the fixture.

usage (the authors' environment: torch, torchvision, sacred, tensorboard):
  OMP_NUM_THREADS=1 python tools/parity/lff/record.py --ref CHECKOUT --data cmnist --work W
  OMP_NUM_THREADS=1 python tools/parity/lff/record.py --ref CHECKOUT --data cc10 --work W
then fill the manifest's ``measured`` with ``tools/parity/lff/measure.py`` (debiaskit's env).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "src"))
from debiaskit.parity import Sketch, write_fixture  # noqa: E402  (numpy + torch only)

#: per data set: fixture name, the authors' named configs, config overrides, what the
#: replay needs
SETUPS = {
    "cmnist": {
        "fixture": "lff-cmnist-mlp-{steps}steps", "steps": 30,
        "named_configs": ["colored_mnist", "skewed3", "severity4"],
        "tag": "ColoredMNIST-Skewed0.01-Severity4",
        "updates": {}, "network": "mlp", "store_images": False,
        "protocol": {"name": "colored_mnist", "params": {"conflict_ratio": 0.01, "severity": 4}},
        "files": ["train.py", "config.py", "util.py",
                                                    "module/loss.py", "module/mlp.py",
                                                    "module/util.py", "data/util.py",
                                                    "data/attr_dataset.py"],
    },
    "cc10": {
        "fixture": "lff-cc10-resnet20-{steps}steps", "steps": 26,
        "named_configs": ["corrupted_cifar10", "type0", "skewed1", "severity4"],
        "tag": "CorruptedCIFAR10-Type0-Skewed0.05-Severity4",
        "updates": {"main_batch_size": 16}, "network": "resnet20", "store_images": True,
        "files": ["train.py", "config.py", "util.py", "module/loss.py", "module/resnet.py",
                  "module/util.py", "data/util.py", "data/attr_dataset.py"],
    },
}


class Recorder:
    """What the hooks collect during one run."""

    def __init__(self) -> None:
        self.loaders, self.models, self.init, self.emas = [], [], [], []
        self.steps: list[dict] = []
        self.cur: dict | None = None
        self.draws: list[list[int]] = []
        self.ce_outputs: list[torch.Tensor] = []
        self.sketch_params = self.sketch_buffers = None

    # -- networks -------------------------------------------------------------------
    def params(self, model):
        return [p for _, p in model.named_parameters()]

    def buffers(self, model):  # BatchNorm running statistics, state-dict order
        return [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]

    def after_step(self, optimizer) -> None:
        if len(self.models) < 2 or self.cur is None:
            return
        first = optimizer.param_groups[0]["params"][0]
        if first is not next(self.models[1].parameters()):
            return  # the biased model's step: wait for the debiased one
        if self.sketch_params is None:
            self.sketch_params = Sketch.of(self.params(self.models[0]))
            bufs = self.buffers(self.models[0])
            self.sketch_buffers = Sketch.of(bufs) if bufs else None
        for role, model in zip("bd", self.models):
            self.cur[f"sketch_{role}"] = self.sketch_params(self.params(model))
            if self.sketch_buffers is not None:
                self.cur[f"bn_{role}"] = self.sketch_buffers(self.buffers(model))
        self.cur = None  # the step is complete


REC = Recorder()


def install_hooks(ref_train) -> None:
    """Monkeypatch the names the authors' train() looks up (see the module doc)."""
    import torch.utils.data as tud
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    class TrainIter:
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            return self

        def __next__(self):
            REC.draws = []
            batch = next(self.inner)
            REC.cur = {"index": batch[0].clone(), "draws": [list(d) for d in REC.draws]}
            REC.steps.append(REC.cur)
            REC.ce_outputs = []
            return batch

    class RecordingLoader(tud.DataLoader):
        def __init__(self, dataset, *args, **kwargs):
            kwargs["num_workers"] = 0  # the only change to how the loaders run
            super().__init__(dataset, *args, **kwargs)
            self.is_train = not REC.loaders
            REC.loaders.append(self)

        def __iter__(self):
            inner = super().__iter__()
            return TrainIter(inner) if self.is_train else inner

    ref_train.DataLoader = RecordingLoader

    original_get_model = ref_train.get_model

    def get_model(tag, num_classes):
        model = original_get_model(tag, num_classes)
        REC.models.append(model)
        REC.init.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    ref_train.get_model = get_model

    class RecordingEMA(ref_train.EMA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.role = "bd"[len(REC.emas)]
            REC.emas.append(self)

        def update(self, data, index):
            super().update(data, index)
            REC.cur[f"ce_{self.role}"] = data.detach().clone()
            REC.cur[f"ema_{self.role}"] = self.parameter[index].clone()

    ref_train.EMA = RecordingEMA

    class RecordingCE(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            out = super().forward(logits, target)
            if REC.cur is not None:
                REC.ce_outputs.append(out)
            return out

    torch.nn.CrossEntropyLoss = RecordingCE

    original_get_params = T.RandomCrop.get_params

    def get_params(img, output_size):
        i, j, h, w = original_get_params(img, output_size)
        REC.draws.append([int(i), int(j), 0])
        return i, j, h, w

    T.RandomCrop.get_params = staticmethod(get_params)
    original_hflip = TF.hflip

    def hflip(img):
        REC.draws[-1][2] = 1
        return original_hflip(img)

    TF.hflip = hflip

    import torch.optim.optimizer as optimizer_module
    optimizer_module.register_optimizer_step_post_hook(
        lambda opt, args, kwargs: REC.after_step(opt))


class WeightCapture(torch.overrides.TorchFunctionMode):
    """Records ``criterion(logit_d, label) * loss_weight``: the weight and the product."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (REC.cur is not None and len(REC.ce_outputs) == 3 and args
                and args[0] is REC.ce_outputs[2]
                and getattr(func, "__name__", "") in ("__mul__", "mul")):
            REC.cur["weight"] = args[1].detach().clone()
            REC.cur["loss_d_update"] = out.detach().clone()
        return out


def write_layout(data: dict, root: Path, n_valid: int) -> None:
    """The authors' AttributeDataset layout: <root>/{train,valid}/{images.npy (N,H,W,3)
    uint8, attrs.npy (N,2) [target, bias]}, attr_names.pkl. The validation split (only
    evaluated once, at step 0, never compared) is the first ``n_valid`` training images."""
    x = np.ascontiguousarray(data["x"].transpose(0, 2, 3, 1))
    attrs = np.stack([data["y"], data["b"]], 1).astype(np.uint8)
    for split, sl in (("train", slice(None)), ("valid", slice(0, n_valid))):
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "images.npy", x[sl])
        np.save(root / split / "attrs.npy", attrs[sl])
    with open(root / "attr_names.pkl", "wb") as f:
        pickle.dump(["target", "bias"], f)


def git_commit(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="checkout of alinlab/LfF")
    ap.add_argument("--data", required=True, choices=sorted(SETUPS))
    ap.add_argument("--work", required=True, help="scratch folder (data layout, logs)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="the experiment's seed")
    ap.add_argument("--out", default=str(REPO / "tests" / "parity" / "fixtures"))
    args = ap.parse_args(argv)
    setup = SETUPS[args.data]
    steps = args.steps or setup["steps"]
    torch.set_num_threads(1)
    ref, work = Path(args.ref).resolve(), Path(args.work).resolve()

    with np.load(work / f"{args.data}.npz") as f:
        data = {k: f[k] for k in f.files}
    sha = hashlib.sha256(np.ascontiguousarray(data["x"]).tobytes()).hexdigest()
    assert sha == str(data["sha256"]), "prepared data changed"
    write_layout(data, work / "data" / setup["tag"], n_valid=16)

    os.chdir(ref)  # AttributeDataset reads ./data/resource/colors.th
    sys.path.insert(0, str(ref))
    from sacred import SETTINGS
    SETTINGS.CAPTURE_MODE = "no"
    import train as ref_train  # the authors' train.py: defines the experiment, runs nothing

    install_hooks(ref_train)
    # the paths as a config file given first (the named configs read log_dir from it)
    paths = work / "paths.json"
    paths.write_text(json.dumps({"data_dir": str(work / "data"), "log_dir": str(work / "log")}))
    updates = {"device": "cpu", "main_num_steps": steps, "main_valid_freq": 10 ** 6,
               "seed": args.seed, **setup["updates"]}
    with WeightCapture():
        ref_train.ex.run(config_updates=updates,
                         named_configs=[str(paths), *setup["named_configs"]])
    assert len(REC.steps) == steps and all("sketch_d" in s and "weight" in s for s in REC.steps)

    # ---- the fixture --------------------------------------------------------------
    name = setup["fixture"].format(steps=steps)
    arrays = {"y": data["y"].astype(np.int64), "b": data["b"].astype(np.int64)}
    if setup["store_images"]:
        arrays["x"] = data["x"]
    else:  # the replay rebuilds them with debiaskit's protocol and checks the sha256
        arrays["pick"] = data["pick"].astype(np.int32)
    for role, sd in zip("bd", REC.init):
        arrays.update({f"init_{role}/{k}": v.numpy() for k, v in sd.items()})
    arrays["batch_sizes"] = np.array([len(s["index"]) for s in REC.steps], np.int32)
    arrays["batch_index"] = np.concatenate([s["index"].numpy() for s in REC.steps]).astype(np.int32)
    for key in ("ce_b", "ce_d", "ema_b", "ema_d", "weight", "loss_d_update"):
        arrays[key] = np.concatenate([s[key].numpy() for s in REC.steps]).astype(np.float32)
    for key in ("sketch_b", "sketch_d", "bn_b", "bn_d"):
        if key in REC.steps[0]:
            arrays[key] = np.stack([s[key] for s in REC.steps]).astype(np.float64)
    if REC.steps[0]["draws"]:
        arrays["draws"] = np.concatenate([np.array(s["draws"], np.int8) for s in REC.steps])
    for role, ema in zip("bd", REC.emas):
        arrays[f"final_ema_{role}"] = ema.parameter.numpy().astype(np.float32)
        arrays[f"final_updated_{role}"] = ema.updated.numpy().astype(np.uint8)
    for role, model in zip("bd", REC.models):
        tracked = [int(v) for k, v in model.state_dict().items()
                   if k.endswith("num_batches_tracked")]
        if tracked:
            arrays[f"final_bn_tracked_{role}"] = np.array(tracked, np.int64)

    command = ("OMP_NUM_THREADS=1 python tools/parity/lff/record.py --ref CHECKOUT "
               f"--data {args.data} --work WORK" + (f" --steps {steps}" if args.steps else "")
               + (f" --seed {args.seed}" if args.seed else ""))
    manifest = build_manifest(args.data, name, steps, ref, sha, command, updates, setup)
    path = write_fixture(Path(args.out) / name, arrays, manifest)
    print("wrote", path, "and", path.with_suffix(".npz"),
          f"({path.with_suffix('.npz').stat().st_size / 2**20:.2f} MiB)")
    return path


def build_manifest(which, name, steps, ref, sha, command, updates, setup) -> dict:
    from manifests import MANIFESTS  # the texts of each fixture's manifest (this folder)
    base = MANIFESTS[which]
    changed = dict(updates)
    return {
        "method": "lff",
        "reference": {"repo": "alinlab/LfF", "commit": git_commit(ref), "files": setup["files"]},
        "record": {
            "recorder": "tools/parity/lff/record.py",
            "command": "python tools/parity/lff/prepare_data.py " + which + " WORK  "
                       "(debiaskit's environment); then " + command
                       + "  (the authors' environment); then python tools/parity/lff/"
                       f"measure.py {name}",
            "torch": torch.__version__, "threads": 1, "python": platform.python_version(),
            "changes": (
                "The authors' train.py runs as its sacred experiment (ex.run with named configs "
                + " ".join(setup["named_configs"]) + " and config updates "
                + json.dumps(changed) + ", after a paths config file giving data_dir and "
                "log_dir in a scratch folder); nothing "
                "in the checkout is edited. Monkeypatched from outside: train.DataLoader (a "
                "subclass forcing num_workers=0 that records each training batch's indices "
                "and the augmentation draws of its fetch), train.get_model (keeps the two "
                "networks and their initial weights), train.EMA (a subclass recording the "
                "per-sample CE it is given and the EMA after the update), "
                "torch.nn.CrossEntropyLoss (a subclass noting its outputs), a "
                "TorchFunctionMode that records the factor multiplied into the third CE "
                "output of a step (the weight) and the product, torchvision's "
                "RandomCrop.get_params and functional.hflip (record crop offsets and flips), "
                "and a global optimizer step post-hook that sketches both networks after the "
                "debiased model's step. sacred's CAPTURE_MODE is 'no'. The validation split "
                "is the first 16 training images (evaluated once at step 0, not compared).")},
        "data": {**base["data"], "sha256": sha,
                 **({"protocol": setup["protocol"]} if "protocol" in setup else {})},
        "network": setup["network"], "steps": steps, "replay": "lff",
        **{k: base[k] for k in ("options", "negative_control", "compared", "tolerances",
                                 "divergences", "deviations", "notes")},
        "measured": {},
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
