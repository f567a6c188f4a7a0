"""LAD's quantisation-constrained, entropy-targeted latent walk (paper 000, Section 4.2).

Starting from an image's VQ-VAE latent ``h``, each step moves ``h`` along the standardised
gradient of the predictive entropy of the bias classifier ``f`` (Eq. 5-6) and snaps every
latent vector back to its nearest codebook vector (Algorithm 1), so the walk stays on the
VQ-VAE's manifold. Decoding the walked latent gives an image whose easy-to-learn cue no
longer tells ``f`` the class.

Eq. 6 defines the step ``delta`` with the factor ``alpha`` inside; Algorithm 1 then adds
``alpha * delta``, i.e. ``alpha`` twice. ``alpha_twice`` chooses; the default (False)
follows Eq. 6, a step of ``alpha`` standard deviations of the gradient.
"""

from __future__ import annotations

from typing import Callable

import torch


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``H(softmax(logits))`` per sample (nats), the objective of Eq. 5."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


def standardise_per_sample(grad: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(g - mean(g)) / std(g)`` with mean and std over each sample's whole gradient (Eq. 6)."""
    flat = grad.flatten(1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, keepdim=True)
    return ((flat - mean) / (std + eps)).view_as(grad)


def entropy_step(f: Callable, h: torch.Tensor, alpha: float,
                 alpha_twice: bool = False) -> torch.Tensor:
    """The unquantised update ``h + step`` of one walk step (Eq. 6 / Algorithm 1)."""
    h = h.detach().requires_grad_(True)
    with torch.enable_grad():
        entropy = predictive_entropy(f(h)).sum()  # samples are independent: per-sample grads
        grad, = torch.autograd.grad(entropy, h)
    step = alpha * standardise_per_sample(grad)
    if alpha_twice:
        step = alpha * step
    return h.detach() + step


def latent_walk(f: Callable, quantize: Callable, h: torch.Tensor, steps: int, alpha: float,
                alpha_twice: bool = False) -> torch.Tensor:
    """Algorithm 1: ``steps`` entropy-ascent steps, re-quantising after every one.

    ``f`` maps latents (B x D x H x W) to logits, ``quantize`` maps latents to nearest
    codebook vectors. Returns the walked, quantised latent ``h_delta``.
    """
    h_delta = h.detach()
    for _ in range(steps):
        h_delta = quantize(entropy_step(f, h_delta, alpha, alpha_twice))
    return h_delta
