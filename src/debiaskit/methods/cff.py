"""Counterfactual and factual augmentation with saliency regularisation (CF/F),
and its Mixup and label-smoothing baselines.

Per batch (docs/methods/cff.md), with foreground masks ``r`` and their bounding boxes:
- counterfactual images (``cf`` infill, :mod:`debiaskit.data.infill`): the box replaced
  by the infill, trained towards "not y" with ``cf_loss`` (the paper's
  ``L_cf = -log(1 - p_y)``, computed stably; or cross-entropy to a uniform target);
- factual images (``factual`` infill): the background (outside the mask) replaced, label
  kept, cross-entropy; ``fgsm``: one FGSM step on the background only (random start in
  +-eps, step 1.25 eps, eps in [-1, 1] pixel units as the paper's, i.e. eps / 2 on our
  [0, 1] images; the network stays in its training mode during the attack);
- ``passes`` [``separate``]: the originals go through the network alone and the
  counterfactuals and factuals together in a second pass, so a batch-norm network never
  normalises an original with its own altered copies (the authors' network uses
  GroupNorm, where one pass and two give the same numbers; their code forwards
  separately whenever GradMask is on). ``joint``: one concatenated pass (batch-norm
  statistics cover all of it; GradMask still needs the originals alone and forces
  ``separate``). Either way the losses of all images are summed and divided by their
  number;
- ``sal_lambda`` > 0 adds GradMask (``sal_variant`` ``paper``: the squared input gradient
  of the target logit on the background, summed and divided by the background's size,
  per image, then averaged; ``code``: the authors' code's version, the gradient of the
  sum over all images of their logits at every label of the batch (a label counted once
  per image of the batch carrying it), its square times the background averaged over
  all input values of the images that have a foreground). The gradient is taken in the
  paper's input units, images scaled to [-1, 1] (``sal_range`` ``signed``: half the
  gradient in our [0, 1] units, a quarter of the penalty), or in [0, 1] units (``unit``).
- ``cf_logp_code`` computes ``-log(1 - p_y)`` as the authors' code does (max-shifted
  exponentials in float32, ``log(sum - exp_y + 1e-20) - log(sum + 1e-20)``): once ``p_y``
  rounds to 1 the loss is capped near ``-log(1e-20)`` = 46.05 and its gradient vanishes
  or explodes; with two classes their code takes the cross-entropy to the other class.
- ``grad_clip`` > 0 clips the gradient's total L2 norm before each step, as the authors'
  runs do (PyTorch Lightning's ``gradient_clip_val=1.0``).
Images whose mask is empty get no counterfactual or factual copy. The augmentations draw
from a generator seeded by (the run's torch seed, the step), so a resumed run repeats them.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..data import infill
from ..device import draw
from ..errors import ConfigError
from ..losses import CF_LOSSES, counterfactual_loss
from .base import Method, register
from .hparams import HParam, choice, log_uniform, optimiser_hparams

FACTUAL = infill.FACTUAL + ("fgsm",)
SAL_VARIANTS = ("paper", "code")
SAL_RANGES = ("signed", "unit")
PASSES = ("separate", "joint")
#: the authors' code's guard inside the logarithms of -log(1 - p_y)
CODE_LOGP_EPS = 1e-20


def step_seed(seed: torch.Tensor, steps: torch.Tensor) -> int:
    """The seed of one training step's augmentation: a function of (the run's torch seed,
    the step), within the 63 bits a generator accepts, so a resumed run repeats it."""
    return (int(seed) * 1_000_003 + int(steps)) % (2 ** 63)


def fgsm_background(model, x, y, background, eps, gen):
    """One FGSM step of size ``1.25 eps`` from a random start in ``+-eps``, on the
    ``background`` pixels only, kept within ``eps`` of ``x`` and within [0, 1]."""
    region = background[:, None].to(x.dtype)
    start = x + region * (draw(torch.rand, x.shape, generator=gen, like=x, dtype=x.dtype)
                          * 2 - 1) * eps
    start = start.clamp(0, 1).detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(model(start), y), start)
    adv = start.detach() + region * 1.25 * eps * grad.sign()
    return torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()


def gradmask(model, x, y, foreground, variant="paper", scale=1.0) -> torch.Tensor:
    """GradMask's saliency penalty (before ``lambda``), differentiable in the parameters;
    ``scale`` multiplies the input gradient (0.5: the gradient in [-1, 1] units of [0, 1]
    images ``x``)."""
    x = x.detach().requires_grad_(True)
    return gradmask_of(model(x), x, y, foreground, variant, scale)


def gradmask_of(logits, x, y, foreground, variant="paper", scale=1.0) -> torch.Tensor:
    """:func:`gradmask` from ``logits`` already computed on ``x`` (which requires grad), so
    that the training step shares one forward pass between cross-entropy and GradMask."""
    if variant == "paper":
        target = logits.gather(1, y[:, None]).sum()
    else:
        target = logits.index_select(1, y).sum()
    grad, = torch.autograd.grad(target, x, create_graph=True)
    if scale != 1.0:
        grad = grad * scale
    outside = (~foreground)[:, None].expand_as(x).to(x.dtype)
    if variant == "paper":
        per_image = (grad.pow(2) * outside).flatten(1).sum(1) / outside.flatten(1).sum(1) \
            .clamp_min(1.0)
        return per_image.mean()
    has_foreground = foreground.flatten(1).any(1)
    if not has_foreground.any():
        return grad.sum() * 0.0
    return (grad[has_foreground] * outside[has_foreground]).pow(2).mean()


def code_logp_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-log(1 - p_y)`` as the authors' code computes it (``cf_logp_code``):
    exponentials shifted by the row maximum, ``log(sum - exp_y + eps) - log(sum + eps)``
    with ``eps`` = 1e-20, so the loss saturates near 46.05 once ``p_y`` rounds to 1; with
    two classes, the cross-entropy to the other class."""
    if logits.shape[1] == 2:
        return F.cross_entropy(logits, 1 - y, reduction="none")
    shifted = torch.exp(logits - logits.max(1, keepdim=True).values)
    total = shifted.sum(1)
    rest = total - shifted[torch.arange(len(y), device=y.device), y]
    return -(torch.log(rest + CODE_LOGP_EPS) - torch.log(total + CODE_LOGP_EPS))


@register
class CounterfactualFactual(Method):
    name = "cff"
    requires = frozenset({"mask"})
    relative_cost = 2.5
    declared_hparams = {
        **optimiser_hparams(1e-3),
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
        "sal_range": HParam("signed", "GradMask's input units: signed (images in [-1, 1], "
                                      "the paper's and the authors') | unit ([0, 1]: 4x)",
                            choices=SAL_RANGES),
        "cf_logp_code": HParam(False, "logp as the authors' code computes it (1e-20 inside "
                                      "the logs: capped near 46.05 once p_y rounds to 1)",
                               authors_code=True),
        "passes": HParam("separate", "separate (originals alone, then CF + F) | joint (one "
                                     "concatenated batch)", choices=PASSES),
        "grad_clip": HParam(0.0, "clip the gradient's L2 norm to this (0: off; the authors' "
                                 "runs: 1.0, Lightning's gradient_clip_val)", 0.0, 1e6,
                            authors_code=True),
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
        # the originals alone (the pass GradMask differentiates), then the CF + F images;
        # or one concatenated pass (passes=joint, without GradMask). GradMask needs the
        # input gradient even where the caller disabled gradients (early stopping's
        # objective)
        with torch.enable_grad() if sal else contextlib.nullcontext():
            if sal or self.hp["passes"] == "separate":
                own = model(x)
                if sal:
                    scale = 0.5 if self.hp["sal_range"] == "signed" else 1.0
                    penalty = gradmask_of(own, x, batch.y, batch.mask,
                                          self.hp["sal_variant"], scale)
                logits = torch.cat([own, model(torch.cat([p[0] for p in parts[1:]]))]) \
                    if len(parts) > 1 else own
            else:
                logits = model(torch.cat([p[0] for p in parts]))
        total, count, stats, start = 0.0, 0, {}, 0
        for _, labels, kind in parts:
            part = logits[start:start + len(labels)]
            start += len(labels)
            if kind == "cf":
                value = (code_logp_loss(part, labels) if self.hp["cf_logp_code"]
                         and self.hp["cf_loss"] == "logp"
                         else counterfactual_loss(part, labels, self.hp["cf_loss"])).sum()
            else:
                value = F.cross_entropy(part, labels, reduction="sum")
            total, count = total + value, count + len(labels)
            if kind != "ce":
                stats[f"loss_{kind}"] = value.item() / max(len(labels), 1)
        loss = total / count
        if sal:
            weighted = self.hp["sal_lambda"] * penalty
            stats["loss_sal"] = penalty.item()
            # the penalty's share of the loss the step minimises
            stats["sal_share"] = weighted.item() / max(loss.item() + weighted.item(), 1e-12)
            loss = loss + weighted
        if training:
            self.steps += 1
        stats["loss"] = loss.item()
        return loss, stats

    def clip_gradients(self):
        """The gradient's L2 norm clipped to ``grad_clip`` when it is set (as the authors'
        runs)."""
        if self.hp["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.networks["model"].parameters(),
                                           self.hp["grad_clip"])

    def predict(self, x):
        return self.networks["model"](x)


@register
class Mixup(Method):
    """Mixup (Zhang et al. 2018), a CF/F baseline: images and labels mixed with
    ``lambda ~ Beta(alpha, alpha)`` against a shuffled copy of the batch."""

    name = "mixup"
    declared_hparams = {
        **optimiser_hparams(1e-3),
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
    declared_hparams = {
        **optimiser_hparams(1e-3),
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
