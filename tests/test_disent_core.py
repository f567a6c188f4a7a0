"""DisEnt's core by hand (docs/methods/sih.md, the module docstring): L_dis (Eq. 2) with the
EMA relative difficulty normalised per class, the held-out objective's instantaneous
weight, L_swap (Eq. 3) on a known permutation and the objective L_dis + lambda_swap
L_swap (Eq. 4), when swapping starts, the statistics, and the step counter of ``update``.
Encoders and classifiers are hand-set; nothing is trained."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaskit.data.loader import Batch
from debiaskit.methods.base import DataSpec
from debiaskit.methods.disent import DisEnt
from debiaskit.models import NetworkFactory

LN2, LN3 = math.log(2.0), math.log(3.0)
SQRT2 = math.sqrt(2.0)


class _Take(nn.Module):
    """An encoder whose feature is input value ``i`` (dim 1)."""

    def __init__(self, i: int) -> None:
        super().__init__()
        self.i = i

    def forward(self, x):
        return x.flatten(1)[:, self.i:self.i + 1]


def _disent(**hp) -> DisEnt:
    """Three class-0 training samples; z_i = x[0], z_b = x[1]; C_i logits (0, z_i + z_b),
    C_b logits (0, z_b); q = 0.5, lambda_dis 2, lambda_swap_b 3, lambda_swap 0.5.
    Sample 2 (not in the batch) has been seen once with CE_b = 4 ln 2 and CE_i = 2 ln 2,
    so the class maxima are 4 ln 2 (bias) and 2 ln 2 (intrinsic)."""
    spec = DataSpec((1, 1, 2), 2, 3, torch.tensor([0, 0, 0]))
    method = DisEnt(spec, NetworkFactory("mlp", (1, 1, 2), 2, {"hidden": 2, "feature_dim": 1}),
                    {"q": 0.5, "lambda_dis": 2.0, "lambda_swap_b": 3.0, "lambda_swap": 0.5,
                     **hp})
    method.pack = False
    method.networks["intrinsic"]["encoder"] = _Take(0)
    method.networks["bias"]["encoder"] = _Take(1)
    with torch.no_grad():
        method.networks["intrinsic"]["classifier"].weight.copy_(
            torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        method.networks["bias"]["classifier"].weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
        method.networks["intrinsic"]["classifier"].bias.zero_()
        method.networks["bias"]["classifier"].bias.zero_()
    method.tables["bias"].update(torch.tensor([2]), torch.tensor([4 * LN2]))
    method.tables["intrinsic"].update(torch.tensor([2]), torch.tensor([2 * LN2]))
    return method


# s0: (z_i, z_b) = (ln 3, 0): C_i logits (0, ln 3): CE_i = ln 4; C_b logits (0, 0): CE_b = ln 2
# s1: (-ln 3, ln 3): C_i logits (0, 0): CE_i = ln 2; C_b logits (0, ln 3): CE_b = ln 4
BATCH = Batch(x=torch.tensor([[LN3, 0.0], [-LN3, LN3]]).reshape(2, 1, 1, 2),
              y=torch.tensor([0, 0]), index=torch.tensor([0, 1]))
# GCE_b = (1 - p^q) / q with p = 1/2, 1/4 and q = 0.5: 2 - sqrt 2 and 1; mean (3 - sqrt 2) / 2
GCE_B = (3 - SQRT2) / 2
# EMA weights: CE_b / 4 ln 2 = (1/4, 1/2), CE_i / 2 ln 2 = (1, 1/2): W = (0.2, 0.5)
# L_dis = mean(W * CE_i) + 2 GCE_b = (0.2 * 2 ln 2 + 0.5 ln 2) / 2 + 2 GCE_b = 1.897703
LOSS_DIS = 0.45 * LN2 + 2 * GCE_B


def test_l_dis_with_the_ema_weights_by_hand():
    # the default objective is the training one: it updates the EMA tables
    method = _disent()
    loss, stats = method.loss(BATCH)
    assert loss.item() == pytest.approx(LOSS_DIS, rel=1e-6)
    assert stats.keys() == {"loss_dis", "weight_mean", "loss"}
    assert stats["loss_dis"] == pytest.approx(LOSS_DIS, rel=1e-6)
    assert stats["loss"] == pytest.approx(LOSS_DIS, rel=1e-6)
    assert stats["weight_mean"] == pytest.approx(0.35, rel=1e-6)   # (0.2 + 0.5) / 2
    torch.testing.assert_close(method.tables["intrinsic"].values,
                               torch.tensor([2 * LN2, LN2, 2 * LN2]))
    torch.testing.assert_close(method.tables["bias"].values, torch.tensor([LN2, 2 * LN2, 4 * LN2]))


def test_the_held_out_objective_weights_by_the_batch_losses_and_keeps_the_tables():
    # training=False: W = CE_b / (CE_b + CE_i) = (ln 2 / 3 ln 2, 2 ln 2 / 3 ln 2) = (1/3, 2/3)
    # (the EMA weights would give 0.2, 0.5); L_dis = (2/3 ln 2 + 2/3 ln 2) / 2 + 2 GCE_b
    method = _disent()
    before = {k: t.values.clone() for k, t in method.tables.items()}
    loss, stats = method.loss(BATCH, training=False)
    expected = 2 / 3 * LN2 + 2 * GCE_B
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["weight_mean"] == pytest.approx(0.5, rel=1e-6)
    for key, table in method.tables.items():
        assert torch.equal(table.values, before[key])


class _Flip:
    """torch.randperm stand-in: the reversed order, recording the device asked for."""

    def __init__(self) -> None:
        self.devices = []

    def __call__(self, n, *, device=None, **kw):
        self.devices.append(device)
        return torch.arange(n - 1, -1, -1, device=device)


def test_the_swap_objective_by_hand(monkeypatch):
    # permutation (1, 0): z_b' = (ln 3, 0). C_i on [z_i, z_b']: logits (0, 2 ln 3), (0, -ln 3):
    # CE = ln 10, ln 4/3, weighted by W = (0.2, 0.5): (0.2 ln 10 + 0.5 ln 4/3) / 2.
    # C_b on z_b' with y' = (0, 0): p = 1/4, 1/2: GCE 1 and 2 - sqrt 2 (mean GCE_B again).
    # L_swap = that + 3 GCE_b = 2.680859; loss = L_dis + 0.5 L_swap = 3.238132
    flip = _Flip()
    monkeypatch.setattr(torch, "randperm", flip)
    method = _disent(swap_start=0)
    method.steps.fill_(1)
    loss, stats = method.loss(BATCH)
    loss_swap = (0.2 * math.log(10.0) + 0.5 * math.log(4 / 3)) / 2 + 3 * GCE_B
    assert stats.keys() == {"loss_dis", "weight_mean", "loss_swap", "loss"}
    assert stats["loss_dis"] == pytest.approx(LOSS_DIS, rel=1e-6)
    assert stats["loss_swap"] == pytest.approx(loss_swap, rel=1e-6)
    assert stats["loss"] == pytest.approx(LOSS_DIS + 0.5 * loss_swap, rel=1e-6)
    assert loss.item() == pytest.approx(LOSS_DIS + 0.5 * loss_swap, rel=1e-6)
    # the permutation is drawn on the batch's device (on a GPU: that device's generator)
    assert flip.devices == [BATCH.y.device]


@pytest.mark.parametrize("steps, swaps", [(4, False), (5, True)])
def test_swapping_starts_once_more_than_swap_start_steps_are_done(monkeypatch, steps, swaps):
    # the authors' `step > curr_step`: at exactly swap_start steps there is no swap yet
    monkeypatch.setattr(torch, "randperm", _Flip())
    method = _disent(swap_start=4)
    method.steps.fill_(steps)
    loss, stats = method.loss(BATCH)
    assert ("loss_swap" in stats) == swaps
    if not swaps:
        assert loss.item() == pytest.approx(LOSS_DIS, rel=1e-6)


def test_update_returns_the_objectives_statistics_and_counts_steps():
    method = _disent()
    stats = method.update(BATCH)
    # the statistics of the objective before the step (the EMA weights, as above)
    assert stats["loss_dis"] == pytest.approx(LOSS_DIS, rel=1e-6)
    assert stats["weight_mean"] == pytest.approx(0.35, rel=1e-6)
    assert int(method.steps) == 1
    method.update(BATCH)
    assert int(method.steps) == 2
