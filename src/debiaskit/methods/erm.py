"""Vanilla / ERM: one network, cross-entropy, Adam (the papers' baseline)."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, register
from .hparams import optimiser_hparams


@register
class ERM(Method):
    """Empirical risk minimisation: the "Vanilla" rows of every table."""

    name = "erm"
    compile_step = True
    seed_packable = True
    declared_hparams = {
        **optimiser_hparams(1e-3),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())

    def objective_from_logits(self, batch, logits):
        loss = F.cross_entropy(logits["model"], batch.y)
        return loss, {"loss": loss.detach()}

    def loss(self, batch, training=True):
        loss, stats = self.objective_from_logits(batch, {"model": self.networks["model"](batch.x)})
        return loss, {k: v.item() for k, v in stats.items()}

    def predict(self, x):
        return self.networks["model"](x)
