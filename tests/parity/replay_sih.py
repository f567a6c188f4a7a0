"""Replay a SiH parity fixture (tools/parity/sih/record.py) through debiaskit's SiH.

The same initial weights (torch's default nn.Linear init regenerated from the recorded RNG
state, checked against the reference's SHA-256), the same batches (the recorded dataset
indices into the subset of debiaskit's own Colored MNIST that the reference trained on,
checked by SHA-256) and the same reparameterisation noise (regenerated from the recorded
RNG state of each step and injected through ``SiH.noise``); then, step by step, the
per-sample quantities debiaskit computes (captured by wrapping its own functions within
the step) against the reference's, the parameters of every network through sketches, the
learning rate, and at each epoch end the held-out objective that the early stopping and the
LR plateaus see.

Options (``fixture.manifest["options"]``): ``hparams`` and ``model_options`` of the method,
``patience`` of the early stopping (the LR plateau waits ``patience // 2 - 1`` epochs as
debiaskit's trainer sets it).
"""

from __future__ import annotations

import functools
import hashlib
from contextlib import contextmanager

import numpy as np
import torch

from debiaskit import optim
from debiaskit.data.loader import Batch, InMemoryLoader
from debiaskit.methods import sih as sih_module
from debiaskit.methods.base import DataSpec
from debiaskit.methods.sih import SiH
from debiaskit.models import NetworkFactory
from debiaskit.parity import Comparison, Sketch

from . import DATA_DIR, require_data
from debiaskit.train import EVAL_BATCH, heldout_objective

# Their layer (key prefix in their two models' state dicts) -> ours in SiH's VAE;
# None: their biased model's decoder, frozen and never used by their code.
LAYERS = {"encoder.encoder.0": "{enc}.body.1", "encoder.encoder.2": "{enc}.body.3",
          "encoder.fc_mean": "{enc}.mean", "encoder.fc_logvar": "{enc}.log_var",
          "decoder.decoder.0": "decoder.net.0", "decoder.decoder.2": "decoder.net.2",
          "decoder.decoder.4": "decoder.net.4", "classifier.classifier.1": "{head}.1"}
ROLE = {"s": {"enc": "signal_encoder", "head": "signal_head"},
        "b": {"enc": "bias_encoder", "head": "bias_head"}}
NETWORKS = {"encoder_s": ("s", "encoder."), "decoder": ("s", "decoder."),
            "classifier_s": ("s", "classifier."), "encoder_b": ("b", "encoder."),
            "classifier_b": ("b", "classifier.")}


@functools.lru_cache(maxsize=2)
def _subset(params: tuple, index: bytes):
    from debiaskit.data.protocols import build_data
    bundle = build_data("colored_mnist", data_dir=str(DATA_DIR), **dict(params))
    pick = torch.from_numpy(np.frombuffer(index, dtype=np.int32).astype(np.int64))
    return bundle.train.subset(pick, "parity")


def load_data(fixture):
    require_data("mnist.npz")
    data = fixture.manifest["data"]
    params = tuple(sorted(data["params"].items()))
    ds = _subset(params, fixture["train_index"].astype(np.int32).tobytes())
    sha = hashlib.sha256(ds.x.numpy().tobytes()).hexdigest()
    if sha != data["sha256"]:
        raise AssertionError(f"{fixture.name}: regenerated images differ from the record "
                             f"(sha256 {sha[:12]}... vs {data['sha256'][:12]}...)")
    return ds


def their_init(fixture) -> dict:
    """Their initial weights: torch's nn.Linear init drawn from the recorded RNG state,
    layer after layer in their creation order, as ``{"s/key": tensor, "b/key": ...}``."""
    keep = torch.get_rng_state()
    torch.set_rng_state(torch.from_numpy(fixture["init_rng_state"].copy()))
    try:
        layers = [torch.nn.Linear(int(i), int(o)) for i, o in fixture["init_shapes"]]
    finally:
        torch.set_rng_state(keep)
    out = {}
    for name, layer in zip(fixture["init_layers"], layers):
        out[f"{name}.weight"] = layer.weight.detach()
        out[f"{name}.bias"] = layer.bias.detach()
    h = hashlib.sha256()
    for t in out.values():
        h.update(t.contiguous().numpy().tobytes())
    if h.hexdigest() != fixture.manifest["init_sha256"]:
        raise AssertionError(f"{fixture.name}: the regenerated initial weights differ from "
                             "the reference's (torch's nn.Linear init changed?)")
    return out


def ours(key: str) -> str | None:
    """Our VAE's state-dict key for their ``"s/..."`` / ``"b/..."`` key."""
    which, _, rest = key.partition("/")
    layer, _, leaf = rest.rpartition(".")
    if which == "b" and layer.startswith("decoder."):
        return None
    return LAYERS[layer].format(**ROLE[which]) + "." + leaf


@functools.lru_cache(maxsize=8)
def sketch_of(n: int) -> Sketch:
    """The fixture's sketch for ``n`` parameters (drawn once per process)."""
    return Sketch(n)


def project(sketch: Sketch, tensors, block: int = 1 << 12) -> np.ndarray:
    """``sketch(tensors)``; for networks of more than one chunk (the 3-million-parameter
    decoder) computed in float32 blocks of ``block`` columns summed in float64, some 10x
    faster and within about 1e-6 relative of the float64 projection (the tolerance is
    1e-4)."""
    if len(sketch.chunks) == 1:
        return sketch(tensors)
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    out, lo = torch.zeros(sketch.rows, dtype=torch.float64), 0
    for chunk in sketch.chunks:
        for b in range(0, chunk.shape[1], block):
            part = chunk[:, b:b + block]
            out += (part @ flat[lo + b:lo + b + part.shape[1]]).double()
        lo += chunk.shape[1]
    return out.numpy()


def network_keys(init: dict) -> dict:
    return {n: [k for k in init if k.startswith(f"{w}/{p}")] for n, (w, p) in NETWORKS.items()}


class Noise:
    """``SiH.noise`` for one step: the standard normal draws of a CPU generator started
    from the step's recorded state, one call after the other (signal, then bias)."""

    def __init__(self, state: np.ndarray) -> None:
        self.gen = torch.Generator()
        self.gen.set_state(torch.from_numpy(state.copy()))
        self.fingerprints = []

    def __call__(self, mean: torch.Tensor) -> torch.Tensor:
        draw = torch.empty(mean.shape, dtype=mean.dtype).normal_(generator=self.gen)
        self.fingerprints.append([draw.double().sum().item(), draw.double().square().sum().item()])
        return draw.to(mean.device)


@contextmanager
def capture(method: SiH, out: dict):
    """Within the block, what debiaskit's SiH computes per sample goes into ``out``."""
    saved_kl, saved_recon = sih_module.gaussian_kl, dict(sih_module.RECONSTRUCTION)

    def weights(batch, ce_signal, ce_bias, training):
        w = SiH.weights(method, batch, ce_signal, ce_bias, training)
        out.update(ce_s=ce_signal.detach(), ce_b=ce_bias.detach(), weight=w.detach())
        return w

    def bias_loss(logits_b, y, ce_b):
        term = SiH.bias_loss(method, logits_b, y, ce_b)
        out["bias_term"] = term.detach()
        return term

    def kl(mean, log_var):
        value = saved_kl(mean, log_var)
        out["kl"] = out.get("kl", 0) + value.detach()
        return value

    def recon_of(name):
        def recon(logits, x):
            value = saved_recon[name](logits, x)
            out["recon"] = value.detach()
            return value
        return recon

    method.weights, method.bias_loss = weights, bias_loss
    sih_module.gaussian_kl = kl
    for name in saved_recon:
        sih_module.RECONSTRUCTION[name] = recon_of(name)
    try:
        yield out
    finally:
        del method.weights, method.bias_loss
        sih_module.gaussian_kl = saved_kl
        sih_module.RECONSTRUCTION.update(saved_recon)


def replay(fixture, options) -> Comparison:
    ds = load_data(fixture)
    with torch.random.fork_rng(devices=[]):   # building SiH draws from the global RNG
        return _replay(fixture, options, ds)


def _replay(fixture, options, ds) -> Comparison:
    n, pixels = len(ds), 3 * 28 * 28
    spec = DataSpec(input_shape=(3, 28, 28), num_classes=10, num_train=n, train_targets=ds.y,
                    num_bias=ds.num_bias, train_bias=ds.b)
    method = SiH(spec, NetworkFactory(fixture.manifest["network"], (3, 28, 28), 10,
                                      dict(options.get("model_options", {}))),
                 dict(options.get("hparams", {})))
    method.pack = False
    patience = int(options.get("patience", 2))
    epochs = len(fixture["val_sizes"])
    method.override_optimizers(schedule="plateau", lr_step=max(patience // 2 - 1, 0),
                               lr_gamma=0.1)   # as debiaskit's trainer does for early_stop
    scheduler = optim.build_schedule(method.optimizers["vae"], method.optimizer_specs["vae"],
                                     epochs)
    init = their_init(fixture)
    mapped = {ours(k): v for k, v in init.items() if ours(k) is not None}
    method.vae.load_state_dict(mapped, strict=True)
    keys = network_keys(init)
    sketches = {name: sketch_of(sum(init[k].numel() for k in ks)) for name, ks in keys.items()}
    vae_state = method.vae.state_dict(keep_vars=True)

    result = Comparison(dict(fixture.manifest["tolerances"]))
    per_epoch = int(fixture["steps_per_epoch"])
    n_val = len(fixture["val_set"])
    train_size = n - n_val
    mine_steps = len(InMemoryLoader(ds.subset(torch.arange(train_size)), 256,
                                    drop_last=method.drop_last))
    per_sample = {k: fixture.per_step(k) for k in
                  ("ce_s", "ce_b", "weight", "weighted_ce_s", "bias_term", "recon", "kl")}
    indices = fixture.per_step("index")
    val_index = np.split(fixture["val_index"], np.cumsum(fixture["val_sizes"])[:-1])
    best, epoch = None, 0
    for step, idx in enumerate(indices):
        if step % per_epoch == 0:
            result.absolute(step, "steps per epoch", mine_steps, per_epoch)
            method.begin_epoch(epoch, None)
            method.train(True)
        index = torch.from_numpy(idx.astype(np.int64))
        batch = Batch(x=ds.x[index].float().div_(255.0), y=ds.y[index], index=index,
                      b=ds.b[index])
        method.noise = noise = Noise(fixture["noise_state"][step])
        got = {}
        with capture(method, got):
            stats = method.update(batch)
        del method.noise
        result.absolute(step, "noise draws (sum, sum of squares)",
                        np.array(noise.fingerprints), fixture["noise_fingerprint"][step])
        for key, scale in (("ce_s", 1), ("ce_b", 1), ("weight", 1), ("bias_term", 1),
                           ("recon", pixels), ("kl", pixels)):
            result.absolute(step, key, got[key].numpy() / scale, per_sample[key][step])
        result.absolute(step, "weighted_ce_s", (got["weight"] * got["ce_s"]).numpy(),
                        per_sample["weighted_ce_s"][step])
        result.relative(step, "loss", np.array([stats["loss"]]), fixture["loss"][step:step + 1])
        result.absolute(step, "lr", method.optimizers["vae"].param_groups[0]["lr"],
                        fixture["lr"][step])
        for name, ks in keys.items():
            mine = [vae_state[ours(k)] for k in ks]
            result.relative(step, f"sketch {name}", project(sketches[name], mine),
                            fixture[f"sketch/{name}"][step])
        if (step + 1) % per_epoch == 0:   # their early_stop pass: LR plateau and stopping
            method.train(False)
            included = torch.from_numpy(val_index[epoch].astype(np.int64))
            loader = InMemoryLoader(ds.subset(included), EVAL_BATCH, shuffle=False)
            # their pass sums over the samples it included, divided by the held-out size
            objective = heldout_objective(method, loader) * len(included) / n_val
            result.relative(step, "held-out objective", np.array([objective]),
                            fixture["val_objective"][epoch:epoch + 1])
            scheduler.step(objective)
            if best is None or objective < best[1]:
                best = (epoch, objective)
            result.absolute(step, "epochs without improvement", epoch - best[0],
                            fixture["es_counter"][epoch])
            epoch += 1
    return result
