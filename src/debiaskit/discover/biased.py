"""The label-free biased models: a network trained with LfF's generalized cross-entropy
(Eq. 2) on every training image, or with plain cross-entropy and stopped early (JTT's
identification model), and their per-image outputs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader
from ..losses import PerSampleEMA, generalized_cross_entropy
from ..methods.base import adam
from ..models import build_model
from .config import DiscoverConfig
from .selection import separation


@dataclass
class TrainedModel:
    """One trained biased network (eval mode) and what its training recorded per image:
    ``ema``, LfF's moving average of the cross-entropy at each visit (decay ``cfg.ema``);
    ``trajectory``, the cross-entropy at each visit averaged over the epochs trained;
    ``epochs`` trained and, when stopped early, the epoch kept (``stopped_at``, 1-based)
    with the rule's value after every epoch (``rule_by_epoch``)."""

    net: torch.nn.Module
    ema: torch.Tensor
    trajectory: torch.Tensor
    epochs: int
    stopped_at: int | None = None
    rule_by_epoch: list = field(default_factory=list)


def train_model(data: BiasedDataset, cfg: DiscoverConfig, loss: str = "gce", device="cpu",
                epochs: int | None = None, stop_early: bool = False) -> TrainedModel:
    """Train ``cfg.model`` on ``data`` (bias labels never read) for ``epochs`` (default
    ``cfg.epochs``), seeded by ``cfg.seed`` (the same initial weights and batches for
    either loss): ``loss="gce"`` minimises LfF's generalized cross-entropy
    ``(1 - p_y^q) / q`` (Eq. 2), ``"erm"`` the cross-entropy. With ``stop_early``, after
    every epoch each image's cross-entropy is computed and the network of the epoch whose
    cross-entropy has the largest separation (:func:`~.selection.separation`; ties: the
    earlier epoch) is kept."""
    data = data.without_bias()
    epochs = cfg.epochs if epochs is None else epochs
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, data.image_shape, data.num_classes).to(device)
    opt = adam(net, cfg.lr)
    loader = InMemoryLoader(data, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
    ema = PerSampleEMA(data.y.to(device), data.num_classes, cfg.ema)
    total = torch.zeros(len(data), dtype=torch.float64, device=device)
    visits = torch.zeros(len(data), dtype=torch.float64, device=device)
    best, best_eta, rule = None, -1.0, []
    for epoch in range(epochs):
        net.train()
        for batch in loader.epoch(epoch):
            logits = net(batch.x)
            ce = F.cross_entropy(logits, batch.y, reduction="none")
            ema.update(batch.index, ce)
            total.index_add_(0, batch.index, ce.detach().double())
            visits.index_add_(0, batch.index, torch.ones_like(total[batch.index]))
            out = (generalized_cross_entropy(logits, batch.y, cfg.q, ce=ce) if loss == "gce"
                   else ce).mean()
            opt.zero_grad(set_to_none=True)
            out.backward()
            opt.step()
        if stop_early:
            net.eval()
            ce_now = biased_outputs(net, data, False, device)[0]
            eta = separation(ce_now.double().numpy())["eta"]
            rule.append(round(eta, 6))
            if eta > best_eta:
                best, best_eta = (epoch + 1, copy.deepcopy(net.state_dict())), eta
    if stop_early and best is not None:
        net.load_state_dict(best[1])
    net.eval()
    trajectory = (total / visits.clamp_min(1)).float().cpu()
    return TrainedModel(net, ema.values.detach().cpu(), trajectory, epochs,
                        stopped_at=best[0] if stop_early and best else None,
                        rule_by_epoch=rule)


def train_biased_model(data: BiasedDataset, cfg: DiscoverConfig, device="cpu"):
    """Train ``cfg.model`` with GCE (LfF Eq. 2) on ``data`` (bias labels never read);
    returns the network (eval mode) and the per-sample EMA of its cross-entropy."""
    trained = train_model(data, cfg, "gce", device)
    return trained.net, trained.ema


@torch.no_grad()
def biased_outputs(net, data: BiasedDataset, features: bool, device="cpu"):
    """The biased model's cross-entropy, prediction and (if ``features``) penultimate
    features on every image of ``data``, in order."""
    loader = InMemoryLoader(data.without_bias(), 1024, shuffle=False, device=device)
    ce, pred, feats = [], [], []
    for batch in loader.epoch(0):
        f = net.forward_features(batch.x)
        logits = net.forward_head(f)
        ce.append(F.cross_entropy(logits, batch.y, reduction="none").cpu())
        pred.append(logits.argmax(1).cpu())
        if features:
            feats.append(f.float().cpu())
    return torch.cat(ce), torch.cat(pred), (torch.cat(feats) if features else None)


def jtt_scores(ce: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """JTT's order as one score per image: ``error + CE / (1 + CE)``, so every image of
    the error set (score in [1, 2)) comes before every other (in [0, 1)), each part in
    the order of its cross-entropy."""
    ce = np.asarray(ce, dtype=np.float64)
    return np.asarray(errors, dtype=np.float64) + ce / (1.0 + ce)
