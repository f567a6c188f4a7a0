"""Group DRO's step by hand (Algorithm 1; the module docstring): per-group mean losses with
a one-sample group and an absent one, the exponentiated-gradient update of q, the
returned loss and statistics, absent groups left alone by default even with the
adjustment on, and gradients of an earlier step cleared to None. A hand-set linear model;
nothing is trained."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaskit.data.loader import Batch
from debiaskit.methods.groupdro import group_dro_step

LN2, LN3 = math.log(2.0), math.log(3.0)


def _identity_model() -> nn.Linear:
    """logits = x."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    return model


# s0 (0, 0), y 0: CE ln 2; s1 (0, ln 3), y 0: CE ln 4 -> group 0 (two samples), mean 1.5 ln 2
# s2 (ln 3, 0), y 1: CE ln 4 -> group 1 (one sample); group 2 absent.
BATCH = Batch(x=torch.tensor([[0.0, 0.0], [0.0, LN3], [LN3, 0.0]]), y=torch.tensor([0, 0, 1]),
              index=torch.arange(3))
GROUPS = torch.tensor([0, 0, 1])


def test_one_step_by_hand():
    # eta = 2: q_g *= exp(2 L_g): group 0 by 2^3 = 8, group 1 by 4^2 = 16, group 2 (absent)
    # by 1: (8, 16, 1) / 3, normalised (0.32, 0.64, 0.04). (A one-sample group taken as
    # absent, or its loss halved, would give group 1 a factor 1 or 4.)
    # loss = sum over present groups of q_g L_g = 0.32 * 1.5 ln 2 + 0.64 * 2 ln 2 = 1.76 ln 2
    model = _identity_model()
    q = torch.full((3,), 1 / 3)
    stats = group_dro_step(model, torch.optim.SGD(model.parameters(), lr=0.0), BATCH, GROUPS,
                           q, 2.0)
    torch.testing.assert_close(q, torch.tensor([0.32, 0.64, 0.04]))
    assert stats.keys() == {"loss", "mean_loss", "max_group_weight"}
    assert stats["loss"] == pytest.approx(1.76 * LN2, rel=1e-6)
    assert stats["mean_loss"] == pytest.approx(5 / 3 * LN2, rel=1e-6)   # (ln 2 + 2 ln 4) / 3
    assert stats["max_group_weight"] == pytest.approx(0.64, rel=1e-6)


def test_absent_groups_keep_their_weight_by_default_with_the_adjustment():
    # Algorithm 1 (adjust_absent off by default): with adjustment (0, 0, ln 2 / 2) group 2 is
    # still absent, so its weight stays 1/3 before normalisation; the authors' rule would
    # multiply it by exp(2 * ln 2 / 2) = 2. Groups 0 and 1 as above: q = (0.32, 0.64, 0.04)
    # and the loss leaves the absent group out: 1.76 ln 2.
    model = _identity_model()
    q = torch.full((3,), 1 / 3)
    stats = group_dro_step(model, torch.optim.SGD(model.parameters(), lr=0.0), BATCH, GROUPS,
                           q, 2.0, torch.tensor([0.0, 0.0, LN2 / 2]))
    torch.testing.assert_close(q, torch.tensor([0.32, 0.64, 0.04]))
    assert stats["loss"] == pytest.approx(1.76 * LN2, rel=1e-6)


def test_the_step_clears_old_gradients_to_none():
    # the optimiser may hold a parameter this step does not reach (here `other`, with a
    # gradient left from earlier): cleared to None, SGD skips it; a zeroed gradient would let
    # the weight decay move it (1.0 - 0.1 * 1.0 * 1.0 = 0.9)
    model = _identity_model()
    other = nn.Parameter(torch.ones(1))
    other.grad = torch.zeros(1)
    opt = torch.optim.SGD([*model.parameters(), other], lr=0.1, weight_decay=1.0)
    group_dro_step(model, opt, BATCH, GROUPS, torch.full((3,), 1 / 3), 2.0)
    assert other.item() == 1.0 and other.grad is None


def test_the_step_works_on_the_logits_device_whatever_the_default_device():
    # torch's default device (here meta, standing in for a GPU default) does not decide
    # where the step's tensors live: the same numbers as test_one_step_by_hand, on the CPU
    model = _identity_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    q = torch.full((3,), 1 / 3)
    with torch.device("meta"):
        stats = group_dro_step(model, opt, BATCH, GROUPS, q, 2.0)
    torch.testing.assert_close(q, torch.tensor([0.32, 0.64, 0.04]))
    assert stats["loss"] == pytest.approx(1.76 * LN2, rel=1e-6)
