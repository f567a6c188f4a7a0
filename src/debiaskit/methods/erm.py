"""Vanilla / ERM: one network, cross-entropy, Adam (the papers' baseline)."""

from __future__ import annotations

import torch.nn.functional as F

from .base import HParam, Method, register


@register
class ERM(Method):
    """Empirical risk minimisation: the "Vanilla" rows of every table."""

    name = "erm"
    hparams = {
        "lr": HParam(1e-3, "Adam learning rate", 0.0, 10.0),
        "weight_decay": HParam(0.0, "Adam weight decay", 0.0, 1.0),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())

    def loss(self, batch, training=True):
        loss = F.cross_entropy(self.networks["model"](batch.x), batch.y)
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.networks["model"](x)
