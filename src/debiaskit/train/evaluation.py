"""What a run measures after an epoch: metrics of every predictor on every split, the
method's objective on the held-out split, and the number each selection policy maximises."""

from __future__ import annotations

import torch

from ..data.loader import InMemoryLoader
from ..metrics import classification_metrics
from ..precision import arithmetic as precision_context
from .config import RunConfig

#: Evaluation batch size (large enough to amortise per-batch overhead, small enough for cache).
EVAL_BATCH = 1024


def arithmetic(cfg: RunConfig) -> torch.autocast:
    """The autocast context of ``cfg.precision`` (:func:`debiaskit.precision.arithmetic`)."""
    return precision_context(cfg.precision, cfg.device)


@torch.no_grad()
def evaluate(predictors: dict, loader: InMemoryLoader) -> dict:
    """Metrics of every predictor (name -> logits function of a batch) on ``loader``'s
    whole dataset, in one pass over the data. (``no_grad``, not ``inference_mode``: GBA's
    test-time mask takes a gradient inside ``enable_grad``.)"""
    preds = {name: [] for name in predictors}
    for batch in loader.epoch(0):
        for name, predict in predictors.items():
            confidence, pred = predict(batch).float().softmax(1).max(1)
            preds[name].append((pred, confidence))
    ds = loader.dataset  # (its labels are on the CPU: the predictions join them there)
    return {name: classification_metrics(torch.cat([p for p, _ in out]).cpu(), ds.y, ds.b,
                                         ds.num_classes, ds.num_bias, ds.aligned_bias,
                                         torch.cat([c for _, c in out]).cpu())
            for name, out in preds.items()}


@torch.no_grad()
def heldout_objective(method, loader: InMemoryLoader) -> float:
    """Mean of the method's training objective over ``loader``'s data, changing no state."""
    total = 0.0
    for batch in loader.epoch(0):
        total += method.loss(batch, training=False)[0].item() * len(batch.y)
    return total / len(loader.dataset)


def selection_score(cfg: RunConfig, evals: dict, objective: float | None) -> float | None:
    """The number the policy maximises for this epoch (None for "last")."""
    if cfg.selection == "last":
        return None
    if cfg.selection == "early_stop":
        return -objective
    if cfg.selection == "heldout":
        return evals["val"]["accuracy"]
    if cfg.selection == "worst_group":
        return evals["val"]["worst_group"]
    test = next(k for k in evals if k not in ("val", "val_mixed"))
    return evals[test].get("unbiased", evals[test]["accuracy"])
