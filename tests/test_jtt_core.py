"""JTT's objective by hand (docs/methods/sih.md, the module docstring): stage 1 trains the
identification model and, only in the epoch whose training pass defines the error set
(``error_set_from=training_pass``), records its per-sample errors; stage 2 trains the final
model; the logged statistic. Hand-set linear models; nothing is trained."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaskit.data.loader import Batch
from debiaskit.methods.base import DataSpec
from debiaskit.methods.jtt import JTT

LN2, LN3 = math.log(2.0), math.log(3.0)


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _jtt(**hp) -> JTT:
    """Identifier: logits = x; final model: logits = x reversed."""
    method = JTT(DataSpec((1, 1, 2), 2, 3, torch.tensor([0, 1, 0])), _Linear, hp)
    with torch.no_grad():
        method.networks["identifier"].fc.weight.copy_(torch.eye(2))
        method.networks["final"].fc.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        for net in method.networks.values():
            net.fc.bias.zero_()
    return method


# s0 (ln 3, 0), y 0; s1 (ln 3, 0), y 1; s2 (0, 2), y 0.
# identifier: predicts 0, 0, 1 -> errors (F, T, T); CE = ln 4/3, ln 4, ln(1 + e^2)
# final (logits reversed): CE = ln 4, ln 4/3, ln(1 + e^-2)
BATCH = Batch(x=torch.tensor([[LN3, 0.0], [LN3, 0.0], [0.0, 2.0]]).reshape(3, 1, 1, 2),
              y=torch.tensor([0, 1, 0]), index=torch.arange(3))
IDENTIFIER_LOSS = (math.log(4 / 3) + 2 * LN2 + softplus(2.0)) / 3
FINAL_LOSS = (2 * LN2 + math.log(4 / 3) + softplus(-2.0)) / 3


class _Loader:
    def epoch(self, epoch):
        return [BATCH]


def test_stage_one_trains_the_identifier_and_records_no_errors_outside_the_logging_epoch():
    # error_set_from=model (the default): errors come from a pass after stage 1, never from
    # the training objective
    method = _jtt()
    assert method.begin_epoch(0, _Loader()) is None
    loss, stats = method.loss(BATCH)
    assert loss.item() == pytest.approx(IDENTIFIER_LOSS, rel=1e-6)
    assert stats == {"loss": pytest.approx(IDENTIFIER_LOSS, rel=1e-6)}
    assert not method.tables["error_set"].errors.any()


def test_the_logging_epoch_records_each_samples_error():
    # training_pass, T = 1: epoch 0's objective records argmax over the classes != y
    # (F, T, T); the held-out objective (training=False) records nothing
    method = _jtt(error_set_from="training_pass")
    method.begin_epoch(0, _Loader())
    method.loss(BATCH, training=False)
    assert not method.tables["error_set"].errors.any()
    loss, stats = method.loss(BATCH)
    assert method.tables["error_set"].errors.tolist() == [False, True, True]
    assert stats == {"loss": pytest.approx(IDENTIFIER_LOSS, rel=1e-6)}


def test_stage_two_trains_the_final_model():
    # epoch 1 (T = 1) starts stage 2: the objective is the final model's cross-entropy
    method = _jtt()
    method.begin_epoch(1, _Loader())
    assert method.second_stage
    loss, stats = method.loss(BATCH)
    assert loss.item() == pytest.approx(FINAL_LOSS, rel=1e-6)
    assert stats == {"loss": pytest.approx(FINAL_LOSS, rel=1e-6)}


def test_the_stage_two_pool_by_hand_on_the_tables_device():
    # training_pass, T = 1, upweight 3: errors (F, T, T) recorded in epoch 0; epoch 1 draws
    # from every index once plus the errors 3 - 1 more times: [0, 1, 2, 1, 2, 1, 2], on the
    # error table's device whatever torch's default device (here meta, standing in for a GPU)
    method = _jtt(error_set_from="training_pass", upweight=3)
    method.begin_epoch(0, _Loader())
    method.loss(BATCH)
    with torch.device("meta"):
        pool = method.begin_epoch(1, _Loader())
    assert pool.device.type == "cpu"
    assert pool.tolist() == [0, 1, 2, 1, 2, 1, 2]
