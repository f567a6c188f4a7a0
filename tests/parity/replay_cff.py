"""Replay a CF/F parity fixture (the authors' zzzace2000/robust_cls_model, recorded by
tools/parity/cff/record.py) through debiaskit's CounterfactualFactual.

Same initial weights, same batches (the recorded dataset indices, images and masks from the
fixture through debiaskit's uint8 -> [0, 1] conversion), and the same random draws: the
authors' inpainters drew from torch's global generator, debiaskit's infills from the
method's step generator; during each step the ``torch`` that :mod:`debiaskit.data.infill`
sees is replaced by a stand-in whose ``rand`` / ``randn`` / ``randperm`` return the
recorded draws in order (their Gaussian noise is stored as drawn, N(0, 0.2^2), and handed
over as z-scores), and a step fails if debiaskit consumes other draws than recorded.

Compared per step: per-sample cross-entropy of the originals and of the factual images,
per-sample counterfactual loss, the per-image mean over input values of the squared input
gradient on the background (the code's target, [-1, 1] units, computed here from
debiaskit's own forward pass), debiaskit's
GradMask penalty and total loss (its logged statistics), the counterfactual and factual
images (per image mean and RMS in [-1, 1] units), and sketches of the parameters and of
the batch-norm running statistics after the step, with the count of batch-norm updates.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from debiaskit.data import infill
from debiaskit.data.loader import Batch
from debiaskit.losses import counterfactual_loss
from debiaskit.methods import cff as cff_module
from debiaskit.methods.base import DataSpec
from debiaskit.methods.cff import CounterfactualFactual, code_logp_loss
from debiaskit.models import NetworkFactory
from debiaskit.parity import Comparison, Sketch

NORMALISATION = ("mean", "std")


class RecordedDraws:
    """Stands in for ``torch`` inside debiaskit's infill module: ``rand``, ``randn`` and
    ``randperm`` return the recorded draws in order, everything else is torch's."""

    def __init__(self, draws, noise_std):
        self.queue = list(draws)
        self.noise_std = noise_std
        self.mismatch = 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def _next(self, kind, shape):
        if not self.queue or self.queue[0][0] != kind \
                or tuple(self.queue[0][1].shape) != tuple(shape):
            self.mismatch += 1
            return None
        return self.queue.pop(0)[1]

    def rand(self, *size, generator=None, device=None, dtype=None):
        size = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
        got = self._next("uniform", size)
        return torch.rand(*size, generator=generator, dtype=dtype) if got is None \
            else torch.as_tensor(got, dtype=dtype or torch.float32)

    def randn(self, *size, generator=None, device=None, dtype=None):
        size = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
        got = self._next("normal", size)
        return torch.randn(*size, generator=generator, dtype=dtype) if got is None \
            else torch.as_tensor(got, dtype=dtype or torch.float32) / self.noise_std

    def randperm(self, n, generator=None, device=None):
        got = self._next("randperm", (n,))
        return torch.randperm(n, generator=generator) if got is None \
            else torch.as_tensor(got.astype(np.int64))


def build(fixture, options):
    spec_shape = tuple(fixture["x"].shape[1:])
    y = torch.from_numpy(fixture["y"])
    spec = DataSpec(input_shape=spec_shape, num_classes=int(options["num_classes"]),
                    num_train=len(y), train_targets=y)
    factory = NetworkFactory(fixture.manifest["network"], spec_shape,
                             int(options["num_classes"]), dict(options["model_options"]))
    method = CounterfactualFactual(spec, factory, dict(options["hparams"]))
    method.pack = False
    method.override_optimizers(**options.get("optimizer", {}))
    init = {k: v for k, v in fixture.prefixed("init/").items() if k not in NORMALISATION}
    missing, unexpected = method.networks["model"].load_state_dict(init, strict=False)
    assert set(missing) == set(NORMALISATION) and not unexpected, (missing, unexpected)
    return method


def replay(fixture, options, stop_early=True) -> Comparison:
    manifest = fixture.manifest
    method = build(fixture, options)
    model = method.networks["model"]
    params = [p for _, p in model.named_parameters()]
    buffer_names = manifest["data"]["buffer_names"]
    psketch, bsketch = Sketch.of(params), Sketch.of([model.get_buffer(k) for k in buffer_names])
    x_u8 = torch.from_numpy(fixture["x"])
    masks = torch.from_numpy(fixture["masks"])
    y = torch.from_numpy(fixture["y"])
    per_batch = {k: fixture.per_step(k) for k in ("index", "ce")}
    per_kept = {k: fixture.per_step(k, "kept_sizes")
                for k in ("cf", "fact", "sal", "cf_images", "f_images")}
    kinds = manifest["data"]["draw_kinds"]
    noise_std = manifest["data"]["their_noise_std"]
    cmp = Comparison(manifest["tolerances"])
    digest = hashlib.sha256(fixture["x"].tobytes() + np.packbits(fixture["masks"]).tobytes())
    cmp.absolute(0, "data checksum", [digest.hexdigest() != manifest["data"]["sha256"]], [0])

    outputs, seen = [], {}
    model.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
    augment = method.augment

    def keep_augment(batch, gen):
        cf, fact = augment(batch, gen)
        seen["cf"], seen["fact"] = cf, fact
        return cf, fact

    method.augment = keep_augment
    gradmask_of = cff_module.gradmask_of

    def keep_saliency(logits, x, labels, foreground, *a, **k):
        grad, = torch.autograd.grad(logits.index_select(1, labels).sum(), x, retain_graph=True)
        kept = foreground.flatten(1).any(1)
        outside = (~foreground[kept])[:, None].to(x.dtype)
        seen["sal"] = ((0.5 * grad[kept] * outside) ** 2).flatten(1).mean(1).double()
        return gradmask_of(logits, x, labels, foreground, *a, **k)

    saved = infill.torch
    cff_module.gradmask_of = keep_saliency
    try:
        for step, idx in enumerate(per_batch["index"]):
            idx = torch.from_numpy(idx)
            draws = [(kind, fixture[f"draw/{step:02d}/{j}_{kind}"])
                     for j, kind in enumerate(kinds[step])]
            stand_in = RecordedDraws(draws, noise_std)
            infill.torch = stand_in
            outputs.clear(), seen.clear()
            batch = Batch(x=x_u8[idx].float().div_(255.0), y=y[idx], index=idx,
                          mask=masks[idx])
            stats = method.update(batch)
            infill.torch = saved
            cmp.absolute(step, "draws not consumed as recorded",
                         [stand_in.mismatch + len(stand_in.queue)], [0])
            nb, k = len(idx), int(per_kept["cf"][step].shape[0])
            logits = torch.cat(outputs)
            cmp.absolute(step, "per-sample CE (originals)",
                         F.cross_entropy(logits[:nb], y[idx], reduction="none"),
                         per_batch["ce"][step])
            extra = logits[nb:]
            want_cf, want_f = per_kept["cf"][step], per_kept["fact"][step]
            labels = y[idx][masks[idx].flatten(1).any(1)]
            if len(want_cf):
                part = extra[:len(want_cf)]
                mine = code_logp_loss(part, labels) if method.hp["cf_logp_code"] \
                    else counterfactual_loss(part, labels, method.hp["cf_loss"])
                cmp.absolute(step, "per-sample CF loss", mine, want_cf)
                cmp.absolute(step, "mean CF loss (logged)", [stats.get("loss_cf", np.nan)],
                             [float(np.mean(want_cf, dtype=np.float64))])
            if len(want_f):
                part = extra[len(want_cf):len(want_cf) + len(want_f)]
                cmp.absolute(step, "per-sample CE (factual)",
                             F.cross_entropy(part, labels, reduction="none"), want_f)
            for name, key, got in (("CF images", "cf_images", seen.get("cf")),
                                   ("F images", "f_images", seen.get("fact"))):
                want = per_kept[key][step]
                if len(want):
                    im = (got[0].double() * 2 - 1).flatten(1) if got is not None \
                        else torch.full((len(want), 1), np.nan, dtype=torch.float64)
                    cmp.absolute(step, f"{name} (mean, RMS in [-1, 1])",
                                 torch.stack([im.mean(1), im.pow(2).mean(1).sqrt()], 1), want)
            if len(fixture["sal"]):
                cmp.absolute(step, "per-image mean squared background input gradient",
                             seen.get("sal", torch.full((k,), np.nan)), per_kept["sal"][step])
                cmp.absolute(step, "GradMask penalty (logged)", [stats.get("loss_sal", np.nan)],
                             [fixture["loss_sal"][step]])
            cmp.absolute(step, "total loss (logged)", [stats["loss"]], [fixture["loss"][step]])
            cmp.relative(step, "parameter sketch", psketch(params), fixture["params"][step])
            cmp.relative(step, "BN running-statistics sketch",
                         bsketch([model.get_buffer(n) for n in buffer_names]),
                         fixture["buffers"][step])
            nbt = sum(int(v) for n, v in model.named_buffers() if n.endswith("batches_tracked"))
            cmp.absolute(step, "BN updates (num_batches_tracked)", [nbt], [fixture["nbt"][step]])
            if stop_early and cmp.first_failure is not None:
                break
    finally:
        infill.torch = saved
        cff_module.gradmask_of = gradmask_of
    return cmp
