"""Vanilla / ERM: one network, cross-entropy, Adam (the papers' baseline)."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, register
from .hparams import optimiser_hparams


@register
class ERM(Method):
    """Empirical risk minimisation: the "Vanilla" rows of every table."""

    name = "erm"
    declared_hparams = {
        **optimiser_hparams(1e-3),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())

    def loss(self, batch, training=True):
        loss = F.cross_entropy(self.networks["model"](batch.x), batch.y)
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.networks["model"](x)
