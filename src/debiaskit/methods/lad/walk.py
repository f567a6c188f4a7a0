"""LAD's quantisation-constrained, entropy-targeted latent walk (LAD, Section 4.2).

Starting from an image's VQ-VAE latent ``h``, each step moves ``h`` along the standardised
gradient of the predictive entropy of the bias classifier ``f`` (Eq. 5-6) and snaps every
latent vector back to its nearest codebook vector (Algorithm 1), so the walk stays on the
VQ-VAE's manifold. Decoding the walked latent gives an image whose easy-to-learn cue no
longer tells ``f`` the class.

The paper contradicts itself twice, and both readings are options:

- Eq. 6 defines the step ``delta`` with the factor ``alpha`` inside; Algorithm 1 then adds
  ``alpha * delta``, i.e. ``alpha`` twice. ``alpha_twice`` chooses; the default (False)
  follows Eq. 6, a step of ``alpha`` standard deviations of the gradient.
- Eq. 5 maximises ``H(f(quantise(h + delta)))``: the perturbation ``delta`` accumulates on
  the continuous latent and ``f`` sees its quantisation (``accumulate=True``). Algorithm 1
  as printed overwrites ``h_delta`` with its quantisation after every step
  (``accumulate=False``): a step too short to reach another code is undone, the next
  gradient is the same, and such a latent never moves.

Beyond the paper, ``target`` walks each latent towards a given class of ``f`` instead of
towards maximal entropy (ascending ``log p_f(target | h)``, standardised as in Eq. 6) and
stops a latent as soon as ``f`` predicts its target. Maximal entropy is one point for
every image of a class that starts from the same cue, so the entropy walk moves a class's
cue largely together (a remap, see :mod:`debiaskit.explain.bias_probe`); random targets
spread each class's cues over the other classes'. (Measured on coloured MNIST, README: no
better than the entropy walk.)
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``H(softmax(logits))`` per sample (nats), the objective of Eq. 5."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


def standardise_per_sample(grad: torch.Tensor, scale: float = 1.0,
                           eps: float = 1e-12) -> torch.Tensor:
    """``scale * (g - mean(g)) / std(g)`` with mean and std over each sample's whole gradient
    (Eq. 6)."""
    centred = grad.flatten(1)
    centred = centred - centred.mean(1, keepdim=True)
    std = centred.norm(dim=1, keepdim=True) / math.sqrt(centred.shape[1] - 1)
    return (centred * (scale / (std + eps))).view_as(grad)


def walk_step(f: Callable, h: torch.Tensor, alpha: float, alpha_twice: bool = False,
              target: torch.Tensor | None = None) -> torch.Tensor:
    """The step ``delta`` at latent ``h`` (Eq. 6; times ``alpha`` again as in Algorithm 1 if
    ``alpha_twice``): up the predictive entropy, or up ``log p_f(target)`` if given."""
    h = h.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = f(h)
        # samples are independent: the gradient of the sum holds the per-sample gradients
        objective = (predictive_entropy(logits) if target is None else
                     torch.log_softmax(logits, 1).gather(1, target[:, None]))
        grad, = torch.autograd.grad(objective.sum(), h)
    return standardise_per_sample(grad, alpha * alpha if alpha_twice else alpha)


def latent_walk(f: Callable, quantize: Callable, h: torch.Tensor, steps: int, alpha: float,
                alpha_twice: bool = False, accumulate: bool = False,
                target: torch.Tensor | None = None, step_scale: float = 1.0,
                on_step: Callable | None = None) -> torch.Tensor:
    """Algorithm 1: ``steps`` entropy-ascent steps, re-quantising after every one.

    ``f`` maps latents (B x D x H x W) to logits, ``quantize`` maps latents to nearest
    codebook vectors. ``accumulate`` adds each step to the continuous latent ``h + delta``
    and takes the gradient at its quantisation (Eq. 5), instead of adding it to the
    quantised ``h_delta`` (Algorithm 1). ``step_scale`` multiplies every step (see
    :func:`spacing_scale`); ``on_step(step, delta, walked)``, if given, sees each step's
    ``delta`` and the re-quantised latent after it (the walk diagnostic records them).
    With ``target`` (one class per latent) the steps ascend ``log p_f(target)`` and a
    latent stops once ``f`` predicts its target. Returns the walked, quantised latent.
    """
    continuous = h.detach()
    walked = quantize(continuous)
    for step in range(steps):
        if target is not None:
            with torch.no_grad():
                moving = (f(walked).argmax(1) != target).view(-1, *[1] * (h.dim() - 1))
            if not moving.any():
                break
        # Algorithm 1 differentiates at h_delta: the walk's start (quantised or not, see
        # LAD's walk_start), then its quantisation
        at = walked if accumulate else continuous
        delta = walk_step(f, at, alpha, alpha_twice, target)
        if step_scale != 1.0:
            delta = delta * step_scale
        if target is not None:  # latents that reached their target stay where they are
            delta = torch.where(moving, delta, torch.zeros_like(delta))
        moved = continuous + delta
        walked = quantize(moved)
        continuous = moved if accumulate else walked
        if on_step is not None:
            on_step(step, delta, walked)
    return walked


def nearest_other_distance(codebook: torch.Tensor) -> torch.Tensor:
    """Per codebook vector (K x D), the Euclidean distance to the nearest other one."""
    dist = torch.cdist(codebook, codebook)
    dist.fill_diagonal_(float("inf"))
    return dist.min(1).values


def spacing_scale(codebook: torch.Tensor, used: torch.Tensor | None = None) -> float:
    """The factor that turns Eq. 6's standardised step (about ``sqrt(D)`` long per latent
    position) into one of about the codebook's spacing: the median distance from a code
    (among ``used`` code indices, if given) to its nearest other code, over ``sqrt(D)``.
    With it, ``alpha`` counts code spacings per step instead of gradient standard
    deviations (LAD's ``alpha_units="spacing"``)."""
    nearest = nearest_other_distance(codebook)
    if used is not None:
        nearest = nearest[used]
    return float(torch.quantile(nearest, 0.5)) / math.sqrt(codebook.shape[1])
