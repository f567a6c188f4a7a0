"""GCE and the per-sample EMA table against hand-computed values."""

import math

import pytest
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


def test_defaults_are_lffs_q_and_alpha():
    # LfF: GCE with q = 0.7, EMA with alpha = 0.7. p_y = 1/2: (1 - 0.5 ** 0.7) / 0.7
    gce = generalized_cross_entropy(torch.zeros(1, 2), torch.tensor([0]))
    assert gce.item() == pytest.approx((1 - 0.5 ** 0.7) / 0.7)
    ema = PerSampleEMA(torch.tensor([0]), num_classes=1)
    ema.update(torch.tensor([0]), torch.tensor([2.0]))
    ema.update(torch.tensor([0]), torch.tensor([4.0]))
    # 0.7 x 2 + 0.3 x 4 = 2.6 (an old value of 2, not 1, so that alpha / old differs)
    assert ema.values.item() == pytest.approx(2.6)


def test_ema_buffers_follow_the_targets_device_and_only_the_table_is_saved():
    ema = PerSampleEMA(torch.zeros(3, dtype=torch.long, device="meta"), num_classes=2)
    assert ema.values.device.type == "meta" and ema.seen.device.type == "meta"
    assert ema.class_max().device.type == "meta"
    ema.update(torch.tensor([0]), torch.tensor([1.0]))  # a loss from elsewhere is moved in
    assert ema.values.device.type == "meta"
    cpu = PerSampleEMA(torch.tensor([0, 1, 1]), num_classes=2)
    assert set(cpu.state_dict()) == {"values", "seen"}  # the targets come from the data
    assert cpu.values.dtype == torch.float32 and cpu.class_max().dtype == torch.float32
    # a float64 loss is stored in the float32 table
    cpu.update(torch.tensor([0]), torch.tensor([0.1], dtype=torch.float64))
    assert cpu.values.dtype == torch.float32 and cpu.values[0].item() == pytest.approx(0.1)


def test_relative_difficulty_guards_the_denominator():
    # both EMAs zero (unseen samples): weight 0, not NaN; a tiny CE_B with CE_D zero: 1/2
    w = relative_difficulty(torch.tensor([0.0, 1e-8]), torch.tensor([0.0, 0.0]))
    assert w[0].item() == 0.0 and w[1].item() == pytest.approx(0.5, rel=1e-3)


@pytest.mark.filterwarnings("error")  # log_softmax without dim warns
def test_counterfactual_losses_are_per_sample():
    from debiaskit.losses import counterfactual_loss
    # two samples with different losses, so a mean or sum over the batch differs
    logits = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 1])
    # p = (1/2, 1/4, 1/4) and (1/3, 1/3, 1/3)
    logp = counterfactual_loss(logits, y, "logp")
    assert logp.tolist() == pytest.approx([math.log(2), math.log(3 / 2)])
    uniform = counterfactual_loss(logits, y, "uniform")
    assert uniform.tolist() == pytest.approx([-(math.log(1 / 2) + 2 * math.log(1 / 4)) / 3,
                                              math.log(3)])
    except_y = counterfactual_loss(logits, y, "uniform_except_y")
    assert except_y.tolist() == pytest.approx([math.log(4), math.log(3)])
    with pytest.raises(ValueError, match=r"^unknown counterfactual loss 'kl'; use one of logp, "
                                         r"uniform, uniform_except_y$"):
        counterfactual_loss(logits, y, "kl")
