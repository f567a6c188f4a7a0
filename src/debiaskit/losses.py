"""Losses and per-sample statistics shared by the methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def generalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7,
                              code_scale: bool = False,
                              ce: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample GCE (Zhang & Sabuncu 2018), ``(1 - p_y^q) / q``; LfF Eq. (2).

    Its gradient is ``p_y^q * grad CE``: samples the model already finds easy get more
    weight, which amplifies the bias. Computed as ``(1 - exp(-q CE)) / q`` (since
    ``p_y = exp(-CE)``), which is stable and reuses the per-sample ``ce`` when given.
    ``code_scale`` multiplies by ``q`` as LfF's code does (docs/methods/lff.md).
    """
    if ce is None:
        ce = F.cross_entropy(logits, y, reduction="none")
    loss = -torch.expm1(-q * ce) / q
    return loss * q if code_scale else loss


class PerSampleEMA(nn.Module):
    """Exponential moving average of a per-sample loss, indexed by dataset index.

    LfF's implementation (docs/methods/lff.md): the table starts at zero, a sample's first
    visit stores its raw loss, later visits ``alpha * old + (1 - alpha) * new``. The table
    (``values``, ``seen``) is buffers, so a method's ``state_dict`` carries it; the targets
    are a non-persistent buffer (they come from the data).
    """

    def __init__(self, targets: torch.Tensor, num_classes: int, alpha: float = 0.7) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.alpha = alpha
        self.register_buffer("targets", targets, persistent=False)
        self.register_buffer("values", torch.zeros(len(targets), device=targets.device))
        self.register_buffer("seen", torch.zeros(len(targets), dtype=torch.bool,
                                                 device=targets.device))

    def update(self, index: torch.Tensor, loss: torch.Tensor) -> None:
        loss = loss.detach().to(self.values.device, self.values.dtype)
        old = self.values[index]
        self.values[index] = torch.where(self.seen[index],
                                         self.alpha * old + (1 - self.alpha) * loss, loss)
        self.seen[index] = True

    def class_max(self) -> torch.Tensor:
        """Maximum EMA loss of each class over the whole table (LfF's normaliser)."""
        out = torch.zeros(self.num_classes, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_reduce_(0, self.targets, self.values, "amax", include_self=True)

    def normalized(self, index: torch.Tensor) -> torch.Tensor:
        """EMA loss at ``index`` divided by its class maximum."""
        peak = self.class_max()[self.targets[index]]
        return self.values[index] / peak.clamp_min(1e-8)


def relative_difficulty(ema_biased: torch.Tensor, ema_debiased: torch.Tensor) -> torch.Tensor:
    """LfF Eq. (1): ``W(x) = CE_B / (CE_B + CE_D)``, from normalised EMA losses, detached."""
    return (ema_biased / (ema_biased + ema_debiased + 1e-8)).detach()


#: the counterfactual losses of CF/F (docs/methods/cff.md, ``cf_loss``)
CF_LOSSES = ("logp", "uniform", "uniform_except_y")


def counterfactual_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "logp") -> torch.Tensor:
    """Per-sample loss that tells a counterfactual image "not ``y``".

    ``logp`` (the paper's L_cf): ``-log(1 - p_y)``, computed as
    ``logsumexp(all logits) - logsumexp(logits without y)`` so that it stays finite as
    ``p_y -> 1``; ``uniform``: cross-entropy to the uniform distribution over all classes;
    ``uniform_except_y``: to the uniform distribution over the classes other than ``y``.
    """
    logits = logits.float()
    not_y = torch.ones_like(logits, dtype=torch.bool).scatter_(1, y[:, None], False)
    if kind == "logp":
        others = logits.masked_fill(~not_y, float("-inf"))
        return torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)
    logp = F.log_softmax(logits, 1)
    if kind == "uniform":
        return -logp.mean(1)
    if kind == "uniform_except_y":
        return -(logp * not_y).sum(1) / not_y.sum(1)
    raise ValueError(f"unknown counterfactual loss {kind!r}; use one of {', '.join(CF_LOSSES)}")
