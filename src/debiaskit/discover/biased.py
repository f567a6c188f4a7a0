"""The label-free biased models: a network trained with LfF's generalized cross-entropy
(Eq. 2) on every training image, or with plain cross-entropy and stopped early (JTT's
identification model), a bias-amplified ensemble trained without the images a first
ensemble finds most likely conflicting, and their per-image outputs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

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


def key_then_ce(key: np.ndarray, ce: np.ndarray, step: float) -> np.ndarray:
    """One score per image ordering by ``key`` first and the cross-entropy second:
    ``key + step * CE / (1 + CE)``, whose second term is below ``step``, so an image never
    passes one of a ``key`` at least ``step`` higher."""
    ce = np.asarray(ce, dtype=np.float64)
    return np.asarray(key, dtype=np.float64) + step * ce / (1.0 + ce)


def jtt_scores(ce: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """JTT's order as one score per image: ``error + CE / (1 + CE)``, so every image of
    the error set (score in [1, 2)) comes before every other (in [0, 1)), each part in
    the order of its cross-entropy."""
    return key_then_ce(errors, ce, 1.0)


def knn_scores(disagreement: np.ndarray, ce: np.ndarray, k: int) -> np.ndarray:
    """The ``knn`` ranking's score: the neighbours' disagreement (a multiple of ``1/k``)
    plus ``CE / (1 + CE) / (2k)``, so images of equal disagreement are ordered by the
    cross-entropy and never pass one of higher disagreement."""
    return key_then_ce(disagreement, ce, 1.0 / (2.0 * k))


@dataclass
class AmplifiedModel:
    """The bias-amplified ensemble of :func:`train_amplified`: per training image the
    cross-entropy of the ensemble's mean probability (``scores``) and its prediction; the
    first network of the second stage (``net``, eval mode, for the clusters and the
    attribution maps); the images left out of the second stage (``dropped``, bool per
    image) and what was trained (``info``)."""

    net: torch.nn.Module
    scores: np.ndarray
    predictions: np.ndarray
    dropped: np.ndarray
    info: dict


@torch.no_grad()
def mean_probabilities(nets, data: BiasedDataset, device="cpu") -> torch.Tensor:
    """The softmax probabilities of ``nets`` (eval mode) on every image of ``data``, in
    order, averaged over the networks (N x C, float64)."""
    loader = InMemoryLoader(data.without_bias(), 1024, shuffle=False, device=device)
    total = None
    for net in nets:
        probs = torch.cat([F.softmax(net(batch.x).float(), 1).double().cpu()
                           for batch in loader.epoch(0)])
        total = probs if total is None else total + probs
    return total / len(nets)


def ensemble_cross_entropy(probs: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``-log`` of the (mean) probability of each image's class, ``probs`` N x C."""
    p = probs.gather(1, y.view(-1, 1).long()).squeeze(1).clamp_min(1e-12)
    return (-p.log()).numpy()


def top_share_per_class(scores: np.ndarray, y: np.ndarray, share: float) -> np.ndarray:
    """Bool per image: within each class, the ``round(share * n_class)`` images of highest
    score (ties: the earlier image first)."""
    out = np.zeros(len(scores), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = int(round(share * len(members)))
        if take:
            order = members[np.argsort(-scores[members], kind="stable")]
            out[order[:take]] = True
    return out


def train_amplified(data: BiasedDataset, cfg: DiscoverConfig, device="cpu",
                    first: TrainedModel | None = None) -> AmplifiedModel:
    """Bias amplification by leaving the likely conflicting images out (as BiasEnsemble,
    Lee et al. 2023, trains its biased model only on the images its committee finds
    bias-aligned). Stage 1: ``cfg.ensemble`` GCE models (:func:`train_model`, ``cfg.epochs``
    epochs, seeds ``cfg.seed``, ``cfg.seed + 1``, ...; ``first``, if given, is the one of
    seed ``cfg.seed``) score every image by ``-log`` of their mean ``p_y``. Within each
    class the ``cfg.amplify_drop`` share of highest score is left out. Stage 2:
    ``cfg.ensemble`` GCE models trained for ``cfg.amplify_epochs`` epochs on the rest,
    which then holds few conflicting images to fit, so the shortcut is all they need;
    every training image is scored by ``-log`` of their mean ``p_y``, so the left-out
    images are scored by models that never saw them. Bias labels are never read."""
    y = data.y
    stage1 = [first.net] if first is not None else []
    for i in range(len(stage1), cfg.ensemble):
        stage1.append(train_model(data, replace(cfg, seed=cfg.seed + i), "gce", device).net)
    first_scores = ensemble_cross_entropy(mean_probabilities(stage1, data, device), y)
    dropped = top_share_per_class(first_scores, y.numpy(), cfg.amplify_drop)
    kept = data.subset(torch.from_numpy(np.flatnonzero(~dropped)))
    stage2 = [train_model(kept, replace(cfg, seed=cfg.seed + i), "gce", device,
                          epochs=cfg.amplify_epochs).net for i in range(cfg.ensemble)]
    probs = mean_probabilities(stage2, data, device)
    info = {"epochs": cfg.amplify_epochs, "stage1_epochs": cfg.epochs,
            "ensemble": cfg.ensemble, "dropped": int(dropped.sum())}
    return AmplifiedModel(stage2[0], ensemble_cross_entropy(probs, y),
                          probs.argmax(1).numpy(), dropped, info)


def neighbour_disagreement(features: torch.Tensor, y: torch.Tensor, k: int,
                           chunk: int = 4096) -> np.ndarray:
    """Per image, the share of its ``k`` nearest other images (cosine similarity of
    ``features``, N x D; exact ties as ``torch.topk`` breaks them) whose class differs
    from its own: a k-nearest-neighbour check of the labels in the biased model's feature
    space (as the deep k-NN filter of noisy labels, Bahri et al. 2020). An image that goes
    against the
    shortcut sits among images of the class the shortcut points to; an aligned image
    the model gets wrong for another reason sits among images of its own class. ``k`` is
    cut to N - 1."""
    f = F.normalize(features.float(), dim=1)
    y = y.long()
    n = len(f)
    k = min(k, n - 1)
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        sim = f[start:start + chunk] @ f.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -float("inf")
        near = sim.topk(k, dim=1).indices
        out[start:start + chunk] = (y[near] != y[start:start + chunk, None]).double().mean(1)
    return out.numpy()
