"""Record SiH's own training code (mvandenhi/Signal-is-Harder) step by step, from outside.

Runs the authors' ``train.main()`` unchanged, imported from a checkout given on the command
line, on the Colored MNIST subset that ``make_data.py`` wrote, and records through hooks,
wrappers and monkeypatching only (see README.md beside this file):

- the global RNG state before the models are built (their init is torch's default
  ``nn.Linear`` init drawn from it, regenerated bit-exactly by the replay) and the SHA-256
  of the resulting initial weights;
- per step: the dataset indices of the batch; every random draw inside the step (the
  reparameterisation noise of both encoders, drawn by ``torch.distributions.Normal.rsample``
  through ``torch.distributions.normal._standard_normal``): the RNG state before the
  step's first draw and a fingerprint of each draw (the replay regenerates them); the
  per-sample CE of both classifiers, the focal weights, the weighted CE, the biased term,
  the reconstruction and KL terms; the total loss; the learning rate; sketches of the
  parameters of every network after the step;
- per epoch: the held-out samples their early-stopping pass included, the held-out
  objective their LR scheduler and early stopping saw, the early-stopping counter.

usage (in an environment with their requirements; torch + numpy + torchvision + pyyaml):
    OMP_NUM_THREADS=1 python tools/parity/sih/record.py --ref CHECKOUT --data DATA_DIR \
        --run-dir SCRATCH_DIR --epochs 3 --out tests/parity/fixtures/NAME
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "src"))
from debiaskit.parity import Sketch, write_fixture  # noqa: E402  (numpy + torch only)

# Networks compared, as prefixes of their two models' state dicts (model_b's decoder is
# frozen and unused by their code, so it is not compared).
NETWORKS = {"encoder_s": ("s", "encoder."), "decoder": ("s", "decoder."),
            "classifier_s": ("s", "classifier."), "encoder_b": ("b", "encoder."),
            "classifier_b": ("b", "classifier.")}
PIXELS = 3 * 28 * 28


class Stop(Exception):
    """Raised after the last recorded epoch to leave their main()."""


def sha256_tensors(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def state_u8(state: torch.Tensor) -> np.ndarray:
    return state.numpy().astype(np.uint8).copy()


def regenerate_noise(state: torch.Tensor, shapes) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The draws a CPU generator in ``state`` makes for ``shapes`` (standard normal,
    one after the other) and its state after them."""
    gen = torch.Generator()
    gen.set_state(state)
    draws = [torch.empty(shape).normal_(generator=gen) for shape in shapes]
    return draws, gen.get_state()


def network_tensors(models: dict, name: str):
    which, prefix = NETWORKS[name]
    return [v for k, v in models[which].state_dict().items() if k.startswith(prefix)]


class Recorder:
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.models = {}        # "s", "b" -> their MLP_VAE
        self.optimizers = []    # their optimizer_s, optimizer_b
        self.init_state = None
        self.init = {}
        self.phase = None
        self.step = None        # the record of the step in progress
        self.steps = []
        self.epoch_val = []     # per epoch: indices of held-out samples included
        self.val_batches = []
        self.val_objectives = []
        self.es_counters = []
        self.val_set = None
        self.sketches = None

    # --- their models and optimisers --------------------------------------------------
    def wrap_get_model(self, get_model):
        def wrapped(config):
            if not self.models:
                self.init_state = torch.get_rng_state()
            model = get_model(config)
            which = "s" if "s" not in self.models else "b"
            self.models[which] = model
            self.init[which] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return model
        return wrapped

    def wrap_get_optimizer(self, get_optimizer):
        def wrapped(model, config):
            opt = get_optimizer(model, config)
            self.optimizers.append(opt)
            return opt
        return wrapped

    # --- data -------------------------------------------------------------------------
    def loader_class(self, base):
        rec = self

        class RecordingLoader(base):
            """Their DataLoader with workers 0 and no pinned memory; notes each batch."""

            def __init__(self, dataset, **kw):
                kw.update(num_workers=0, pin_memory=False)
                super().__init__(dataset, **kw)

            def __iter__(self):
                ds = self.dataset
                if hasattr(ds, "train_set"):
                    phase = "train" if ds.dataset is ds.train_set else "val"
                    if phase == "val" and rec.val_set is None:
                        rec.val_set = np.asarray(ds.valid_set.indices)
                else:
                    phase = "test"
                for batch in super().__iter__():
                    rec.phase = phase
                    if phase == "train":
                        rec.begin_step(batch)
                    elif phase == "val":
                        rec.val_batches.append(batch[1].numpy().copy())
                    yield batch
        return RecordingLoader

    def begin_step(self, batch) -> None:
        _subset_idx, full_idx, data, attr = batch
        self.step = {"index": full_idx.numpy().copy(), "y": attr[:, 0].numpy().copy(),
                     "x": data.clone(), "draws": [], "forward": {}, "eval_batch": []}

    # --- inside a step ----------------------------------------------------------------
    def wrap_standard_normal(self, original):
        def wrapped(shape, dtype, device):
            state = torch.get_rng_state()
            out = original(shape, dtype=dtype, device=device)
            if self.phase == "train" and self.step is not None:
                self.step["draws"].append((state, out.detach().clone()))
            else:
                raise RuntimeError(f"unexpected reparameterisation draw in phase {self.phase}")
            return out
        return wrapped

    def forward_hook(self, module, inputs, output):
        if self.phase != "train" or self.step is None:
            return
        if module is self.models.get("s"):
            self.step["forward"]["s"] = [t.detach().clone() for t in output]
        elif module is self.models.get("b"):
            self.step["forward"]["b"] = [t.detach().clone() for t in output]
        elif isinstance(module, torch.nn.CrossEntropyLoss):
            self.step["ce_s"] = output.detach().clone()

    def wrap_reconstruct(self, original):
        def wrapped(model, z):
            out = original(model, z)
            if self.phase == "train" and self.step is not None:
                self.step["x_reconst"] = out.detach().clone()
            return out
        return wrapped

    def wrap_evaluate_batch(self, original):
        def wrapped(logit, attr, loss):
            if self.phase == "train" and self.step is not None:
                self.step["eval_batch"].append(loss.detach().clone())
            return original(logit, attr, loss)
        return wrapped

    def wrap_backward(self, original):
        def wrapped(tensor, *a, **kw):
            if self.phase == "train" and self.step is not None and tensor.dim() == 0:
                self.step["loss"] = float(tensor.item())
            return original(tensor, *a, **kw)
        return wrapped

    def step_post_hook(self, optimizer, args, kwargs):
        if self.phase != "train" or self.step is None or len(self.optimizers) < 2:
            return
        if optimizer is not self.optimizers[1]:   # their optimizer_b steps last
            return
        self.finish_step()

    def finish_step(self) -> None:
        st = self.step
        end_state = torch.get_rng_state()
        draws = st["draws"]
        assert len(draws) == 2, f"expected two reparameterisation draws, got {len(draws)}"
        regen, regen_end = regenerate_noise(draws[0][0], [d.shape for _, d in draws])
        for (_, drawn), again in zip(draws, regen):
            assert torch.equal(drawn, again), "regenerated noise differs from the draw"
        assert torch.equal(regen_end, end_state), "another random draw happened in the step"
        z_s, logits_s, mean_s, logvar_s = st["forward"]["s"]
        z_b, logits_b, mean_b, logvar_b = st["forward"]["b"]
        y = torch.from_numpy(st["y"])
        weighted_s, surrogate_b = st["eval_batch"]
        ce_s = st["ce_s"]
        ce_b = F.cross_entropy(logits_b, y, reduction="none")
        # reconstruction: BCE summed over pixels; KL of each Gaussian latent to N(0, I)
        recon = F.binary_cross_entropy(st["x_reconst"], st["x"], reduction="none").flatten(1).sum(1)
        kl = sum(0.5 * (m.square() + lv.exp() - 1.0 - lv).sum(1)
                 for m, lv in ((mean_s, logvar_s), (mean_b, logvar_b)))
        record = {
            "index": st["index"], "noise_state": state_u8(draws[0][0]),
            "noise_fingerprint": np.array([[d.double().sum().item(),
                                            d.double().square().sum().item()] for _, d in draws]),
            "ce_s": ce_s.numpy(), "ce_b": ce_b.numpy(), "weight": (weighted_s / ce_s).numpy(),
            "weighted_ce_s": weighted_s.numpy(), "bias_term": surrogate_b.numpy(),
            "recon": (recon / PIXELS).numpy(), "kl": (kl / PIXELS).numpy(),
            "loss": st["loss"], "lr": self.optimizers[0].param_groups[0]["lr"],
            "lr_b": self.optimizers[1].param_groups[0]["lr"],
            "sketch": {n: self.sketches[n](network_tensors(self.models, n)) for n in NETWORKS},
        }
        self.steps.append(record)
        self.step = None
        print(f"step {len(self.steps) - 1}: loss {record['loss']:.5f} lr {record['lr']:g}",
              flush=True)

    # --- end of an epoch ------------------------------------------------------------
    def scheduler_class(self, base):
        rec = self

        class Scheduler(base):
            """ReduceLROnPlateau without the ``verbose`` argument torch no longer takes;
            notes the held-out objective it steps on (their optimizer_s's scheduler)."""

            def __init__(self, optimizer, *a, verbose=None, **kw):
                super().__init__(optimizer, *a, **kw)
                self.is_s = optimizer is rec.optimizers[0]

            def step(self, metrics, *a, **kw):
                if self.is_s:
                    rec.val_objectives.append(float(metrics))
                return super().step(metrics, *a, **kw)
        return Scheduler

    def wrap_early_stop(self, original):
        def wrapped(model_s, model_b, loader, stopping, *a, **kw):
            self.val_batches = []
            out = original(model_s, model_b, loader, stopping, *a, **kw)
            self.epoch_val.append(np.concatenate(self.val_batches) if self.val_batches
                                  else np.zeros(0, np.int64))
            self.es_counters.append(stopping.counter)
            self.phase = None
            return out
        return wrapped

    def wrap_validate(self, original):
        def wrapped(model_s, model_b, loader, epoch, *a, **kw):
            out = original(model_s, model_b, loader, epoch, *a, **kw)
            self.phase = None
            if epoch + 1 >= self.epochs:
                raise Stop
            return out
        return wrapped


def stub_wandb():
    """Their code logs to Weights & Biases (disabled in their config): a no-op module."""
    mod = types.ModuleType("wandb")
    mod.run = types.SimpleNamespace(name="parity")
    mod.init = lambda *a, **k: mod.run
    mod.log = lambda *a, **k: None
    mod.finish = lambda *a, **k: None
    mod.Image = lambda *a, **k: None
    sys.modules["wandb"] = mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="checkout of mvandenhi/Signal-is-Harder")
    ap.add_argument("--data", required=True, help="folder written by make_data.py")
    ap.add_argument("--run-dir", required=True, help="scratch working directory (checkpoints)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", required=True, help="fixture path without suffix")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref, data = Path(args.ref).resolve(), Path(args.data).resolve()
    selection = json.loads((data / "selection.json").read_text())
    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    rec = Recorder(args.epochs)

    # compatibility with today's numpy and torch (their requirements pin numpy 1.24, torch 2.0)
    np.Inf = np.inf
    rec_sched = rec.scheduler_class(torch.optim.lr_scheduler.ReduceLROnPlateau)
    torch.optim.lr_scheduler.ReduceLROnPlateau = rec_sched
    stub_wandb()

    sys.path.insert(0, str(ref))
    args.out = str(Path(args.out).resolve())  # relative to where the recorder was started
    os.makedirs(args.run_dir, exist_ok=True)
    os.chdir(args.run_dir)
    import yaml
    import train as theirs          # their train.py
    import module.mlp_vae as their_vae

    real_open = open
    theirs.open = lambda path, *a, **k: real_open(ref / path if path == "config.yaml" else path,
                                                  *a, **k)

    def load_config(f):
        config = yaml.safe_load(f)
        config["user"]["data_dir"] = str(data)
        return config
    theirs.yaml = types.SimpleNamespace(safe_load=load_config)
    theirs.DataLoader = rec.loader_class(theirs.DataLoader)
    theirs.get_model = rec.wrap_get_model(theirs.get_model)
    theirs.get_optimizer = rec.wrap_get_optimizer(theirs.get_optimizer)
    theirs.evaluate_batch = rec.wrap_evaluate_batch(theirs.evaluate_batch)
    theirs.early_stop = rec.wrap_early_stop(theirs.early_stop)
    theirs.validate = rec.wrap_validate(theirs.validate)
    their_vae.MLP_VAE.reconstruct = rec.wrap_reconstruct(their_vae.MLP_VAE.reconstruct)
    normal_mod = sys.modules["torch.distributions.normal"]
    normal_mod._standard_normal = rec.wrap_standard_normal(normal_mod._standard_normal)
    torch.Tensor.backward = rec.wrap_backward(torch.Tensor.backward)
    torch.nn.modules.module.register_module_forward_hook(rec.forward_hook)
    sys.modules["torch.optim.optimizer"].register_optimizer_step_post_hook(rec.step_post_hook)

    # sketches drawn once the models exist (first step): sizes from their state dicts
    original_begin = rec.begin_step

    def begin_step(batch):
        if rec.sketches is None:
            rec.sketches = {n: Sketch.of(network_tensors(rec.models, n)) for n in NETWORKS}
        original_begin(batch)
    rec.begin_step = begin_step

    argv = ["train.py", "--name", "parity", "--bias_conflicting_perc", "0.01", "--severity",
            "4", "--dataset", "colored_mnist", "--model_tag", "MLP_VAE", "--random_state", "0"]
    sys.argv = argv
    try:
        theirs.main()
    except Stop:
        pass
    else:
        raise SystemExit("their training ended before the last recorded epoch")
    write(rec, args, selection, commit, argv)


def init_layout(rec: Recorder):
    """Their Linear layers in creation order (= state-dict order): key prefix, in, out."""
    keys, shapes = [], []
    for which in ("s", "b"):
        for k, v in rec.init[which].items():
            if k.endswith(".weight"):
                keys.append(f"{which}/{k[:-len('.weight')]}")
                shapes.append(tuple(v.shape[::-1]))
    return keys, shapes


def regenerate_init(state: torch.Tensor, shapes):
    """torch's default nn.Linear init drawn from ``state``, layer after layer."""
    keep = torch.get_rng_state()
    torch.set_rng_state(state)
    try:
        layers = [torch.nn.Linear(i, o) for i, o in shapes]
    finally:
        torch.set_rng_state(keep)
    return [t for layer in layers for t in (layer.weight.detach(), layer.bias.detach())]


def write(rec: Recorder, args, selection, commit, argv) -> None:
    keys, shapes = init_layout(rec)
    theirs_init = [v for which in ("s", "b") for v in rec.init[which].values()]
    regen = regenerate_init(rec.init_state, shapes)
    assert len(regen) == len(theirs_init) and all(
        torch.equal(a, b) for a, b in zip(regen, theirs_init)), "init does not regenerate"
    steps = rec.steps
    epoch_of_step, per_epoch = [], len(steps) // args.epochs
    assert per_epoch * args.epochs == len(steps)
    arrays = {
        "init_rng_state": state_u8(rec.init_state),
        "init_layers": np.array(keys), "init_shapes": np.array(shapes, np.int64),
        "index": np.concatenate([s["index"] for s in steps]).astype(np.int32),
        "batch_sizes": np.array([len(s["index"]) for s in steps], np.int32),
        "steps_per_epoch": np.int32(per_epoch),
        "noise_state": np.stack([s["noise_state"] for s in steps]),
        "noise_fingerprint": np.stack([s["noise_fingerprint"] for s in steps]),
        "loss": np.array([s["loss"] for s in steps]),
        "lr": np.array([s["lr"] for s in steps]),
        "val_set": rec.val_set.astype(np.int32),
        "val_index": np.concatenate(rec.epoch_val).astype(np.int32),
        "val_sizes": np.array([len(v) for v in rec.epoch_val], np.int32),
        "val_objective": np.array(rec.val_objectives),
        "es_counter": np.array(rec.es_counters, np.int32),
        "train_index": np.array(selection["train_index"], np.int32),
    }
    for key in ("ce_s", "ce_b", "weight", "weighted_ce_s", "bias_term", "recon", "kl"):
        arrays[key] = np.concatenate([s[key] for s in steps]).astype(np.float32)
    for n in NETWORKS:
        arrays[f"sketch/{n}"] = np.stack([s["sketch"][n] for s in steps])
    assert all(s["lr"] == s["lr_b"] for s in steps)
    manifest_path = Path(args.out).with_suffix(".json")
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest = build_manifest(rec, args, selection, commit, argv, len(steps),
                              sha256_tensors(theirs_init))
    for key in ("measured",):
        if key in old:
            manifest[key] = old[key]
    path = write_fixture(args.out, arrays, manifest)
    print("wrote", path, path.with_suffix(".npz").stat().st_size, "bytes")


def build_manifest(rec, args, selection, commit, argv, n_steps, init_sha) -> dict:
    here = Path(__file__).resolve().parent / "manifest.json"
    manifest = json.loads(here.read_text())
    manifest["reference"]["commit"] = commit
    manifest["record"].update(
        command=("OMP_NUM_THREADS=1 python tools/parity/sih/record.py --ref REF --data DATA "
                 f"--run-dir RUN --epochs {args.epochs} --out {Path(args.out).relative_to(REPO)}"
                 if Path(args.out).is_relative_to(REPO) else " ".join(sys.argv)),
        torch=torch.__version__, threads=torch.get_num_threads(),
        their_argv=" ".join(argv))
    manifest["data"].update(sha256=selection["train_sha256"], params=selection["params"],
                            protocol=selection["protocol"], selection_seed=selection["seed"])
    manifest["init_sha256"] = init_sha
    manifest["steps"] = n_steps
    manifest.setdefault("measured", {"options": None, "negative_control": None})
    return manifest


if __name__ == "__main__":
    main()
