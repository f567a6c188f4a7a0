"""LfF's core by hand (docs/methods/lff.md): one ``update`` on two hand-set linear models,
its logged losses and weights (Eq. 1, 2) and the Adam step each model takes; gradients
from an earlier step are cleared to None; the biased loss reads the per-sample CE it is
given and takes p_y from the softmax over the class dimension, with and without
``gce_code_scale``. Nothing is trained beyond one step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaskit.data.loader import Batch
from debiaskit.methods.base import DataSpec
from debiaskit.methods.lff import LfF

LN2, LN3 = math.log(2.0), math.log(3.0)
SQRT2 = math.sqrt(2.0)


class _Linear(nn.Module):
    """Flatten, Linear(2, 2); ``unused`` is a parameter no forward pass reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.unused = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.fc(x.flatten(1))


def _lff(**hp) -> LfF:
    """Two class-0 samples x0 = (1, 0), x1 = (0, 1); q = 0.5, Adam lr 0.1.
    Biased model: logits (0, ln 3) on x0, (0, 0) on x1. Debiased: (0, 0) on x0, (0, ln 3) on x1."""
    method = LfF(DataSpec((1, 1, 2), 2, 2, torch.tensor([0, 0])), _Linear,
                 {"q": 0.5, "lr": 0.1, **hp})
    method.pack = False
    with torch.no_grad():
        method.networks["biased"].fc.weight.copy_(torch.tensor([[0.0, 0.0], [LN3, 0.0]]))
        method.networks["debiased"].fc.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, LN3]]))
        for net in method.networks.values():
            net.fc.bias.zero_()
    return method


BATCH = Batch(x=torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 1, 2),
              y=torch.tensor([0, 0]), index=torch.tensor([0, 1]))


def test_one_update_by_hand():
    # CE_B = (ln 4, ln 2), CE_D = (ln 2, ln 4); first visits: the EMAs are these; divided by
    # the class maximum ln 4: (1, 1/2) and (1/2, 1); W = (1 / 1.5, 0.5 / 1.5) = (2/3, 1/3).
    # loss_D = mean(CE_D * W) = (2/3 ln 2 + 1/3 ln 4) / 2 = 2/3 ln 2 = 0.462098
    # (CE_D / W: 3.75 ln 2; the batch-mean CE_D: 0.625 ln 2).
    # GCE_B = (1 - p^q) / q, p = 1/4, 1/2, q = 0.5: 1 and 2 - sqrt 2; mean (3 - sqrt 2) / 2.
    method = _lff()
    stats = method.update(BATCH)
    assert stats.keys() == {"loss_biased", "loss_debiased", "weight_mean"}
    assert stats["loss_biased"] == pytest.approx((3 - SQRT2) / 2, rel=1e-6)
    assert stats["loss_debiased"] == pytest.approx(2 / 3 * LN2, rel=1e-6)
    assert stats["weight_mean"] == pytest.approx(0.5, rel=1e-6)
    # Adam's first step moves every parameter by lr against its gradient's sign. Gradient of
    # loss_D at the logits: (W_i / 2) (softmax - onehot(0)) = (1/3)(-1/2, 1/2) for x0 and
    # (1/6)(-3/4, 3/4) for x1: row 0 negative, row 1 positive, so row 0 goes up by 0.1 and
    # row 1 down. The biased model's GCE gradient has the CE gradient's signs: the same.
    # (Descending loss_B - loss_D would move the debiased model the other way.)
    deb, bia = method.networks["debiased"].fc, method.networks["biased"].fc
    torch.testing.assert_close(deb.weight, torch.tensor([[0.1, 0.1], [-0.1, LN3 - 0.1]]),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(deb.bias, torch.tensor([0.1, -0.1]), rtol=0, atol=1e-6)
    torch.testing.assert_close(bia.weight, torch.tensor([[0.1, 0.1], [LN3 - 0.1, -0.1]]),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(bia.bias, torch.tensor([0.1, -0.1]), rtol=0, atol=1e-6)


def test_update_clears_old_gradients_to_none():
    # a parameter no forward pass reaches, holding a gradient from earlier, is skipped by
    # Adam once its gradient is cleared to None; a zeroed gradient would let the weight decay
    # (0.5 * 1.0 added to the gradient) move it by lr = 0.1
    method = _lff(weight_decay=0.5)
    for net in method.networks.values():
        net.unused.grad = torch.zeros(1)
    method.update(BATCH)
    for net in method.networks.values():
        assert net.unused.item() == 1.0 and net.unused.grad is None


@pytest.mark.parametrize("code_scale", [False, True])
def test_the_biased_loss_reads_the_given_per_sample_ce(code_scale):
    # update computes CE_B once and passes it; the loss is built from that CE, not from the
    # logits again. Logits (0, 0) (CE ln 2 each) with a given CE of (ln 2, ln 4), q = 0.5:
    # GCE = (1 - e^(-q CE)) / q = 2 - sqrt 2 and 1: mean (3 - sqrt 2) / 2 (from the logits:
    # 2 - sqrt 2); code scale: mean(CE * p_y^q * q) with p_y = 1/2: 1.5 ln 2 / sqrt 2 * 0.5
    method = _lff(gce_code_scale=code_scale)
    logits = torch.zeros(2, 2)
    ce = torch.tensor([LN2, 2 * LN2])
    got = method.biased_loss(logits, torch.tensor([0, 0]), ce).item()
    expected = 1.5 * LN2 / SQRT2 * 0.5 if code_scale else (3 - SQRT2) / 2
    assert got == pytest.approx(expected, rel=1e-6)


def test_the_code_scale_surrogate_takes_p_y_over_the_class_dimension():
    # per-position logits (N, C, K) = (2, 2, 1): p_y is the softmax over dim 1 (the classes):
    # (0, ln 3) -> 1/4, (0, 0) -> 1/2; CE = (ln 4, ln 2); q = 0.5:
    # mean(CE * p_y^q * q) = (ln 4 * 1/2 * 1/2 + ln 2 / sqrt 2 * 1/2) / 2
    # (a softmax over dim 0, the batch, would give p_y = 1/2 for both)
    method = _lff(gce_code_scale=True)
    logits = torch.tensor([[[0.0], [LN3]], [[0.0], [0.0]]])
    y = torch.zeros(2, 1, dtype=torch.long)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    got = method.biased_loss(logits, y, ce).item()
    assert got == pytest.approx((2 * LN2 * 0.25 + LN2 / SQRT2 * 0.5) / 2, rel=1e-6)
