"""Record CF/F training steps of the authors' code (zzzace2000/robust_cls_model) for parity.

Runs in a separate environment with the authors' dependencies (torch, scikit-learn, captum,
advertorch; see README.md) and imports their modules from the checkout given by --ref.
Nothing of their code is copied here: their LightningModule (IN9LightningModel, whose
training_step, counterfactual loss, inpainters, saliency function and optimiser are
exercised as published) is driven step by step the way PyTorch Lightning 1.2.8 drives it
in their train_pl.py (training_step -> backward -> gradient-norm clipping at their
gradient_clip_val=1.0 -> optimiser step -> zero_grad; the epoch-interval LR scheduler
stepped after each epoch), because their Trainer cannot run here. What is hooked:

- ``pytorch_lightning`` is a stub (LightningModule = torch.nn.Module, ModelCheckpoint a
  dummy): Lightning 1.2.8 does not import under this torch; their module needs only the
  base class; advertorch (imported, unused: FGSM) gets torch's removed zero_gradients;
- their network: ``init_setup`` of a subclass builds debiaskit's ResNet-20 for 16 x 16
  inputs (the same class the replay trains, with identity input normalisation since their
  images already are in [-1, 1]) instead of BiT ResNet-50 (too large for a CPU record);
  optionally one head bias is raised to saturate p for one class (--saturate);
- their ``training_step`` looks its saliency function up by name in base.py's globals,
  where the published code never imports it (a NameError with --reg bbox_o); the recorder
  puts saliency_utils' function there, wrapped to keep the input gradient it returns;
- the random draws of their inpainters (Tensor.uniform_, Tensor.normal_, torch.randperm
  from the global generator) are recorded by wrapping those functions during each step;
- forward hooks on their inpainters (the module's ``inpaint`` / ``f_inpaint``) keep the
  counterfactual and factual images they return (per image: mean and RMS);
- ``counterfact_cri`` is wrapped to keep the logits and labels it receives; per-sample
  counterfactual losses come from their own ``counterfactual_ce_loss`` with
  reduction='none';
- data: bg_shift (debiaskit's synthetic set) downsampled to 16 x 16, given to their
  training_step as the dict batch their IN-9 loader makes ({'imgs', 'masks'}, labels),
  images normalised to [-1, 1] as their transforms do; batches by a seeded shuffle (their
  DataLoader's shuffle=True), no augmentation transforms.

usage: python record.py --ref CHECKOUT --variant sal|sat --out tests/parity/fixtures/NAME
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "src"))

from debiaskit.data.protocols import bg_shift  # noqa: E402
from debiaskit.models.resnet_cifar import ResNetCifar  # noqa: E402
from debiaskit.parity import Sketch, state_arrays  # noqa: E402

SIDE = 16
NUM_CLASSES = 10

#: the two records: their command-line options (train_pl.py / in9.py arguments)
VARIANTS = {
    # CF(Random) + F(Shuffle) + Sal (bbox_o, grad_y): the draws, the batch-level shuffle,
    # their saliency penalty on [-1, 1] inputs and its separate forward pass
    "sal": {"inpaint": "random", "f_inpaint": "shuffle", "reg": "bbox_o", "reg_coeff": 10.0,
            "base_lr": 0.002, "saturate": 0.0},
    # CF(Shuffle) + F(Random), one head bias raised by 56 so p_0 rounds to 1 (margins about
    # 50-60: past the cap, where its gradient is negligible): their logp's 1e-20 guard caps
    # every class-0 counterfactual's loss
    "sat": {"inpaint": "shuffle", "f_inpaint": "random", "reg": "none", "reg_coeff": 0.0,
            "base_lr": 0.002, "saturate": 56.0},
}


# --- data ------------------------------------------------------------------------------------

def make_data(data_dir: str, n: int):
    """bg_shift (train_per_class 3, conflict 0.05, seed 0): 30 images, of which positions
    i % 3 != 2 and then 2 and 5 (n = 22: every class, two or three each); 2 x 2 mean-pooled
    to 16 x 16 (uint8, rounded half up), masks: at least 2 of the 4 pixels; the mask of the
    sixth image cleared (an image without a foreground: no CF / F copy, outside Sal)."""
    bundle = bg_shift.build(conflict_ratio=0.05, train_per_class=3, test_per_class=1, seed=0,
                            data_dir=data_dir)
    train = bundle.train
    order = [i for i in range(len(train.y)) if i % 3 != 2] + [2, 5]
    order = order[:n]
    x = train.x[order].numpy().astype(np.int32)
    x = (x.reshape(n, 3, SIDE, 2, SIDE, 2).sum((3, 5)) + 2) // 4
    m = train.mask[order].numpy().reshape(n, SIDE, 2, SIDE, 2).sum((2, 4)) >= 2
    m[5] = False
    return (x.astype(np.uint8), m, train.y[order].numpy().astype(np.int64),
            np.asarray(order, np.int64))


# --- stubs and hooks -------------------------------------------------------------------------

def stub_lightning():
    pl = types.ModuleType("pytorch_lightning")
    core = types.ModuleType("pytorch_lightning.core")
    callbacks = types.ModuleType("pytorch_lightning.callbacks")
    core.LightningModule = torch.nn.Module
    callbacks.ModelCheckpoint = type("ModelCheckpoint", (), {"__init__": lambda s, **k: None})
    pl.core, pl.callbacks, pl.LightningModule = core, callbacks, torch.nn.Module
    sys.modules.update({"pytorch_lightning": pl, "pytorch_lightning.core": core,
                        "pytorch_lightning.callbacks": callbacks})
    # advertorch 0.2.3 (imported by their FGSM inpainter, unused here) imports a helper
    # torch removed; give it one so the import succeeds
    gradcheck = importlib.import_module("torch.autograd.gradcheck")  # the module, not
    if not hasattr(gradcheck, "zero_gradients"):
        def zero_gradients(x):
            if isinstance(x, torch.Tensor) and x.grad is not None:
                x.grad.detach_().zero_()
        gradcheck.zero_gradients = zero_gradients


class DrawRecorder:
    """Within ``with``: every Tensor.uniform_, Tensor.normal_ and torch.randperm result of
    the global generator, in call order, as (kind, tensor)."""

    def __init__(self):
        self.draws = []

    def __enter__(self):
        self.saved = (torch.Tensor.uniform_, torch.Tensor.normal_, torch.randperm)
        uniform, normal, randperm = self.saved
        rec = self.draws

        def uniform_(t, *a, **k):
            out = uniform(t, *a, **k)
            rec.append(("uniform", out.detach().clone()))
            return out

        def normal_(t, *a, **k):
            out = normal(t, *a, **k)
            rec.append(("normal", out.detach().clone()))
            return out

        def randperm_(*a, **k):
            out = randperm(*a, **k)
            rec.append(("randperm", out.clone()))
            return out

        torch.Tensor.uniform_, torch.Tensor.normal_, torch.randperm = uniform_, normal_, randperm_
        return self

    def __exit__(self, *exc):
        torch.Tensor.uniform_, torch.Tensor.normal_, torch.randperm = self.saved


def git_commit(path: str) -> str:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


# --- the record --------------------------------------------------------------------------------

def record(ref: str, variant: str, steps: int, batch: int, n: int, seed: int, data_dir: str):
    cfg = VARIANTS[variant]
    torch.manual_seed(seed)
    x_u8, masks, y, order = make_data(data_dir, n)

    stub_lightning()
    sys.path.insert(0, ref)
    import arch.lightning.base as base
    import arch.lightning.in9 as in9
    import arch.saliency_utils as saliency_utils

    grads = []

    def grad_y(*a, **k):  # their function, its input gradient kept
        the_grad, logits = saliency_utils.get_grad_y(*a, **k)
        grads.append(the_grad.detach().clone())
        return the_grad, logits

    base.get_grad_y = grad_y

    def make_net():
        torch.manual_seed(seed)
        net = ResNetCifar((3, SIDE, SIDE), NUM_CLASSES, blocks=3)
        if cfg["saturate"]:
            with torch.no_grad():
                net.head.bias[0] += cfg["saturate"]
        return net

    class Driven(in9.IN9LightningModel):
        def init_setup(self):
            self.model = make_net()

    logdir = tempfile.mkdtemp(prefix="cff-record-")
    hparams = {"name": f"parity_{variant}", "logdir": logdir, "result_dir": logdir,
               "inpaint": cfg["inpaint"], "f_inpaint": cfg["f_inpaint"], "reg": cfg["reg"],
               "reg_grad": "grad_y", "reg_coeff": cfg["reg_coeff"], "reg_anneal": 0.0,
               "cf": "logp", "cf_coeff": 1.0, "mixup": 0.0, "eps_label_smoothing": 0.0,
               "grid": 0, "mask": "seg", "bbox_noise": 0.0, "data_ratio": 1.0,
               "arch": "ResNet-20 (debiaskit)", "batch": batch, "val_batch": batch,
               "batch_split": 1, "base_lr": cfg["base_lr"], "workers": 0, "test_run": 0,
               "fp16": 0, "finetune": 0, "alpha": -1, "eps": 0.6, "seed": seed}
    module = Driven(hparams)
    module.train()
    net = module.model
    [optim], [sched] = module.configure_optimizers()
    param_names = [k for k, _ in net.named_parameters()]
    buffer_names = [k for k, v in net.named_buffers()
                    if k.endswith(("running_mean", "running_var"))]
    psketch = Sketch.of([p for _, p in net.named_parameters()])
    bsketch = Sketch.of([dict(net.named_buffers())[k] for k in buffer_names])
    # copies: state_arrays gives numpy views of the live tensors, which training changes
    init = {k: v.copy() for k, v in state_arrays("init/", net.state_dict()).items()}

    captured = {}
    cri = module.counterfact_cri

    def counterfact_cri(logit, yy):
        captured["logit"], captured["y"] = logit.detach().clone(), yy.clone()
        return cri(logit, yy)

    module.counterfact_cri = counterfact_cri

    for name, inpainter in (("cf_images", module.inpaint), ("f_images", module.f_inpaint)):
        inpainter.register_forward_hook(  # their inpainter (a Module): its images kept
            lambda m, i, o, name=name: captured.__setitem__(name, o.detach().clone()))

    x_signed = torch.from_numpy(x_u8).float().div(255.0)
    x_signed = x_signed.sub(0.5).div(0.5)  # their Normalize((0.5,) * 3, (0.5,) * 3)
    mask_t = torch.from_numpy(masks)
    y_t = torch.from_numpy(y)
    loader_gen = torch.Generator().manual_seed(seed)
    rows, step, epoch = [], 0, 0
    while step < steps:
        perm = torch.randperm(n, generator=loader_gen)
        for b, lo in enumerate(range(0, n, batch)):
            if step >= steps:
                break
            idx = perm[lo:lo + batch]
            s = {"imgs": x_signed[idx].clone(), "masks": mask_t[idx].float()[:, None]}
            grads.clear()
            captured.pop("cf_images", None), captured.pop("f_images", None)
            with DrawRecorder() as draws:
                out = module.training_step((s, y_t[idx]), b)
            out["loss"].backward()
            # Lightning 1.2.8's 32-bit gradient clipping (gradient_clip_val=1.0, norm 2)
            params = [p for p in net.parameters() if p.grad is not None]
            norms = torch.stack([torch.norm(p.grad.detach(), 2) for p in params])
            total = torch.norm(norms, 2)
            coef = torch.clamp(torch.tensor(1.0) / (total + 1e-6), max=1.0)
            for p in params:
                p.grad.detach().mul_(coef)
            optim.step()
            optim.zero_grad()

            logit, yy = captured["logit"], captured["y"]
            nb = len(idx)
            keep = mask_t[idx].flatten(1).any(1)
            k = int(keep.sum())
            row = {"index": idx.numpy(), "n_kept": k, "grad_norm": float(total),
                   "loss": out["loss"].item(), "train_loss": float(out["train_loss"]),
                   "cf_loss": float(out["cf_loss"]), "reg_loss": float(out["reg_loss"]),
                   "ce": F.cross_entropy(logit[:nb], yy[:nb], reduction="none").numpy(),
                   "draws": [(kind, t.numpy()) for kind, t in draws.draws]}
            neg = yy < 0
            row["cf"] = module.counterfactual_ce_loss(logit[neg], yy[neg], reduction="none") \
                .detach().numpy() if neg.any() else np.zeros(0, np.float32)
            pos_extra = torch.arange(len(yy)) >= nb + int(neg.sum())
            row["fact"] = F.cross_entropy(logit[pos_extra], yy[pos_extra],
                                          reduction="none").numpy()
            if grads:
                g = grads[0][keep]
                outside = 1.0 - mask_t[idx][keep].float()[:, None]
                # per image: the squared gradient on the background, averaged over
                # all its input values (its share of their bbox_o mean, times n_kept)
                row["sal"] = ((g * outside) ** 2).flatten(1).mean(1).double().numpy()
            else:
                row["sal"] = np.zeros(0)
            for name in ("cf_images", "f_images"):
                im = captured.get(name, torch.zeros(0, 3, SIDE, SIDE)).double().flatten(1)
                row[name] = np.stack([im.mean(1).numpy(), im.pow(2).mean(1).sqrt().numpy()], 1)
            row["p_max_cf"] = float(torch.softmax(logit[neg].double(), 1).max()) \
                if neg.any() else 0.0
            row["params"] = psketch([p for _, p in net.named_parameters()])
            buffers = dict(net.named_buffers())
            row["buffers"] = bsketch([buffers[k] for k in buffer_names])
            row["nbt"] = int(sum(v for kk, v in buffers.items()
                                 if kk.endswith("num_batches_tracked")))
            rows.append(row)
            step += 1
        sched["scheduler"].step()  # their epoch-interval scheduler
        epoch += 1
    return {"rows": rows, "init": init, "x": x_u8, "masks": masks, "y": y, "order": order,
            "param_names": param_names, "buffer_names": buffer_names, "cfg": cfg,
            "hparams": hparams, "epochs": epoch}


def arrays_of(rec, variant):
    rows = rec["rows"]

    def cat(key, dtype):
        return np.concatenate([np.asarray(r[key]) for r in rows]).astype(dtype)

    out = {"x": rec["x"], "masks": rec["masks"], "y": rec["y"], **rec["init"],
           "batch_sizes": np.array([len(r["index"]) for r in rows], np.int64),
           "kept_sizes": np.array([r["n_kept"] for r in rows], np.int64),
           "index": cat("index", np.int64),
           "ce": cat("ce", np.float32), "cf": cat("cf", np.float32),
           "fact": cat("fact", np.float32), "sal": cat("sal", np.float64),
           "cf_images": cat("cf_images", np.float64), "f_images": cat("f_images", np.float64),
           "loss": np.array([r["loss"] for r in rows], np.float64),
           "loss_sal": np.array([r["reg_loss"] for r in rows], np.float64)
           / max(rec["cfg"]["reg_coeff"], 1e-300),
           "params": np.stack([r["params"] for r in rows]),
           "buffers": np.stack([r["buffers"] for r in rows]),
           "nbt": np.array([r["nbt"] for r in rows], np.int64),
           "grad_norm": np.array([r["grad_norm"] for r in rows], np.float64)}
    # the inpainters' draws, per step in call order: CF first, then F
    kinds = [[k for k, _ in r["draws"]] for r in rows]
    for step, r in enumerate(rows):
        for j, (kind, t) in enumerate(r["draws"]):
            key = f"draw/{step:02d}/{j}_{kind}"
            out[key] = t.astype(np.int16) if kind == "randperm" else t.astype(np.float32)
    return out, kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="checkout of zzzace2000/robust_cls_model")
    ap.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--out", required=True, help="fixture path without suffix")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--n", type=int, default=22)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=os.environ.get("DEBIASKIT_DATA", "/work/shared/data"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = record(args.ref, args.variant, args.steps, args.batch, args.n, args.seed, args.data)
    arrays, kinds = arrays_of(rec, args.variant)
    digest = hashlib.sha256(rec["x"].tobytes() + np.packbits(rec["masks"]).tobytes())
    meta = {"commit": git_commit(args.ref), "torch": torch.__version__,
            "command": "OMP_NUM_THREADS=1 python tools/parity/cff/record.py " + " ".join(
                a if not a.startswith("/") else os.path.relpath(a, REPO)
                if a.startswith(str(REPO)) else a for a in sys.argv[1:]),
            "sha256": digest.hexdigest(), "order": rec["order"].tolist(),
            "param_names": rec["param_names"], "buffer_names": rec["buffer_names"],
            "hparams": {k: v for k, v in rec["hparams"].items() if k not in ("logdir",
                                                                             "result_dir")},
            "draw_kinds": kinds, "epochs": rec["epochs"], "cfg": rec["cfg"],
            "p_max_cf": [r["p_max_cf"] for r in rec["rows"]],
            "their_losses": [{k: r[k] for k in ("loss", "train_loss", "cf_loss", "reg_loss")}
                             for r in rec["rows"]]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".record.npz"), **arrays)
    out.with_suffix(".record.json").write_text(json.dumps(meta, indent=1))
    print("recorded", len(rec["rows"]), "steps;", {k: v.shape for k, v in arrays.items()
                                                   if not k.startswith(("init/", "draw/"))})
    print("their losses:", [round(r["loss"], 4) for r in rec["rows"]])
    print("grad norms:", [round(r["grad_norm"], 3) for r in rec["rows"]])


if __name__ == "__main__":
    main()
