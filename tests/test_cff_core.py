"""CF/F's core against hand-computed values on hand-made linear networks: the authors'
``-log(1 - p_y)`` (two classes, per sample), the FGSM step on the background (random start,
step, both clips), GradMask's penalty (both variants, its defaults, the scale, a
one-pixel background, its gradient in the weights), the augmentations a batch gets (FGSM,
the infills' generator and labels), the CF/F loss and its statistics (the counterfactual
loss options, GradMask's weight and share, gradients), Mixup and label smoothing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from debiaskit.data import infill
from debiaskit.methods import METHODS, DataSpec
from debiaskit.methods.cff import code_logp_loss, fgsm_background, gradmask_of, step_seed

LN2 = math.log(2)


def _linear(weight, bias=None, dtype=torch.float32):
    """Flatten, then ``logits = weight @ x + bias``."""
    weight = torch.as_tensor(weight, dtype=dtype)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=dtype))
    return nn.Sequential(nn.Flatten(), layer)


def _method(name, model, input_shape=(1, 2, 2), num_classes=3, **hp):
    spec = DataSpec(input_shape=input_shape, num_classes=num_classes, num_train=8,
                    train_targets=torch.arange(8) % num_classes)
    return METHODS[name](spec, lambda: model, hp)


def _constant(num_pixels=4):
    """Logits (ln 2, 0, 0) for every image: p = (1/2, 1/4, 1/4), so CE = ln 2 for label 0
    and ln 4 for labels 1 and 2; -log(1 - p_y) = ln 2 and ln(4/3)."""
    return _linear(torch.zeros(3, num_pixels), [LN2, 0.0, 0.0])


# --- the authors' -log(1 - p_y) ---------------------------------------------------------------

def test_code_logp_with_two_classes_is_the_per_sample_ce_to_the_other_class():
    # logits (3, 1): CE to class 1 = log(1 + e^2) = 2.1269280, to class 0 = log(1 + e^-2)
    # = 0.1269280; one value per sample, not their mean
    logits = torch.tensor([[3.0, 1.0], [3.0, 1.0]])
    loss = code_logp_loss(logits, torch.tensor([0, 1]))
    assert loss.shape == (2,)
    assert torch.allclose(loss, torch.tensor([2.1269280, 0.1269280]), atol=1e-6, rtol=0)


def test_code_logp_with_three_classes_by_hand():
    # p = (1/2, 1/4, 1/4): -log(1 - p_y) = ln 2 for y = 0, ln(4/3) = 0.2876821 for y = 2
    loss = code_logp_loss(torch.tensor([[LN2, 0.0, 0.0]] * 2), torch.tensor([0, 2]))
    assert torch.allclose(loss, torch.tensor([LN2, 0.2876821]), atol=1e-6, rtol=0)


# --- FGSM on the background ---------------------------------------------------------------------

def test_fgsm_background_step_by_hand():
    """A two-class linear network with logits (0, w . x): the input gradient of the CE is
    p_1 w / N for label 0 and (p_1 - 1) w / N for label 1, so its sign is sign(w) resp.
    -sign(w) wherever w != 0 and 0 where w = 0. With eps = 0.2 and the start r eps,
    r = 2u - 1 from ``gen`` (u uniform in [0, 1), drawn in the images' dtype), every
    background value is

        start = clip(x + r eps, 0, 1);   s = the gradient's sign
        s = 0:  start
        else:   clip(start + 1.25 eps s, x - eps, x + eps), then clip to [0, 1]

    and every foreground value is x. The values of x (0, 0.1, 0.5, 0.9, 1) and the signs
    meet every case: a start clipped at 0 or 1 (x = 0.1 with r < -1/2: clip(0) + 0.25 =
    0.25 < x + eps), a step that ends inside the eps box (r < -1/4 in the step's
    direction), a step clipped to x +- eps."""
    n, side, eps = 8, 8, 0.2
    pixels = side * side
    levels = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    x = levels[torch.arange(n * pixels) % 5].view(n, 1, side, side)
    w = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)[torch.arange(pixels) % 3]
    model = _linear(torch.stack([torch.zeros(pixels, dtype=torch.float64), w]),
                    dtype=torch.float64)
    y = torch.arange(n) % 2
    foreground = torch.zeros(n, side, side, dtype=torch.bool)
    foreground[:, 3:5, 2:6] = True
    adv = fgsm_background(model, x, y, ~foreground, eps, torch.Generator().manual_seed(7))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    want = torch.empty_like(x)
    for i in range(n):
        for p in range(pixels):
            h, c = divmod(p, side)
            xv, r = float(x[i, 0, h, c]), 2 * float(u[i, 0, h, c]) - 1
            if foreground[i, h, c]:
                want[i, 0, h, c] = xv
                continue
            start = min(max(xv + r * eps, 0.0), 1.0)
            s = float(w[p]) * (1 if y[i] == 0 else -1)
            if s == 0:
                want[i, 0, h, c] = start
            else:
                moved = min(max(start + 1.25 * eps * s, xv - eps), xv + eps)
                want[i, 0, h, c] = min(max(moved, 0.0), 1.0)
    assert adv.dtype == torch.float64 and not adv.requires_grad
    assert torch.allclose(adv, want, atol=1e-12, rtol=0)
    # the cases are all there: starts below 0 that were clipped, steps ending inside
    bg = ~foreground[:, None]
    start = x + (2 * u - 1) * eps
    assert bool(((start < 0) & bg & (x == 0.1)).any()) and bool(((start > 1) & bg).any())
    inside = bg & ((adv - x).abs() < eps - 1e-9) & (adv > 0) & (adv < 1)
    assert int(inside.sum()) > 20


def test_fgsm_and_gradmask_keep_the_images_dtype():
    # a bfloat16 network on bfloat16 images: the FGSM images and the GradMask penalty stay
    # bfloat16 (mixing in a float32 mask would turn them float32)
    model = _linear([[1.0, 2.0], [3.0, -1.0]], [0.0, 0.0], dtype=torch.bfloat16)
    x = torch.full((2, 1, 1, 2), 0.5, dtype=torch.bfloat16)
    y = torch.tensor([0, 1])
    foreground = torch.tensor([[[True, False]], [[False, False]]])
    adv = fgsm_background(model, x, y, ~foreground, 0.25, torch.Generator().manual_seed(0))
    assert adv.dtype == torch.bfloat16
    xg = x.clone().requires_grad_(True)
    penalty = gradmask_of(model(xg), xg, y, foreground)
    assert penalty.dtype == torch.bfloat16
    # the same penalty as in float32: (4 + 5) / 2 (test_gradmask_of_by_hand)
    assert penalty.item() == 4.5


# --- GradMask ---------------------------------------------------------------------------------

def _gradmask_case():
    """Two one-channel images of two pixels, logits W x (no bias), W = [[1, 2], [3, -1]]; labels
    (0, 1); image 0's foreground is its first pixel, image 1 has none. The input gradient
    of logit k is W[k]."""
    model = _linear([[1.0, 2.0], [3.0, -1.0]])
    x = torch.tensor([[[[0.3, 0.7]]], [[[0.2, 0.4]]]], requires_grad=True)
    foreground = torch.tensor([[[True, False]], [[False, False]]])
    return model, x, torch.tensor([0, 1]), foreground


def test_gradmask_of_by_hand():
    """paper (the default): image 0's background is one value, gradient 2: 2^2 / 1 = 4;
    image 1: (3^2 + 1^2) / 2 = 5; mean 4.5. code: the gradient of the sum of every image's
    logits at labels 0 and 1 is W[0] + W[1] = (4, 1) on each image; only image 0 has a
    foreground: its background squares (0, 1^2) averaged over its 2 values: 0.5."""
    model, x, y, foreground = _gradmask_case()
    assert gradmask_of(model(x), x, y, foreground).item() == pytest.approx(4.5, abs=1e-6)
    assert gradmask_of(model(x), x, y, foreground, "paper", 1.0).item() == pytest.approx(
        4.5, abs=1e-6)
    assert gradmask_of(model(x), x, y, foreground, "code").item() == pytest.approx(
        0.5, abs=1e-6)
    # scale 2: the gradient doubles, the penalty quadruples
    assert gradmask_of(model(x), x, y, foreground, "paper", 2.0).item() == pytest.approx(
        18.0, abs=1e-5)
    assert gradmask_of(model(x), x, y, foreground, "code", 2.0).item() == pytest.approx(
        2.0, abs=1e-6)


def test_gradmask_of_is_differentiable_in_the_weights():
    """paper penalty = (W01^2 / 1 + (W10^2 + W11^2) / 2) / 2, so its gradient in W is
    [[0, W01], [W10 / 2, W11 / 2]] = [[0, 2], [1.5, -0.5]]."""
    model, x, y, foreground = _gradmask_case()
    penalty = gradmask_of(model(x), x, y, foreground)
    g_w, = torch.autograd.grad(penalty, model[1].weight)
    assert torch.allclose(g_w, torch.tensor([[0.0, 2.0], [1.5, -0.5]]), atol=1e-6, rtol=0)


# --- the augmentations ------------------------------------------------------------------------

def _augment_batch():
    """Four 1 x 4 x 4 images, labels (0, 1, 2, 0); images 0-2 have a 2 x 2 foreground,
    image 3 none (it gets no copy)."""
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[:3, 1:3, 1:3] = True
    return SimpleNamespace(x=x, y=torch.tensor([0, 1, 2, 0]), mask=mask, b=None,
                           index=torch.arange(4))


def _linear_net():
    torch.manual_seed(0)
    return _linear(torch.randn(3, 16), torch.zeros(3))


def test_augment_fgsm_uses_the_model_the_background_and_half_eps():
    model = _linear_net()
    method = _method("cff", model, (1, 4, 4), factual="fgsm", fgsm_eps=0.4)
    batch = _augment_batch()
    cf, (fact, labels) = method.augment(batch, torch.Generator().manual_seed(5))
    assert cf is None and torch.equal(labels, torch.tensor([0, 1, 2]))
    want = fgsm_background(model, batch.x[:3], labels, ~batch.mask[:3], 0.2,
                           torch.Generator().manual_seed(5))
    assert torch.equal(fact, want)
    # foreground untouched; the background moved by at most eps / 2 = 0.2, and by exactly
    # 0.2 where the step was not clipped to [0, 1]
    fg = batch.mask[:3, None]
    assert torch.equal(fact[fg], batch.x[:3][fg])
    moved = (fact - batch.x[:3])[~fg].abs()
    assert moved.max().item() == pytest.approx(0.2, abs=1e-6)
    assert int((moved > 0.2 - 1e-6).sum()) > 10


def test_augment_draws_the_infills_from_the_generator_and_passes_the_labels():
    batch = _augment_batch()
    method = _method("cff", _linear_net(), (1, 4, 4), cf="random", factual="mixed_rand")
    (cf, cf_y), (fact, fact_y) = method.augment(batch, torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)   # one generator: the CF infill draws first
    x, y, mask = batch.x[:3], batch.y[:3], batch.mask[:3]
    assert torch.equal(cf, infill.counterfactual("random", x, infill.mask_boxes(mask), gen))
    assert torch.equal(fact, infill.factual("mixed_rand", x, mask, gen, y=y))
    assert torch.equal(cf_y, y) and torch.equal(fact_y, y)
    # mixed_rand: each background comes from an image of another class (labels all differ
    # here, so never from the image itself)
    for i in range(3):
        assert not torch.equal(fact[i][~mask[i][None]], x[i][~mask[i][None]])


# --- the CF/F loss ------------------------------------------------------------------------------

def _loss_batch(masked=3):
    """Four 1 x 2 x 2 images, labels (0, 1, 2, 0); the first ``masked`` have a one-pixel
    foreground."""
    mask = torch.zeros(4, 2, 2, dtype=torch.bool)
    mask[:masked, 0, 0] = True
    return SimpleNamespace(x=torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(1)),
                           y=torch.tensor([0, 1, 2, 0]), mask=mask, b=None,
                           index=torch.arange(4))


def test_cff_loss_and_statistics_by_hand():
    """Constant logits (ln 2, 0, 0): originals CE ln 2, ln 4, ln 4, ln 2 (sum 6 ln 2); the
    three counterfactuals (labels 0, 1, 2) -log(1 - p_y) = ln 2, ln(4/3), ln(4/3) (sum
    1.2685110, per image 0.4228370); the three factuals CE (sum 5 ln 2 = 3.4657359, per
    image 1.1552453). Loss (6 ln 2 + 1.2685110 + 5 ln 2) / 10 = 0.8893130."""
    method = _method("cff", _constant(), cf="grey", factual="random")
    loss, stats = method.loss(_loss_batch(), training=False)
    assert set(stats) == {"loss", "loss_cf", "loss_factual"}
    assert stats["loss_cf"] == pytest.approx(0.4228370, abs=1e-6)
    assert stats["loss_factual"] == pytest.approx(1.1552453, abs=1e-6)
    assert stats["loss"] == pytest.approx(0.8893130, abs=1e-6)
    assert loss.item() == stats["loss"]
    # cf_loss uniform: -mean(log p) = (ln 2 + 2 ln 4) / 3 = 5 ln 2 / 3 = 1.1552453 for
    # every label; loss (6 ln 2 + 3 * 1.1552453 + 5 ln 2) / 10 = 1.1090355
    method = _method("cff", _constant(), cf="grey", factual="random", cf_loss="uniform")
    loss, stats = method.loss(_loss_batch(), training=False)
    assert stats["loss_cf"] == pytest.approx(1.1552453, abs=1e-6)
    assert loss.item() == pytest.approx(1.1090355, abs=1e-6)


def test_cff_statistics_of_a_single_counterfactual():
    """One image with a foreground (label 0): its counterfactual's loss is the statistic
    itself: logp ln 2; uniform_except_y -(log 1/4 + log 1/4) / 2 = ln 4; the loss
    (6 ln 2 + ln 2) / 5 = 0.9704061 resp. (6 ln 2 + ln 4) / 5 = 1.1090355."""
    method = _method("cff", _constant(), cf="grey")
    loss, stats = method.loss(_loss_batch(masked=1), training=False)
    assert set(stats) == {"loss", "loss_cf"}
    assert stats["loss_cf"] == pytest.approx(LN2, abs=1e-6)
    assert loss.item() == pytest.approx(0.9704061, abs=1e-6)
    method = _method("cff", _constant(), cf="grey", cf_loss="uniform_except_y")
    loss, stats = method.loss(_loss_batch(masked=1), training=False)
    assert stats["loss_cf"] == pytest.approx(2 * LN2, abs=1e-6)
    assert loss.item() == pytest.approx(1.1090355, abs=1e-6)


@pytest.mark.parametrize("hp, per_image", [
    # the authors' guard: p_y is 1 in float32, so -log(1e-20) = 46.0517019
    ({"cf_logp_code": True}, 46.0517019),
    # the stable form: logsumexp(200, 0, 0) - logsumexp(0, 0) = 200 - ln 2
    ({}, 200 - LN2),
    # cf_logp_code only changes logp: uniform is -mean(log p) = (0 + 200 + 200) / 3
    ({"cf_logp_code": True, "cf_loss": "uniform"}, 400 / 3),
])
def test_cff_counterfactual_loss_options_when_p_y_rounds_to_one(hp, per_image):
    method = _method("cff", _linear(torch.zeros(3, 4), [200.0, 0.0, 0.0]), cf="grey", **hp)
    batch = _loss_batch()
    batch.y = torch.zeros(4, dtype=torch.long)
    loss, stats = method.loss(batch, training=False)
    assert stats["loss_cf"] == pytest.approx(per_image, rel=1e-5)
    # the originals' CE is 0 (p_y = 1): the loss is the three counterfactuals over 7 images
    assert loss.item() == pytest.approx(3 * per_image / 7, rel=1e-5)


def _sal_case(**hp):
    """Two 1 x 1 x 2 images of zeros, logits W x + (ln 2, 0, 0), W = [[1, 2], [3, -1],
    [0, 0]]; labels (0, 1); image 0's foreground is pixel 0, image 1's pixel 1."""
    model = _linear([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]], [LN2, 0.0, 0.0])
    method = _method("cff", model, (1, 1, 2), **hp)
    batch = SimpleNamespace(x=torch.zeros(2, 1, 1, 2), y=torch.tensor([0, 1]),
                            mask=torch.tensor([[[True, False]], [[False, True]]]), b=None,
                            index=torch.arange(2))
    return method, batch


def test_cff_loss_adds_lambda_times_gradmask_and_reports_its_share():
    """CE: ln 2 and ln 4, mean 1.5 ln 2 = 1.0397208. GradMask (paper, [0, 1] units): image
    0's background gradient W[0, 1] = 2 -> 4; image 1's W[1, 0] = 3 -> 9; mean 6.5; in
    [-1, 1] units (signed, the default) a quarter: 1.625. lambda 0.1: the loss
    1.0397208 + 0.1625 = 1.2022208, the share 0.1625 / 1.2022208 = 0.1351665."""
    method, batch = _sal_case(sal_lambda=0.1)
    loss, stats = method.loss(batch, training=False)
    assert set(stats) == {"loss", "loss_sal", "sal_share"}
    assert stats["loss_sal"] == pytest.approx(1.625, abs=1e-6)
    assert stats["sal_share"] == pytest.approx(0.1351665, abs=1e-6)
    assert stats["loss"] == pytest.approx(1.2022208, abs=1e-6)
    assert loss.item() == pytest.approx(1.2022208, abs=1e-6)
    method, batch = _sal_case(sal_lambda=0.1, sal_range="unit")
    loss, stats = method.loss(batch, training=False)
    assert stats["loss_sal"] == pytest.approx(6.5, abs=1e-6)
    assert loss.item() == pytest.approx(1.0397208 + 0.65, abs=1e-6)


def test_cff_loss_gradients():
    """Without GradMask the loss is an ordinary function of the images: its gradient
    reaches them. At x = 0, p = (1/2, 1/4, 1/4); the gradient of the mean CE in image i is
    W^T (p - onehot(y_i)) / 2: image 0 (-1/2 (1, 2) + 1/4 (3, -1)) / 2 = (0.125, -0.625),
    image 1 (1/2 (1, 2) - 3/4 (3, -1)) / 2 = (-0.875, 0.875). Under no_grad (early
    stopping's objective) the network runs without building a graph, unless GradMask
    needs the originals' input gradient (that pass alone)."""
    method, batch = _sal_case()
    batch.x.requires_grad_(True)
    loss, _ = method.loss(batch, training=False)
    loss.backward()
    assert torch.allclose(batch.x.grad.view(2, 2),
                          torch.tensor([[0.125, -0.625], [-0.875, 0.875]]), atol=1e-6, rtol=0)
    for sal_lambda in (0.0, 1.0):
        method, batch = _sal_case(cf="grey", sal_lambda=sal_lambda)
        graphs = []                           # per pass: the originals, then the CF images
        method.networks["model"].register_forward_hook(
            lambda module, args, out: graphs.append(out.requires_grad))
        with torch.no_grad():
            loss, stats = method.loss(batch, training=False)
        if sal_lambda:
            assert len(graphs) == 2 and graphs[0]
        else:
            assert graphs == [False, False]
        assert not loss.requires_grad
        assert stats["loss"] == pytest.approx(loss.item())


# --- Mixup and label smoothing ------------------------------------------------------------------

def test_mixup_loss_by_hand():
    """Mixup with alpha 0.3 at run seed 3, step 2: the step's seed is 3 * 1000003 + 2;
    lambda = Beta(0.3, 0.3) from numpy's generator at that seed, the permutation from a
    torch generator at that seed. Two-class logits (0, x_1 + 2 x_2) of the mixed images
    lambda x + (1 - lambda) x[perm]; the loss lambda CE(y) + (1 - lambda) CE(y[perm]), each
    a batch mean, CE(0) = log(1 + e^l), CE(1) = log(1 + e^-l)."""
    model = _linear([[0.0, 0.0], [1.0, 2.0]], [0.0, 0.0])
    method = _method("mixup", model, (1, 1, 2), num_classes=2, alpha=0.3)
    method.seed.fill_(3)
    method.steps.fill_(2)
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.2, 0.0],
                      [0.0, 0.3]]).view(6, 1, 1, 2)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    batch = SimpleNamespace(x=x, y=y, index=torch.arange(6))
    seed = step_seed(torch.tensor(3), torch.tensor(2))
    lam = float(np.random.default_rng(seed).beta(0.3, 0.3))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed)).tolist()
    assert 0.2 < lam < 0.8 and perm != list(range(6))

    def ce(logit, label):
        return math.log1p(math.exp(logit if label == 0 else -logit))

    def want(lam):
        total = 0.0
        for i in range(6):
            a, b = x[i].flatten().tolist(), x[perm[i]].flatten().tolist()
            mixed = [lam * a[k] + (1 - lam) * b[k] for k in range(2)]
            logit = mixed[0] + 2 * mixed[1]
            total += lam * ce(logit, int(y[i])) + (1 - lam) * ce(logit, int(y[perm[i]]))
        return total / 6

    torch.manual_seed(0)
    loss, stats = method.loss(batch)                 # training by default
    assert set(stats) == {"loss"}
    assert loss.item() == pytest.approx(want(lam), abs=1e-6)
    assert stats["loss"] == loss.item()
    assert int(method.steps) == 3
    # evaluating: lambda = 1 (plain CE of the originals), no step counted
    loss, _ = method.loss(batch, training=False)
    assert loss.item() == pytest.approx(want(1.0), abs=1e-6)
    assert int(method.steps) == 3
    method.loss(batch, training=True)
    assert int(method.steps) == 4


def test_label_smoothing_loss_by_hand():
    """epsilon 0.3, p = (1/2, 1/4, 1/4): per image 0.7 CE_y + 0.3 mean_k(-log p_k), with
    mean_k(-log p_k) = 5 ln 2 / 3: label 0 0.7 ln 2 + 0.5 ln 2 = 1.2 ln 2, label 1
    1.4 ln 2 + 0.5 ln 2 = 1.9 ln 2; mean 1.55 ln 2 = 1.0743781."""
    method = _method("label_smoothing", _constant(), epsilon=0.3)
    batch = SimpleNamespace(x=torch.rand(2, 1, 2, 2), y=torch.tensor([0, 1]),
                            index=torch.arange(2))
    loss, stats = method.loss(batch)
    assert loss.item() == pytest.approx(1.0743781, abs=1e-6)
    assert stats == {"loss": loss.item()}
