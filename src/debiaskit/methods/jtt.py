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

Three options reproduce the authors' code (anniesch/jtt) where it differs from the
paper's Algorithm 1 (tests/parity/fixtures/jtt-*): ``error_set_from="training_pass"``
(their error set is the ERM run's logged training-pass predictions of one epoch, not a
pass of the finished identification model), ``upweight_adds_copies`` (they append
lambda_up copies of the error set to the training set, so its samples appear
lambda_up + 1 times) and ``same_init`` (both of their runs build the network after the
same seed, so the final model starts from the identification model's initial weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method, register
from .hparams import HParam, choice, int_uniform, optimiser_hparams


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
    declared_hparams = {
        **optimiser_hparams(1e-3, of="both stages"),
        "identification_epochs": HParam(1, "T: epochs of the ERM identification model", 1, 10_000,
                                        search=int_uniform(1, 5)),
        "upweight": HParam(50, "lambda_up: times each error-set sample appears in stage 2",
                           1, 100_000, search=choice(5, 20, 50, 100)),
        "error_set_from": HParam(
            "model", "the predictions that define the error set: 'model' (the paper: the "
            "identification model after its T epochs, one pass over the training set) or "
            "'training_pass' (JTT's code: the predictions made during the training pass of "
            "the last identification epoch, each before its batch's step; their "
            "--final_epoch K is T = K + 1 here)", choices=("model", "training_pass"),
            authors_code=True),
        "upweight_adds_copies": HParam(
            False, "lambda_up counts added copies: each error-set sample appears lambda_up + 1 "
            "times in stage 2 (JTT's code appends lambda_up copies of the error set); off: "
            "lambda_up times (the paper)", authors_code=True),
        "same_init": HParam(
            False, "the final model starts from the identification model's initial weights "
            "(JTT's code: both runs build their network after the same seed); off: its own "
            "initialisation", authors_code=True),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        for role in ("identifier", "final"):
            self.add_network(role, make_network())
        if self.hp["same_init"]:
            self.networks["final"].load_state_dict(self.networks["identifier"].state_dict())
        self.tables["error_set"] = ErrorSet(spec.num_train, spec.train_targets.device)
        self.logging_errors = False  # in the epoch whose training pass gives the error set

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

    @property
    def copies(self) -> int:
        """Times each error-set sample appears in a stage-2 epoch."""
        return self.hp["upweight"] + int(self.hp["upweight_adds_copies"])

    def begin_epoch(self, epoch, train_loader):
        table, last = self.tables["error_set"], self.hp["identification_epochs"] - 1
        from_pass = self.hp["error_set_from"] == "training_pass"
        self.logging_errors = from_pass and epoch == last and not self.second_stage
        if self.logging_errors:
            table.errors.zero_()
        if epoch <= last:
            return None
        if not self.second_stage:
            if from_pass:
                table.ready.fill_(True)
            else:
                self._find_errors(train_loader)
        errors = table.errors
        everyone = torch.arange(len(errors), device=errors.device)
        extra = torch.nonzero(errors).flatten().repeat(self.copies - 1)
        return torch.cat([everyone, extra])

    def loss(self, batch, training=True):
        role = "final" if self.second_stage else "identifier"
        logits = self.networks[role](batch.x)
        loss = F.cross_entropy(logits, batch.y)
        if training and self.logging_errors:
            self.tables["error_set"].errors[batch.index] = logits.detach().argmax(1) != batch.y
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.networks["final" if self.second_stage else "identifier"](x)

    def auxiliary_predictors(self):
        return {"identifier": self.networks["identifier"]}

    def training_weights(self, train):
        """The error set's copies (lambda_up), 1 for the rest (before the second stage:
        None)."""
        if not self.second_stage:
            return None
        errors = self.tables["error_set"].errors.cpu()
        return torch.where(errors, float(self.copies), 1.0)

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
