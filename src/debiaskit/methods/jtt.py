"""Just Train Twice (JTT; Liu et al., ICML 2021), label-free.

Stage 1 trains an identification model with ERM for ``identification_epochs`` epochs;
its misclassified training samples form the error set. Stage 2 trains a fresh model with
ERM on the training set in which every error-set sample appears ``upweight`` times
(lambda_up; JTT upsamples rather than reweighting, and so does this), for the remaining
epochs of the run. The bias labels are never used for training.

JTT selects T and lambda_up on a bias-labelled validation set; with no bias labels (SiH's
setting) the defaults are fixed beforehand and stated: T = 1 (on Colored MNIST the colour
is learnt within the first epoch, so its errors are mostly the conflicting samples) and
lambda_up = 50 (from JTT's search grid). Until stage 2 starts, ``predict`` is the
identification model, so the curves show both stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HParam, Method, choice, int_uniform, register


class ErrorSet(nn.Module):
    """JTT's error set as a bool table over the training set, and whether it is built
    (buffers)."""

    def __init__(self, num_train: int, device=None) -> None:
        super().__init__()
        self.register_buffer("errors", torch.zeros(num_train, dtype=torch.bool, device=device))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool, device=device))


@register
class JTT(Method):
    name = "jtt"
    hparams = {
        "lr": HParam(1e-3, "Adam learning rate of both stages", 0.0, 10.0),
        "weight_decay": HParam(0.0, "Adam weight decay of both stages", 0.0, 1.0),
        "identification_epochs": HParam(1, "T: epochs of the ERM identification model", 1, 10_000,
                                        search=int_uniform(1, 5)),
        "upweight": HParam(50, "lambda_up: times each error-set sample appears in stage 2",
                           1, 100_000, search=choice(5, 20, 50, 100)),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        for role in ("identifier", "final"):
            self.add_network(role, make_network())
        self.tables["error_set"] = ErrorSet(spec.num_train, spec.train_targets.device)

    @property
    def second_stage(self) -> bool:
        return bool(self.tables["error_set"].ready)

    @torch.no_grad()
    def _find_errors(self, train_loader) -> None:
        net, table = self.networks["identifier"], self.tables["error_set"]
        net.eval()
        for batch in train_loader.epoch(0):
            table.errors[batch.index] = net(batch.x).argmax(1) != batch.y
        table.ready.fill_(True)

    def begin_epoch(self, epoch, train_loader):
        if epoch < self.hp["identification_epochs"]:
            return None
        if not self.second_stage:
            self._find_errors(train_loader)
        errors = self.tables["error_set"].errors
        everyone = torch.arange(len(errors), device=errors.device)
        extra = torch.nonzero(errors).flatten().repeat(self.hp["upweight"] - 1)
        return torch.cat([everyone, extra])

    def loss(self, batch, training=True):
        role = "final" if self.second_stage else "identifier"
        loss = F.cross_entropy(self.networks[role](batch.x), batch.y)
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.networks["final" if self.second_stage else "identifier"](x)

    def auxiliary_predictors(self):
        return {"identifier": self.networks["identifier"]}

    def training_weights(self, train):
        """lambda_up for the error set, 1 for the rest (before the second stage: None)."""
        if not self.second_stage:
            return None
        errors = self.tables["error_set"].errors.cpu()
        return torch.where(errors, float(self.hp["upweight"]), 1.0)

    def epoch_stats(self, train):
        """Error-set size, and with bias labels the share of conflicting samples in it and
        the share of conflicting samples it catches (only reported)."""
        if not self.second_stage:
            return {}
        errors = self.tables["error_set"].errors.cpu()
        out = {"error_set_size": float(errors.sum())}
        if train.b is not None:
            conflicting = ~train.aligned
            out["error_set_conflicting_share"] = (
                (errors & conflicting).sum() / errors.sum().clamp_min(1)).item()
            out["conflicting_recall"] = (
                (errors & conflicting).sum() / conflicting.sum().clamp_min(1)).item()
        return out
