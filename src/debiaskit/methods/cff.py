"""Counterfactual and factual augmentation with saliency regularisation (CF/F, paper 004),
and its Mixup and label-smoothing baselines.

Per batch (PROTOCOLS.md, CF/F), with foreground masks ``r`` and their bounding boxes:
- counterfactual images (``cf`` infill, :mod:`debiaskit.data.infill`): the box replaced
  by the infill, trained towards "not y" with ``cf_loss`` (the paper's
  ``L_cf = -log(1 - p_y)``, computed stably; or cross-entropy to a uniform target);
- factual images (``factual`` infill): the background (outside the mask) replaced, label
  kept, cross-entropy; ``fgsm``: one FGSM step on the background only (random start in
  +-eps, step 1.25 eps, eps in [-1, 1] pixel units as the paper's, i.e. eps / 2 on our
  [0, 1] images; the network stays in its training mode during the attack);
- originals, counterfactuals and factuals go through the network as one concatenated
  batch (as the authors' code; batch-norm statistics cover all of it), and their losses
  are summed and divided by its size;
- ``sal_lambda`` > 0 adds GradMask (``sal_variant`` ``paper``: the squared input gradient
  of the target logit on the background, summed and divided by the background's size,
  per image, then averaged; ``code``: the authors' code's version as PROTOCOLS.md reads it,
  the gradient of the sum of the logits of every label present in the batch, its square
  averaged over all input values with the background weight).
Images whose mask is empty get no counterfactual or factual copy. The augmentations draw
from a generator seeded by (the run's torch seed, the step), so a resumed run repeats them.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..data import infill
from ..errors import ConfigError
from ..losses import CF_LOSSES, counterfactual_loss
from .base import HParam, Method, choice, log_uniform, register

FACTUAL = infill.FACTUAL + ("fgsm",)
SAL_VARIANTS = ("paper", "code")


def step_seed(seed: torch.Tensor, steps: torch.Tensor) -> int:
    """The seed of one training step's augmentation: a function of (the run's torch seed,
    the step), within the 63 bits a generator accepts, so a resumed run repeats it."""
    return (int(seed) * 1_000_003 + int(steps)) % (2 ** 63)


def fgsm_background(model, x, y, background, eps, gen):
    """One FGSM step of size ``1.25 eps`` from a random start in ``+-eps``, on the
    ``background`` pixels only, kept within ``eps`` of ``x`` and within [0, 1]."""
    region = background[:, None].to(x.dtype)
    start = x + region * (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * eps
    start = start.clamp(0, 1).detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(model(start), y), start)
    adv = start.detach() + region * 1.25 * eps * grad.sign()
    return torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()


def gradmask(model, x, y, foreground, variant="paper") -> torch.Tensor:
    """GradMask's saliency penalty (before ``lambda``), differentiable in the parameters."""
    x = x.detach().requires_grad_(True)
    return gradmask_of(model(x), x, y, foreground, variant)


def gradmask_of(logits, x, y, foreground, variant="paper") -> torch.Tensor:
    """:func:`gradmask` from ``logits`` already computed on ``x`` (which requires grad), so
    that the training step shares one forward pass between cross-entropy and GradMask."""
    if variant == "paper":
        target = logits.gather(1, y[:, None]).sum()
    else:
        target = logits[:, y.unique()].sum()
    grad, = torch.autograd.grad(target, x, create_graph=True)
    outside = (~foreground)[:, None].expand_as(x).to(x.dtype)
    if variant == "paper":
        per_image = (grad.pow(2) * outside).flatten(1).sum(1) / outside.flatten(1).sum(1) \
            .clamp_min(1.0)
        return per_image.mean()
    return (grad.pow(2) * outside).mean()


@register
class CounterfactualFactual(Method):
    name = "cff"
    requires = frozenset({"mask"})
    relative_cost = 2.5
    hparams = {
        "lr": HParam(1e-3, "learning rate", 0.0, 10.0),
        "weight_decay": HParam(0.0, "weight decay", 0.0, 1.0),
        "cf": HParam("none", "counterfactual infill of the box: none | "
                             + " | ".join(infill.COUNTERFACTUAL),
                     choices=("none",) + infill.COUNTERFACTUAL),
        "cf_loss": HParam("logp", "logp (-log(1 - p_y)) | uniform | uniform_except_y",
                          choices=CF_LOSSES),
        "factual": HParam("none", "factual infill of the background: none | "
                                  + " | ".join(FACTUAL), choices=("none",) + FACTUAL),
        "fgsm_eps": HParam(0.5, "FGSM eps in [-1, 1] pixel units (the tables' 0.5)", 0.0, 2.0,
                           search=choice(0.15, 0.3, 0.5, 0.6, 0.9)),
        "sal_lambda": HParam(0.0, "weight of the GradMask saliency penalty (0: off)", 0.0, 1e6,
                             search=log_uniform(1e-4, 1e3)),
        "sal_variant": HParam("paper", "paper (target logit, background mean) | code",
                              choices=SAL_VARIANTS),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())
        self.register_buffer("seed", torch.tensor(torch.initial_seed() % (2 ** 62)))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(step_seed(self.seed, self.steps))

    def augment(self, batch, gen):
        """(counterfactual images or None, factual images with their labels or None)."""
        if batch.mask is None:
            raise ConfigError(f"{self.name} needs foreground masks with every batch")
        if batch.mask.shape != (batch.x.shape[0],) + tuple(batch.x.shape[2:]):
            raise ConfigError(f"{self.name}: masks have shape {tuple(batch.mask.shape)}, "
                              f"images {tuple(batch.x.shape)}; give one (H, W) mask per image")
        keep = batch.mask.any((1, 2))
        x, y, mask = batch.x[keep], batch.y[keep], batch.mask[keep]
        cf = fact = None
        if self.hp["cf"] != "none" and len(x):
            cf = (infill.counterfactual(self.hp["cf"], x, infill.mask_boxes(mask), gen), y)
        if self.hp["factual"] == "fgsm" and len(x):
            fact = (fgsm_background(self.networks["model"], x, y, ~mask,
                                    self.hp["fgsm_eps"] / 2, gen), y)
        elif self.hp["factual"] != "none" and len(x):
            fact = (infill.factual(self.hp["factual"], x, mask, gen, y=y), y)
        return cf, fact

    def loss(self, batch, training=True):
        model = self.networks["model"]
        gen = self._generator()
        cf, fact = self.augment(batch, gen)
        sal = self.hp["sal_lambda"] > 0
        x = batch.x.detach().requires_grad_(True) if sal else batch.x
        parts = [(x, batch.y, "ce")] + ([(cf[0], cf[1], "cf")] if cf is not None else []) \
            + ([(fact[0], fact[1], "factual")] if fact is not None else [])
        # one forward pass over the concatenated batch (originals + CF + F), as the authors'
        # code does, so batch-norm statistics cover all of it; GradMask needs the input
        # gradient even where the caller disabled gradients (early stopping's objective)
        with torch.enable_grad() if sal else contextlib.nullcontext():
            logits = model(torch.cat([p[0] for p in parts]))
            own = logits[:len(batch.y)]
            penalty = (gradmask_of(own, x, batch.y, batch.mask, self.hp["sal_variant"])
                       if sal else None)
        total, count, stats, start = 0.0, 0, {}, 0
        for _, labels, kind in parts:
            part = logits[start:start + len(labels)]
            start += len(labels)
            if kind == "cf":
                value = counterfactual_loss(part, labels, self.hp["cf_loss"]).sum()
            else:
                value = F.cross_entropy(part, labels, reduction="sum")
            total, count = total + value, count + len(labels)
            if kind != "ce":
                stats[f"loss_{kind}"] = value.item() / max(len(labels), 1)
        loss = total / count
        if sal:
            loss = loss + self.hp["sal_lambda"] * penalty
            stats["loss_sal"] = penalty.item()
        if training:
            self.steps += 1
        stats["loss"] = loss.item()
        return loss, stats

    def predict(self, x):
        return self.networks["model"](x)


@register
class Mixup(Method):
    """Mixup (Zhang et al. 2018), a CF/F baseline: images and labels mixed with
    ``lambda ~ Beta(alpha, alpha)`` against a shuffled copy of the batch."""

    name = "mixup"
    hparams = {
        "lr": HParam(1e-3, "learning rate", 0.0, 10.0),
        "weight_decay": HParam(0.0, "weight decay", 0.0, 1.0),
        "alpha": HParam(0.2, "Beta(alpha, alpha) of the mixing weight (CF/F grid 0.1-0.3)",
                        1e-6, 100.0, search=choice(0.1, 0.2, 0.3)),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())
        self.register_buffer("seed", torch.tensor(torch.initial_seed() % (2 ** 62)))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def loss(self, batch, training=True):
        seed = step_seed(self.seed, self.steps)
        gen = torch.Generator().manual_seed(seed)
        alpha = self.hp["alpha"]
        lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if training else 1.0
        perm = torch.randperm(len(batch.y), generator=gen)
        logits = self.networks["model"](lam * batch.x + (1 - lam) * batch.x[perm])
        loss = lam * F.cross_entropy(logits, batch.y) \
            + (1 - lam) * F.cross_entropy(logits, batch.y[perm])
        if training:
            self.steps += 1
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.networks["model"](x)


@register
class LabelSmoothing(Method):
    """Label smoothing (Szegedy et al. 2016), a CF/F baseline: cross-entropy to the label
    mixed with the uniform distribution by ``epsilon``."""

    name = "label_smoothing"
    hparams = {
        "lr": HParam(1e-3, "learning rate", 0.0, 10.0),
        "weight_decay": HParam(0.0, "weight decay", 0.0, 1.0),
        "epsilon": HParam(0.1, "smoothing (CF/F grid 0.05, 0.1, 0.2)", 0.0, 1.0,
                          search=choice(0.05, 0.1, 0.2)),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())

    def loss(self, batch, training=True):
        loss = F.cross_entropy(self.networks["model"](batch.x), batch.y,
                               label_smoothing=self.hp["epsilon"])
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.networks["model"](x)
