"""Saliency focus (CF/F, paper 004, Sec. 4.1; PROTOCOLS.md, CF/F): how much of a model's
saliency falls on the foreground.

- maps: captum's DeepLiftShap (target = the true label, baselines = training images; the
  authors use 20 random ones) or plain input gradients of the target logit;
- pixel score: the L2 norm of the map over the channels (the paper's; the authors' code
  sums the squares, a monotone transform that leaves the AUPR unchanged);
- AUPR: scikit-learn's average precision of the pixel scores against the foreground mask,
  per image, averaged over images; images whose mask is all foreground or all background
  are skipped (as the authors do). A map equal to the mask scores 1.0; a constant map
  scores the image's foreground share.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

SALIENCY_METHODS = ("deeplift_shap", "gradient")


def saliency_maps(model, x: torch.Tensor, y: torch.Tensor, method: str = "deeplift_shap",
                  baselines: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel scores (N x H x W): the L2 norm over channels of the attribution of the
    target logit ``y`` to ``x`` (float images)."""
    if method not in SALIENCY_METHODS:
        raise ConfigError(f"unknown saliency method {method!r}; use one of "
                          f"{', '.join(SALIENCY_METHODS)}")
    was = model.training
    model.train(False)
    x = x.detach().clone()
    try:
        if method == "gradient":
            x.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                attr, = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x)
        else:
            from captum.attr import DeepLiftShap
            if baselines is None or len(baselines) < 2:
                raise ConfigError("DeepLiftShap needs at least two baseline images")
            with torch.enable_grad():
                attr = DeepLiftShap(model).attribute(x, baselines=baselines.detach(), target=y)
    finally:
        model.train(was)
    return attr.detach().pow(2).sum(1).sqrt()


def saliency_aupr(scores: torch.Tensor, masks: torch.Tensor) -> tuple[float, int]:
    """(mean per-image average precision of ``scores`` against ``masks`` (%), images
    scored); images whose mask is all True or all False are skipped."""
    from sklearn.metrics import average_precision_score
    if scores.shape != masks.shape:
        raise ConfigError(f"saliency scores have shape {tuple(scores.shape)}, masks "
                          f"{tuple(masks.shape)}; give one (H, W) mask per map")
    values = []
    for s, m in zip(scores.cpu().double().numpy(), masks.cpu().numpy()):
        if m.all() or not m.any():
            continue
        values.append(average_precision_score(m.ravel(), s.ravel()))
    return (100.0 * float(np.mean(values)) if values else float("nan")), len(values)
