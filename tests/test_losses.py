"""GCE and the per-sample EMA table against hand-computed values."""

import math

import torch
import torch.nn.functional as F

from debiaskit.losses import PerSampleEMA, generalized_cross_entropy, relative_difficulty


def test_gce_value_and_gradient():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    p_y = F.softmax(logits, 1)[torch.arange(2), y]
    gce = generalized_cross_entropy(logits, y, q=0.7)
    assert torch.allclose(gce, (1 - p_y ** 0.7) / 0.7)
    # LfF Eq. (2): d GCE / d theta = p_y^q * d CE / d theta
    (g_gce,) = torch.autograd.grad(gce.sum(), logits)
    ce = F.cross_entropy(logits, y, reduction="none")
    (g_ce,) = torch.autograd.grad((ce * p_y.detach() ** 0.7).sum(), logits)
    assert torch.allclose(g_gce, g_ce, atol=1e-6)
    scaled = generalized_cross_entropy(logits, y, q=0.7, code_scale=True)
    assert torch.allclose(scaled, 0.7 * gce)


def test_ema_first_visit_stores_raw_loss_then_averages():
    ema = PerSampleEMA(torch.tensor([0, 0, 1]), num_classes=2, alpha=0.7)
    ema.update(torch.tensor([0, 2]), torch.tensor([1.0, 4.0]))
    assert ema.values.tolist() == [1.0, 0.0, 4.0]
    ema.update(torch.tensor([0]), torch.tensor([2.0]))
    assert math.isclose(ema.values[0].item(), 0.7 * 1.0 + 0.3 * 2.0, rel_tol=1e-6)
    assert ema.class_max().tolist() == [ema.values[0].item(), 4.0]
    norm = ema.normalized(torch.tensor([0, 1, 2]))
    assert torch.allclose(norm, torch.tensor([1.0, 0.0, 1.0]))


def test_relative_difficulty():
    w = relative_difficulty(torch.tensor([0.9, 0.1]), torch.tensor([0.1, 0.9]))
    assert torch.allclose(w, torch.tensor([0.9, 0.1]), atol=1e-6)


def test_relative_difficulty_divides_by_the_sum():
    # inputs that do not add up to 1, so that CE_B alone or CE_B / CE_D differ from Eq. (1)
    w = relative_difficulty(torch.tensor([0.6, 0.2, 0.3]), torch.tensor([0.2, 0.2, 0.9]))
    assert torch.allclose(w, torch.tensor([0.75, 0.5, 0.25]), atol=1e-6)
