"""Record the DisEnt parity fixture from the authors' own code, hooked from outside.

Runs their ``train.py`` (kakaoenterprise/Learning-Debiased-Disentangled) as ``__main__``
with its own argument parser, on the Colored MNIST subset written by ``make_data.py``.
Nothing of their code is copied or edited; this process only

- stubs the ``wandb`` module (imported at the top of their learner.py, never called
  without ``--wandb``) and makes ``Tensor.cuda`` return the tensor itself (their EMA table
  puts its labels on the GPU unconditionally) -- the device change;
- seeds torch / numpy / random (their train.py seeds nothing; every draw that matters is
  recorded anyway);
- wraps, by monkeypatching their module attributes and torch's global hooks:
  ``Learner.train_ours`` (to wrap the training loader, whose batches give the dataset
  indices, mapped to debiaskit's by file name, and the learning rate of each step),
  ``learner.get_model`` (the initial weights of their two MLP_DISENTANGLE networks),
  the learner's ``criterion`` (per-sample CE of C_i and C_b on [z_i, z_b], the CE of C_i
  on the swapped features, and -- through a tensor subclass whose ``*`` notes its other
  operand -- the per-sample weight W(x) that multiplies it), ``GeneralizedCELoss.forward``
  (the CE inside their GCE of C_b on the swapped features against the swapped labels),
  ``EMA.update`` / ``EMA.max_loss`` (the EMA values of the batch after the update and
  the class maxima they are divided by), ``numpy.random.permutation`` (their swap
  permutation) and a global optimiser post-step hook (parameter sketches of both networks
  after each step's two Adam steps).

usage (in the reference's environment, one thread):
  OMP_NUM_THREADS=1 python tools/parity/disent/record.py REF_CHECKOUT WORK OUT_STEM

REF_CHECKOUT is a checkout of their repository, WORK the folder make_data.py wrote, OUT_STEM
the fixture path without suffix (tests/parity/fixtures/disent-cmnist-mlp-24steps).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import runpy
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

REPO = Path(__file__).resolve().parents[3]
STEPS, CURR_STEP, LR_DECAY_STEP = 24, 8, 6
ARGS = ["--dataset", "cmnist", "--exp", "parity", "--lr", "0.01", "--percent", "5pct",
        "--curr_step", str(CURR_STEP), "--lambda_swap", "1", "--lambda_dis_align", "10",
        "--lambda_swap_align", "10", "--use_lr_decay", "--lr_decay_step", str(LR_DECAY_STEP),
        "--lr_gamma", "0.5", "--train_ours", "--num_steps", str(STEPS),
        "--device", "cpu", "--num_workers", "0",
        "--valid_freq", "100000", "--log_freq", "100000", "--save_freq", "100000"]


def load_parity():
    """debiaskit.parity by file (it needs only numpy and torch; debiaskit is not installed
    in the reference's environment)."""
    spec = importlib.util.spec_from_file_location("dk_parity", REPO / "src/debiaskit/parity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dk_parity"] = mod
    spec.loader.exec_module(mod)
    return mod


def main(ref: str, work: str, out_stem: str) -> None:
    torch.set_num_threads(1)
    parity = load_parity()
    ref, work = Path(ref).resolve(), Path(work).resolve()
    subset = np.load(work / "subset.npz")
    x_u8, y_all, b_all = subset["x"], subset["y"], subset["b"]
    info = json.loads((work / "subset.json").read_text())

    # --- environment: device and an uninstalled logger (see module doc) ---------------
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(ref))
    os.chdir(work)
    import learner as their_learner
    import module.loss as their_loss
    import util as their_util

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)

    st = {"learner": None, "in_step": False, "step": -1, "cur": None, "steps": [],
          "models": [], "epoch": 0}

    # --- initial weights: their get_model, as learner.py calls it -----------------
    orig_get_model = their_learner.get_model

    def get_model(tag, num_classes):
        model = orig_get_model(tag, num_classes)
        if tag == "mlp_DISENTANGLE":
            init = {k: v.detach().clone() for k, v in model.state_dict().items()}
            st["models"].append((model, init))
        return model
    their_learner.get_model = get_model

    # --- the training loader: batch indices, lr at each step's start ---------------
    class Recording:
        def __init__(self, loader):
            self.loader = loader

        def __iter__(self):
            st["epoch"] += 1
            for index, data, attr, paths in self.loader:
                ours = np.array([int(os.path.basename(p).split("_")[0]) for p in paths])
                # their decoded PNGs are debiaskit's uint8 images (ToTensor: /255)
                assert np.array_equal(np.rint(data.numpy() * 255).astype(np.uint8), x_u8[ours])
                assert np.array_equal(attr[:, 0].numpy(), y_all[ours])
                assert np.array_equal(attr[:, 1].numpy(), b_all[ours])
                lrn = st["learner"]
                st["step"] += 1
                st["cur"] = {"index": ours, "y": attr[:, 0].clone(), "epoch": st["epoch"] - 1,
                             "lr_i": lrn.optimizer_l.param_groups[0]["lr"],
                             "lr_b": lrn.optimizer_b.param_groups[0]["lr"],
                             "criterion": [], "weight": [], "gce_ce": [], "perm": None,
                             "ema": {}, "cmax": {"i": [], "b": []}}
                st["in_step"] = True
                yield index, data, attr, paths

    # --- their criterion: per-sample CE, and the weight that multiplies it ------------
    class WeightSpy(torch.Tensor):
        def __mul__(self, other):
            if st["in_step"]:
                st["cur"]["weight"].append(other.detach().clone())
            return torch.Tensor.__mul__(self.as_subclass(torch.Tensor), other)

    class RecordingCriterion(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, logits, target):
            out = self.inner(logits, target)
            if not st["in_step"]:
                return out
            st["cur"]["criterion"].append(out.detach().clone())
            # calls 3 and 4 of a step are multiplied by the weight W(x)
            return out.as_subclass(WeightSpy) if len(st["cur"]["criterion"]) >= 3 else out

    orig_gce = their_loss.GeneralizedCELoss.forward

    def gce_forward(self, logits, targets):
        if st["in_step"]:
            st["cur"]["gce_ce"].append(
                F.cross_entropy(logits.detach(), targets, reduction="none").clone())
        return orig_gce(self, logits, targets)
    their_loss.GeneralizedCELoss.forward = gce_forward

    # --- EMA tables ---------------------------------------------------------------------
    def which(ema):
        lrn = st["learner"]
        return ("i" if ema is lrn.sample_loss_ema_d else
                "b" if ema is lrn.sample_loss_ema_b else None)

    orig_update, orig_max = their_util.EMA.update, their_util.EMA.max_loss

    def ema_update(self, data, index, *a, **k):
        out = orig_update(self, data, index, *a, **k)
        if st["in_step"] and which(self):
            st["cur"]["ema"][which(self)] = self.parameter[index.to(self.parameter.device)].clone()
        return out

    def ema_max(self, label):
        out = orig_max(self, label)
        if st["in_step"] and which(self):
            st["cur"]["cmax"][which(self)].append((int(label), float(out)))
        return out
    their_util.EMA.update, their_util.EMA.max_loss = ema_update, ema_max

    # --- the swap permutation ---------------------------------------------------------
    orig_perm = np.random.permutation

    def permutation(*a, **k):
        out = orig_perm(*a, **k)
        if st["in_step"]:
            st["cur"]["perm"] = np.array(out).copy()
        return out
    np.random.permutation = permutation

    # --- end of a step: after optimizer_b's step (their second one) -------------------
    sketches = {}

    def post_step(opt, args, kwargs):
        lrn = st["learner"]
        if not st["in_step"] or opt is not lrn.optimizer_b:
            return
        st["in_step"] = False
        cur = st["cur"]
        for key, model in (("i", lrn.model_l), ("b", lrn.model_b)):
            tensors = list(model.state_dict().values())
            sketches.setdefault(key, parity.Sketch.of(tensors))
            cur[f"sketch_{key}"] = sketches[key](tensors)
        st["steps"].append(cur)
    register_optimizer_step_post_hook(post_step)

    orig_train_ours = their_learner.Learner.train_ours

    def train_ours(self, args):
        st["learner"] = self
        self.train_loader = Recording(self.train_loader)
        self.criterion = RecordingCriterion(self.criterion)
        return orig_train_ours(self, args)
    their_learner.Learner.train_ours = train_ours

    argv = ["train.py", *ARGS, "--data_dir", str(work / "data"), "--log_dir", str(work / "log")]
    sys.argv = argv
    runpy.run_path(str(ref / "train.py"), run_name="__main__")

    write(parity, st, ref, work, out_stem, info, x_u8, y_all, b_all, argv)


def write(parity, st, ref, work, out_stem, info, x_u8, y_all, b_all, argv) -> None:
    steps = st["steps"]
    assert len(steps) == STEPS, len(steps)
    (init_l, init_b) = [sd for _, sd in st["models"]]
    arrays = {"x": x_u8, "y": y_all.astype(np.int64), "b": b_all.astype(np.int64)}
    arrays.update(parity.state_arrays("init_i/", init_l))
    arrays.update(parity.state_arrays("init_b/", init_b))
    cat = lambda key: np.concatenate([key(s) for s in steps])
    arrays["batch_sizes"] = np.array([len(s["index"]) for s in steps], np.int32)
    arrays["batch_index"] = cat(lambda s: s["index"]).astype(np.int32)
    arrays["epoch"] = np.array([s["epoch"] for s in steps], np.int32)
    arrays["lr_i"] = np.array([s["lr_i"] for s in steps])
    arrays["lr_b"] = np.array([s["lr_b"] for s in steps])
    for s in steps:
        crit = s["criterion"]
        swapped = s["perm"] is not None
        assert len(crit) == (4 if swapped else 3) and len(s["gce_ce"]) == (2 if swapped else 1)
        assert len(s["weight"]) == (2 if swapped else 1)
        assert torch.equal(crit[0], crit[2]) and torch.equal(s["gce_ce"][0], crit[1])
        if swapped:
            assert torch.equal(s["weight"][0], s["weight"][1])
        for key in ("i", "b"):
            classes = [c for c, _ in s["cmax"][key]]
            assert classes == list(range(10)), classes
    arrays["ce_i"] = cat(lambda s: s["criterion"][0].numpy()).astype(np.float32)
    arrays["ce_b"] = cat(lambda s: s["criterion"][1].numpy()).astype(np.float32)
    arrays["weight"] = cat(lambda s: s["weight"][0].numpy()).astype(np.float32)
    arrays["ema_i"] = cat(lambda s: s["ema"]["i"].numpy()).astype(np.float32)
    arrays["ema_b"] = cat(lambda s: s["ema"]["b"].numpy()).astype(np.float32)
    arrays["cmax_i"] = np.array([[v for _, v in s["cmax"]["i"]] for s in steps], np.float32)
    arrays["cmax_b"] = np.array([[v for _, v in s["cmax"]["b"]] for s in steps], np.float32)
    swap_steps = [s for s in steps if s["perm"] is not None]
    arrays["swapped"] = np.array([s["perm"] is not None for s in steps])
    arrays["swap_sizes"] = np.array([len(s["perm"]) for s in swap_steps], np.int32)
    arrays["perm"] = np.concatenate([s["perm"] for s in swap_steps]).astype(np.int32)
    swap_cat = lambda key: np.concatenate([key(s) for s in swap_steps]).astype(np.float32)
    arrays["swap_ce_i"] = swap_cat(lambda s: s["criterion"][3].numpy())
    arrays["swap_ce_b"] = swap_cat(lambda s: s["gce_ce"][1].numpy())
    arrays["sketch_i"] = np.stack([s["sketch_i"] for s in steps])
    arrays["sketch_b"] = np.stack([s["sketch_b"] for s in steps])

    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    out = Path(out_stem)
    if not out.is_absolute():
        out = REPO / out
    manifest_path = out.with_suffix(".json")
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest = {
        "method": "disent",
        "reference": {"repo": "kakaoenterprise/Learning-Debiased-Disentangled", "commit": commit,
                      "files": ["train.py", "learner.py", "module/mlp.py", "module/util.py",
                                "module/loss.py", "util.py", "data/util.py"]},
        "record": {"recorder": "tools/parity/disent/record.py",
                   "command": ("OMP_NUM_THREADS=1 python tools/parity/disent/record.py "
                               "REF_CHECKOUT WORK tests/parity/fixtures/" + out.name
                               + "   # runs: python " + " ".join(argv)
                               .replace(str(work), "WORK")),
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "changes": CHANGES},
        "data": {"name": "colored_mnist", "selection": info["selection"]
                 + f"; {info['n']} images ({info['conflicting']} conflicting), written as PNG "
                 "in their cmnist folder layout by tools/parity/disent/make_data.py; stored in "
                 "the npz as x (uint8 N x 3 x 28 x 28), y, b",
                 "sha256": info["sha256"]},
        "network": "mlp",
        "steps": len(steps),
        "replay": "disent",
    }
    for key in ("options", "negative_control", "compared", "tolerances", "measured",
                "divergences", "deviations", "notes"):
        manifest[key] = old.get(key, {} if key in ("options", "negative_control", "measured")
                                else [] if key in ("compared", "divergences", "deviations")
                                else parity.TOLERANCES if key == "tolerances" else "")
    parity.write_fixture(out, arrays, manifest)
    print("wrote", out, {k: v.shape for k, v in arrays.items() if not k.startswith("init")})


CHANGES = (
    "Their train.py runs as __main__ with its own argument parser (command above; "
    "--curr_step 8 and --lr_decay_step 6 instead of their cmnist script's 10000 so that "
    "feature swapping and two learning-rate decays happen inside 24 steps; other "
    "hyper-parameters as scripts/run_cmnist_ours.sh, without its --tensorboard --wandb "
    "logging; --percent names our 5 % subset). "
    "Device: --device cpu and Tensor.cuda made the identity (their EMA calls .cuda() "
    "unconditionally); --num_workers 0; data and log paths; large valid/log/save "
    "frequencies (their step-0 evaluation and checkpoint still run); the uninstalled "
    "wandb module stubbed (not called without --wandb); torch, numpy and random seeded "
    "(their code seeds nothing). Nothing edited; recorded through monkeypatched "
    "attributes: Learner.train_ours (wraps the training loader and the criterion, then "
    "calls the original), learner.get_model, GeneralizedCELoss.forward, EMA.update, "
    "EMA.max_loss, numpy.random.permutation, a global optimizer step post-hook, and a "
    "tensor subclass on the criterion's output whose * records the weight.")


if __name__ == "__main__":
    main(*sys.argv[1:4])
