"""The label-free biased model: a network trained with LfF's generalized cross-entropy
(Eq. 2) on every training image, and its per-image outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader
from ..losses import PerSampleEMA, generalized_cross_entropy
from ..methods.base import adam
from ..models import build_model
from .config import DiscoverConfig


def train_biased_model(data: BiasedDataset, cfg: DiscoverConfig, device="cpu"):
    """Train ``cfg.model`` with GCE (LfF Eq. 2) on ``data`` (bias labels never read);
    returns the network (eval mode) and the per-sample EMA of its cross-entropy."""
    data = data.without_bias()
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, data.image_shape, data.num_classes).to(device)
    opt = adam(net, cfg.lr)
    loader = InMemoryLoader(data, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
    ema = PerSampleEMA(data.y.to(device), data.num_classes, cfg.ema)
    net.train()
    for epoch in range(cfg.epochs):
        for batch in loader.epoch(epoch):
            logits = net(batch.x)
            ce = F.cross_entropy(logits, batch.y, reduction="none")
            ema.update(batch.index, ce)
            loss = generalized_cross_entropy(logits, batch.y, cfg.q, ce=ce).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return net, ema.values.detach().cpu()


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
