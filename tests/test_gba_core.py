"""GBA's core by hand (docs/methods/gba.md): the gradient reversal's default scale, the mask
rules' dtype and error message, D's mode while the mask gradient is taken, the rule ``none``
without D, GBA's loss, its statistics and its gradient at the features term by term on
hand-set F, C and D, and the Domain-Independent classifier's loss statistics and error
messages. Every network is hand-set; nothing is trained."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaskit.data.loader import Batch
from debiaskit.errors import ConfigError
from debiaskit.methods import METHODS, DataSpec
from debiaskit.methods.gba import gba_mask, reverse_gradient
from debiaskit.models import NetworkFactory
from checks import FixedLogits  # tests/ is on sys.path


def softplus(z: float) -> float:
    """ln(1 + e^z): the cross-entropy of a two-class logit pair whose other logit leads the
    target's by z."""
    return math.log1p(math.exp(z))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# --- the reversal layer and the mask rules ----------------------------------------------

def test_reverse_gradient_defaults_to_scale_one():
    # identity forward, gradient times -1 backward when no scale is given
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x)
    y.backward(torch.tensor([0.5, 2.0, -4.0]))
    assert x.grad.tolist() == [-0.5, -2.0, 4.0]


@pytest.mark.parametrize("rule, correct, expected", [
    # gba: right -> drop g > 0, wrong -> drop g < 0; g = 0 kept
    ("gba", [True, False], [[0, 1, 1], [1, 0, 1]]),
    # no correctness given: D taken as right (the gba_n rule)
    ("gba", None, [[0, 1, 1], [0, 1, 1]]),
    ("gba_n", [True, False], [[0, 1, 1], [0, 1, 1]]),
    # gba_c: drop g > 0 where D is right, keep everything where it is wrong
    ("gba_c", [True, False], [[0, 1, 1], [1, 1, 1]]),
])
def test_the_mask_is_a_float_tensor_of_the_gradients_dtype(rule, correct, expected):
    # a bool mask would compare equal in .tolist(); the dtype itself is part of the contract
    # (the mask multiplies float64 features without promotion)
    grad = torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 0.0]], dtype=torch.float64)
    mask = gba_mask(grad, None if correct is None else torch.tensor(correct), rule)
    assert mask.dtype == torch.float64
    assert torch.equal(mask, torch.tensor(expected, dtype=torch.float64))


def test_an_unknown_mask_rule_is_a_config_error_naming_the_rules():
    with pytest.raises(ConfigError, match=r"^unknown GBA mask rule 'random'; use one of "
                                          r"gba, gba_n, gba_c, none$"):
        gba_mask(torch.ones(1, 3), torch.tensor([True]), "random")


# --- GBA on hand-set networks ---------------------------------------------------------

class _GivenFeatures(nn.Module):
    """F(x) = the first three input values (hand-set features)."""

    def forward_features(self, x):
        return x.flatten(1)[:, :3]


W_D = [[1.0, -2.0, 0.0], [-1.0, 3.0, 0.5]]   # D = one linear layer: grad of logit k is W_D[k]


def _gba(**hp):
    spec = DataSpec(input_shape=(1, 2, 2), num_classes=2, num_train=4,
                    train_targets=torch.tensor([0, 1, 0, 1]), num_bias=2,
                    train_bias=torch.tensor([0, 1, 1, 0]))
    method = METHODS["gba"](spec, NetworkFactory("mlp", (1, 2, 2), 2, {"hidden": 3}),
                            {"disc_layers": 0, **hp})
    method.networks["features"] = _GivenFeatures()
    with torch.no_grad():
        method.networks["discriminator"][0].weight.copy_(torch.tensor(W_D))
        method.networks["discriminator"][0].bias.zero_()
        # C: logits (f0 + 0.5, f1)
        method.networks["classifier"][0].weight.copy_(
            torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        method.networks["classifier"][0].bias.copy_(torch.tensor([0.5, 0.0]))
    return method


# three samples: f = (2, 0, 0), (0, 1, 0), (1, 0, 0); D's logits (2, -2), (-2, 3), (1, -1),
# so D says 0, 1, 0; with b = 0 everywhere D is right, wrong, right.
X = torch.tensor([[2.0, 0.0, 0.0, 9.0], [0.0, 1.0, 0.0, 9.0],
                  [1.0, 0.0, 0.0, 9.0]]).reshape(3, 1, 2, 2)
Y = torch.tensor([0, 1, 1])
B = torch.tensor([0, 0, 0])


def test_gba_loss_and_statistics_by_hand():
    # masks (Eq. 7): s1 right, g = W_D[0] = (1, -2, 0): drop g > 0 -> (0, 1, 1);
    # s2 wrong, g = W_D[1] = (-1, 3, .5): drop g < 0 -> (0, 1, 1); s3 right -> (0, 1, 1).
    # C sees f * a = (0, 0, 0), (0, 1, 0), (0, 0, 0): logits (.5, 0), (.5, 1), (.5, 0)
    # L_c = mean(ln(1 + e^-.5) [y 0], ln(1 + e^-.5) [y 1], ln(1 + e^.5) [y 1]) = 0.640744
    # D sees the raw f: L_d = mean(ln(1 + e^-4), ln(1 + e^5), ln(1 + e^-2)) = 1.717264
    # (with b = None, i.e. D taken as right, s2's mask would be (1, 0, 0) and its C logits
    # (.5, 0): L_c = 0.807410)
    method = _gba()
    loss, stats = method.loss(Batch(x=X, y=Y, index=torch.arange(3), b=B))
    loss_c = (2 * softplus(-0.5) + softplus(0.5)) / 3
    loss_d = (softplus(-4.0) + softplus(5.0) + softplus(-2.0)) / 3
    assert loss.item() == pytest.approx(loss_c + loss_d, rel=1e-6)   # 2.358008, not L_c - L_d
    assert stats.keys() == {"loss", "loss_disc", "disc_accuracy", "masked"}
    assert stats["loss"] == pytest.approx(loss_c, rel=1e-6)
    assert stats["loss_disc"] == pytest.approx(loss_d, rel=1e-6)
    assert stats["disc_accuracy"] == pytest.approx(2 / 3)   # D right on s1 and s3
    assert stats["masked"] == pytest.approx(1 / 3)          # 3 of 9 features dropped


def test_d_on_masked_features_by_hand():
    # disc_features=masked: D sees f * a = (0, 0, 0), (0, 1, 0), (0, 0, 0): logits (0, 0),
    # (-2, 3), (0, 0): L_d = (ln 2 + ln(1 + e^5) + ln 2) / 3 = 2.131003
    method = _gba(disc_features="masked")
    loss, stats = method.loss(Batch(x=X, y=Y, index=torch.arange(3), b=B))
    loss_d = (2 * math.log(2.0) + softplus(5.0)) / 3
    assert stats["loss_disc"] == pytest.approx(loss_d, rel=1e-6)
    assert loss.item() == pytest.approx((2 * softplus(-0.5) + softplus(0.5)) / 3 + loss_d,
                                        rel=1e-6)


@pytest.mark.parametrize("reversal, lambda_adv, schedule", [
    ("features", 0.1, "constant"), ("features", 0.5, "constant"),
    ("features", 0.5, "dann"), ("none", 0.5, "constant"),
])
def test_the_reversed_gradient_at_a_masked_feature_by_hand(reversal, lambda_adv, schedule):
    # Feature 0 is masked on every sample, so C's gradient there is zero and all of it is
    # D's, reversed and scaled by lambda: d(L_d)/d f_i0 = (1/3) sum_k W_D[k][0] (p_ik - [k = b])
    # = (1/3) (p_i0 - 1 - p_i1) = -(2/3) p_i1 with b = 0; p_i1 = sigmoid(-4), sigmoid(5),
    # sigmoid(-2). The gradient at f_i0 is then +lambda (2/3) p_i1; none with reversal=none
    # (D learns on detached features). dann at progress 0.5: lambda * (2/(1 + e^-5) - 1).
    method = _gba(lambda_adv=lambda_adv, lambda_schedule=schedule, reversal=reversal)
    method.progress.fill_(0.5)
    lam = lambda_adv * (2 / (1 + math.exp(-5.0)) - 1 if schedule == "dann" else 1.0)
    x = X.clone().requires_grad_(True)
    loss, _ = method.loss(Batch(x=x, y=Y, index=torch.arange(3), b=B))
    loss.backward()
    got = x.grad.flatten(1)[:, 0]
    p1 = torch.tensor([sigmoid(-4.0), sigmoid(5.0), sigmoid(-2.0)])
    expected = lam * 2 / 3 * p1 if reversal == "features" else torch.zeros(3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
    if reversal == "none":   # the forward pass is the same: same loss as with the reversal
        ref, _ = _gba(lambda_adv=lambda_adv).loss(Batch(x=X, y=Y, index=torch.arange(3), b=B))
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


class _ModeDependentD(nn.Module):
    """A discriminator whose weights depend on its mode: W_D in eval, -W_D in train."""

    def forward(self, f):
        w = torch.tensor(W_D)
        return f @ (-w if self.training else w).t()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_mask_gradient_is_taken_in_mask_disc_mode(mode):
    # eval: W_D, D right / wrong on s1 / s2 -> masks (0, 1, 1), (0, 1, 1) (as above).
    # train: -W_D: s1 logits (-2, 2), D says 1, wrong, g = -W_D[1] = (1, -3, -.5): drop g < 0
    # -> (1, 0, 0); s2 logits (2, -3), D says 0, right, g = -W_D[0] = (-1, 2, 0): drop g > 0
    # -> (1, 0, 1). D's own mode is restored afterwards.
    method = _gba(mask_disc_mode=mode)
    method.networks["discriminator"] = _ModeDependentD()
    method.train(True)
    f = X.flatten(1)[:2, :3]
    a = method.mask(f, B[:2], "gba")
    assert a.tolist() == ([[0, 1, 1], [0, 1, 1]] if mode == "eval"
                          else [[1, 0, 0], [1, 0, 1]])
    assert method.networks["discriminator"].training


def test_the_mask_has_the_features_dtype():
    # D works in float32; the mask it returns multiplies float64 features as float64
    method = _gba()
    a = method.mask(X.flatten(1)[:2, :3].double(), B[:2], "gba")
    assert a.dtype == torch.float64
    assert torch.equal(a, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64))


def test_the_rule_none_keeps_every_feature_without_running_d():
    # the Adversarial baseline: ones of f's shape and dtype, D never consulted
    method = _gba()
    calls = []
    method.networks["discriminator"].register_forward_hook(lambda *_: calls.append(1))
    f = torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64)
    a = method.mask(f, torch.tensor([1]), "none")
    assert torch.equal(a, torch.ones(1, 3, dtype=torch.float64)) and calls == []


def test_the_oracle_test_mask_without_labels_is_a_one_line_error():
    method = _gba(test_mask="label")
    with pytest.raises(ConfigError, match=r"^gba\.test_mask=label needs bias labels on the "
                                          r"evaluation data; use test_mask=none or predicted$"):
        method.predict(X)


# --- Domain-Independent -----------------------------------------------------------------

def _domain_independent(**hp):
    spec = DataSpec(input_shape=(1, 2, 2), num_classes=2, num_train=2,
                    train_targets=torch.tensor([0, 1]), num_bias=2,
                    train_bias=torch.tensor([0, 1]))
    method = METHODS["domain_independent"](spec, NetworkFactory("mlp", (1, 2, 2), 2), hp)
    # domain 0 logits (0, 0), domain 1 logits (ln 3, 0)
    method.networks["model"] = FixedLogits(torch.tensor([[0.0, 0.0, math.log(3.0), 0.0]]))
    return method


def test_domain_independent_loss_and_its_statistic_by_hand():
    # sample 1 (b 0, y 0): softmax (1/2, 1/2): CE ln 2; sample 2 (b 1, y 1): softmax
    # (3/4, 1/4): CE ln 4; mean 1.5 ln 2 = 1.039721
    method = _domain_independent()
    batch = Batch(x=torch.zeros(2, 1, 2, 2), y=torch.tensor([0, 1]), index=torch.arange(2),
                  b=torch.tensor([0, 1]))
    loss, stats = method.loss(batch)
    assert loss.item() == pytest.approx(1.5 * math.log(2.0), rel=1e-6)
    assert stats == {"loss": pytest.approx(1.5 * math.log(2.0), rel=1e-6)}


def test_conditional_inference_without_labels_is_a_one_line_error():
    method = _domain_independent(inference="conditional")
    with pytest.raises(ConfigError, match=r"^domain_independent\.inference=conditional needs "
                                          r"bias labels on the evaluation data; use "
                                          r"inference=sum$"):
        method.predict(torch.zeros(1, 1, 2, 2))
