"""CF/F: the counterfactual losses, FGSM on the background, GradMask on a
hand-made model, separate vs joint forward passes (batch normalisation), and bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from debiaskit.errors import ConfigError
from debiaskit.losses import counterfactual_loss
from debiaskit.methods import METHODS, DataSpec
from debiaskit.methods.cff import fgsm_background, gradmask
from debiaskit.models import NetworkFactory


def test_counterfactual_losses_by_hand_and_finite_when_p_y_is_one():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    y = torch.tensor([0])
    p = torch.softmax(logits, 1)[0]
    assert counterfactual_loss(logits, y, "logp").item() == pytest.approx(-math.log(1 - p[0]))
    assert counterfactual_loss(logits, y, "uniform").item() == pytest.approx(
        -torch.log(p).mean().item())
    assert counterfactual_loss(logits, y, "uniform_except_y").item() == pytest.approx(
        -(math.log(p[1]) + math.log(p[2])) / 2)
    sure = torch.tensor([[1000.0, 0.0, 0.0]], requires_grad=True)  # p_y = 1 in float32
    loss = counterfactual_loss(sure, y, "logp")
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1000.0 - math.log(2))
    loss.backward()
    assert torch.isfinite(sure.grad).all()


def _linear_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    torch.manual_seed(0)
    nn.init.normal_(model[1].weight)
    return model


def test_fgsm_stays_within_eps_on_the_background_only():
    model = _linear_model()
    x = torch.rand(6, 3, 4, 4)
    y = torch.arange(6) % 3
    foreground = torch.zeros(6, 4, 4, dtype=torch.bool)
    foreground[:, 1:3, 1:3] = True
    adv = fgsm_background(model, x, y, ~foreground, 0.25, torch.Generator().manual_seed(0))
    fg = foreground[:, None].expand_as(x)
    assert torch.equal(adv[fg], x[fg])
    assert (adv - x).abs().max() <= 0.25 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x)[~fg].abs().mean() > 0.05
    # the step raises the loss of the true label
    ce = nn.functional.cross_entropy
    assert ce(model(adv), y) > ce(model(x), y)


def test_gradmask_on_a_linear_model_by_hand():
    model = _linear_model()
    x = torch.rand(2, 3, 4, 4)
    y = torch.tensor([1, 2])
    foreground = torch.zeros(2, 4, 4, dtype=torch.bool)
    foreground[0, :2] = True  # image 0: 8 foreground pixels; image 1: none
    w = model[1].weight.detach().view(3, 3, 4, 4)  # the input gradient of logit k is W[k]
    want = []
    for i in range(2):
        outside = (~foreground[i]).expand(3, 4, 4)
        want.append((w[y[i]] ** 2)[outside].sum() / outside.sum())
    assert gradmask(model, x, y, foreground).item() == pytest.approx(
        torch.stack(want).mean().item(), rel=1e-5)
    # the code's variant: the gradient of logits[:, y].sum() (each label once per image
    # carrying it), averaged over the images that have a foreground (image 0 only)
    g = w[1] + w[2]
    outside = (~foreground)[:1, None].expand(1, 3, 4, 4)
    code = ((g ** 2)[None].expand(1, 3, 4, 4) * outside).mean()
    assert gradmask(model, x, y, foreground, "code").item() == pytest.approx(code.item(),
                                                                              rel=1e-5)


def _cff(**hp):
    spec = DataSpec(input_shape=(3, 8, 8), num_classes=3, num_train=6,
                    train_targets=torch.arange(6) % 3)
    return METHODS["cff"](spec, NetworkFactory("mlp", (3, 8, 8), 3, {"hidden": 5}), hp)


def _batch(n=6):
    mask = torch.zeros(n, 8, 8, dtype=torch.bool)
    mask[:, 2:6, 3:5] = True
    mask[-1] = False  # no foreground: no CF or F copy
    return SimpleNamespace(x=torch.rand(n, 3, 8, 8), y=torch.arange(n) % 3, mask=mask,
                           b=None, index=torch.arange(n))


def test_losses_are_divided_by_the_concatenated_batch():
    torch.manual_seed(0)
    method = _cff(cf="grey", factual="random")
    batch = _batch()
    loss, stats = method.loss(batch, training=False)
    model = method.networks["model"]
    gen = method._generator()
    cf, fact = method.augment(batch, gen)
    assert len(cf[1]) == len(fact[1]) == 5
    ce = nn.functional.cross_entropy
    total = (ce(model(batch.x), batch.y, reduction="sum")
             + counterfactual_loss(model(cf[0]), cf[1]).sum()
             + ce(model(fact[0]), fact[1], reduction="sum")) / (6 + 5 + 5)
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)
    assert int(method.steps) == 0  # training=False changes no state
    method.loss(batch)
    assert int(method.steps) == 1


def test_sal_adds_lambda_times_gradmask_to_the_loss():
    torch.manual_seed(0)
    plain, with_sal = _cff(), _cff(sal_lambda=3.0)
    with_sal.load_state_dict(plain.state_dict())
    batch = _batch()
    base, _ = plain.loss(batch, training=False)
    loss, stats = with_sal.loss(batch, training=False)
    # the gradient in [-1, 1] units (sal_range signed): half the [0, 1] gradient
    penalty = gradmask(with_sal.networks["model"], batch.x, batch.y, batch.mask, scale=0.5)
    assert stats["loss_sal"] == pytest.approx(penalty.item(), rel=1e-5)
    assert loss.item() == pytest.approx(base.item() + 3.0 * penalty.item(), rel=1e-5)


def test_objective_with_sal_works_without_gradients_for_early_stopping():
    method = _cff(sal_lambda=1.0, cf="grey")
    with torch.no_grad():
        loss, stats = method.loss(_batch(), training=False)
    assert torch.isfinite(loss) and stats["loss_sal"] > 0


def test_bad_input():
    with pytest.raises(ConfigError, match="cf='cagan'"):
        _cff(cf="cagan")
    with pytest.raises(ConfigError, match="factual='grey'"):
        _cff(factual="grey")
    method = _cff(cf="grey")
    batch = _batch()
    batch.mask = batch.mask[:, :4]
    with pytest.raises(ConfigError, match="masks have shape"):
        method.loss(batch)
    batch.mask = None
    with pytest.raises(ConfigError, match="needs foreground masks"):
        method.loss(batch)


@pytest.mark.parametrize("args, words", [
    (["--dataset", "cifar10s", "--method", "cff", "--hp", "cf=grey"],
     "needs foreground masks"),
    (["--dataset", "bg_colored_mnist", "--method", "cff", "--hp", "cf=cagan"], "cf='cagan'"),
    (["--dataset", "bg_colored_mnist", "--method", "cff", "--hp", "factual=tile"],
     "factual='tile'"),
])
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(train_fails_cleanly, args, words):
    train_fails_cleanly(args, words)


def test_step_seed_fits_a_generator_for_any_run_seed():
    from debiaskit.methods.cff import step_seed
    big = torch.tensor(2 ** 62 - 1)
    for steps in (0, 1, 10 ** 6):
        torch.Generator().manual_seed(step_seed(big, torch.tensor(steps)))
    assert step_seed(torch.tensor(3), torch.tensor(4)) == 3 * 1_000_003 + 4


# --- parity with the authors' code (tests/parity/fixtures/cff-*) ---------------------------

def test_code_logp_loss_saturates_like_the_authors_code():
    from debiaskit.methods.cff import code_logp_loss
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5]])
    y = torch.tensor([0, 2])
    assert torch.allclose(code_logp_loss(logits, y), counterfactual_loss(logits, y), atol=1e-6)
    # p_y rounds to 1: the authors' guard caps the loss at -log(1e-20) with no gradient
    sure = torch.tensor([[150.0, 0.0, 0.0]], requires_grad=True)
    loss = code_logp_loss(sure, torch.tensor([0]))
    assert loss.item() == pytest.approx(-math.log(1e-20), rel=1e-6)
    assert counterfactual_loss(sure, torch.tensor([0])).item() == pytest.approx(
        150.0 - math.log(2))
    loss.backward()
    assert sure.grad.abs().max() == 0
    two = torch.tensor([[3.0, 1.0]])
    assert code_logp_loss(two, torch.tensor([0])).item() == pytest.approx(
        nn.functional.cross_entropy(two, torch.tensor([1])).item())
    method = _cff(cf="grey", cf_logp_code=True)
    assert METHODS["cff"].declared_hparams["cf_logp_code"].authors_code
    loss, stats = method.loss(_batch(), training=False)
    assert torch.isfinite(loss)


def test_gradmask_code_variant_counts_each_label_of_the_batch_per_image():
    model = _linear_model()
    x = torch.rand(3, 3, 4, 4)
    y = torch.tensor([1, 1, 2])  # label 1 twice: its logit's gradient counts twice
    foreground = torch.zeros(3, 4, 4, dtype=torch.bool)
    foreground[:, :2] = True
    w = model[1].weight.detach().view(3, 3, 4, 4)
    g = 2 * w[1] + w[2]
    outside = (~foreground)[:, None].expand(3, 3, 4, 4)
    want = ((g[None] * outside) ** 2).mean()
    assert gradmask(model, x, y, foreground, "code").item() == pytest.approx(want.item(),
                                                                              rel=1e-5)
    assert gradmask(model, x, y, foreground, "code", scale=0.5).item() == pytest.approx(
        want.item() / 4, rel=1e-5)
    none = torch.zeros(3, 4, 4, dtype=torch.bool)
    assert gradmask(model, x, y, none, "code").item() == 0.0


def test_sal_range_unit_is_four_times_signed():
    torch.manual_seed(0)
    signed, unit = _cff(sal_lambda=1.0), _cff(sal_lambda=1.0, sal_range="unit")
    unit.load_state_dict(signed.state_dict())
    batch = _batch()
    a = signed.loss(batch, training=False)[1]["loss_sal"]
    b = unit.loss(batch, training=False)[1]["loss_sal"]
    assert b == pytest.approx(4 * a, rel=1e-5)


@pytest.mark.slow
def test_the_originals_go_through_the_network_alone_unless_passes_is_joint():
    spec = DataSpec(input_shape=(3, 8, 8), num_classes=3, num_train=6,
                    train_targets=torch.arange(6) % 3)
    torch.manual_seed(0)
    sizes = []
    for hp in ({}, {"passes": "joint"}, {"passes": "joint", "sal_lambda": 1.0}):
        method = METHODS["cff"](spec, NetworkFactory("resnet20", (3, 8, 8), 3),
                                {"cf": "grey", "factual": "random", **hp})
        hook = method.networks["model"].register_forward_hook(
            lambda m, i, o: sizes.append(len(i[0])))
        method.loss(_batch(), training=False)
        hook.remove()
    # separate (default): originals, then CF + F; joint: one pass; GradMask forces two
    assert sizes == [6, 10, 16, 6, 10]


def test_separate_passes_keep_the_originals_batch_norm_to_themselves():
    # in training mode a batch-norm network normalises with the batch's statistics: the
    # originals' loss must not depend on their counterfactual / factual copies unless the
    # passes are joint
    spec = DataSpec(input_shape=(3, 8, 8), num_classes=3, num_train=6,
                    train_targets=torch.arange(6) % 3)
    ce = nn.functional.cross_entropy
    for passes in ("separate", "joint"):
        torch.manual_seed(0)
        method = METHODS["cff"](spec, NetworkFactory("resnet20", (3, 8, 8), 3),
                                {"cf": "grey", "factual": "random", "passes": passes})
        method.train(True)
        batch = _batch()
        seen = []
        hook = method.networks["model"].register_forward_hook(lambda m, i, o: seen.append(o))
        method.loss(batch, training=False)
        hook.remove()
        own = seen[0][:6]
        alone = ce(own, batch.y).item()
        reference = ce(method.networks["model"](batch.x), batch.y).item()
        assert (alone == pytest.approx(reference, rel=1e-6)) == (passes == "separate")


def test_sal_share_is_the_penalty_part_of_the_loss():
    torch.manual_seed(0)
    method = _cff(sal_lambda=3.0, cf="grey")
    loss, stats = method.loss(_batch(), training=False)
    assert stats["sal_share"] == pytest.approx(3.0 * stats["loss_sal"] / loss.item(), rel=1e-5)
    assert 0 < stats["sal_share"] < 1


def test_grad_clip_bounds_the_gradient_norm_of_every_step():
    torch.manual_seed(0)
    method = _cff(cf="grey", grad_clip=0.01, lr=0.0)
    assert METHODS["cff"].declared_hparams["grad_clip"].authors_code
    norms = []
    opt = method.optimizers["model"]
    step = opt.step
    opt.step = lambda *a, **k: (norms.append(torch.norm(torch.stack(
        [p.grad.norm() for p in method.networks["model"].parameters()])).item()),
        step(*a, **k))[1]
    method.update(_batch())
    assert norms and norms[0] == pytest.approx(0.01, rel=1e-3)
