"""GBA, its Adversarial baseline and the Domain-Independent classifier: the
gradient reversal, the mask of Eq. 4-7 on hand-made examples, D on masked vs raw features
after real training, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from debiaskit.errors import ConfigError
from debiaskit.methods import METHODS, DataSpec
from debiaskit.methods.gba import gba_mask, reverse_gradient
from debiaskit.models import NetworkFactory
from debiaskit.train import RunConfig, prepare
from debiaskit.data.loader import InMemoryLoader
from checks import FixedLogits  # tests/ is on sys.path


def test_gradient_reversal_negates_gradients_exactly():
    x = torch.randn(4, 5, requires_grad=True)
    y = reverse_gradient(x, 0.37)
    assert torch.equal(y, x)
    upstream = torch.randn(4, 5)
    y.backward(upstream)
    assert torch.equal(x.grad, -0.37 * upstream)


def test_mask_rules_on_a_hand_made_example():
    grad = torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 0.0]])
    correct = torch.tensor([True, False])
    # Eq. 7: D right -> drop positive gradients; D wrong -> drop negative ones; g = 0 kept
    assert gba_mask(grad, correct, "gba").tolist() == [[0, 1, 1], [1, 0, 1]]
    assert gba_mask(grad, correct, "gba_n").tolist() == [[0, 1, 1], [0, 1, 1]]
    assert gba_mask(grad, correct, "gba_c").tolist() == [[0, 1, 1], [1, 1, 1]]
    assert gba_mask(grad, correct, "none").tolist() == [[1, 1, 1], [1, 1, 1]]


def _gba(num_bias=2, **hp):
    spec = DataSpec(input_shape=(1, 2, 2), num_classes=2, num_train=4,
                    train_targets=torch.tensor([0, 1, 0, 1]), num_bias=num_bias,
                    train_bias=torch.tensor([0, 1, 1, 0]))
    return METHODS["gba"](spec, NetworkFactory("mlp", (1, 2, 2), 2, {"hidden": 3}), hp)


def test_the_method_masks_by_the_gradient_of_ds_maximal_logit():
    method = _gba(disc_layers=0)  # D is one linear layer: the gradient of logit k is W[k]
    disc = method.networks["discriminator"][0]
    with torch.no_grad():
        disc.weight.copy_(torch.tensor([[1.0, -2.0, 0.0], [-1.0, 3.0, 0.5]]))
        disc.bias.zero_()
    f = torch.tensor([[2.0, 0.0, 0.0],    # logits (2, -2): D says 0
                      [0.0, 1.0, 0.0]])   # logits (-2, 3): D says 1
    b = torch.tensor([0, 0])              # D right on the first, wrong on the second
    a = method.mask(f, b, "gba")
    # first: g = W[0] = (1, -2, 0), right -> drop g > 0; second: g = W[1] = (-1, 3, .5),
    # wrong -> drop g < 0
    # wrong -> drop g * ind > 0, i.e. g < 0: the first feature
    assert a.tolist() == [[0, 1, 1], [0, 1, 1]]
    # at test time (no labels) D is taken as right: drop the positive-gradient features
    assert method.mask(f, None, "gba").tolist() == [[0, 1, 1], [1, 0, 0]]


def test_c_sees_raw_features_at_test_time_by_default():
    # test_mask none (the default): C on F(x) itself; predicted: C on the mask that takes
    # D as right, which differs here because D's gradient has both signs
    torch.manual_seed(0)
    method = _gba(disc_layers=0)
    assert method.hp["test_mask"] == "none" and method.hp["lambda_adv"] == 0.1
    x = torch.randn(4, 1, 2, 2)
    f = method.networks["features"].forward_features(x)
    classifier = method.networks["classifier"]
    with torch.no_grad():
        method.networks["discriminator"][0].weight.copy_(
            torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, -0.5]]))
        raw = classifier(f)
        assert torch.equal(method.predict(x), raw)
        method.hp["test_mask"] = "predicted"
        masked = classifier(f * method.mask(f, None, "gba"))
        assert torch.equal(method.predict(x), masked) and not torch.equal(masked, raw)


class _GivenFeatures(nn.Module):
    """A feature extractor that returns the first three input values (hand-set features)."""

    def forward_features(self, x):
        return x.flatten(1)[:, :3]


def test_predictions_under_each_test_time_mask_by_hand():
    # F(x) = x's first three values, D one linear layer W (the gradient of logit k is W[k]),
    # C logits = (f0 + 0.5, f1). Sample 1: f (2, 0, 0), D says 0 (right for b = 0); sample
    # 2: f (0, 1, 0), D says 1 (wrong for b = 0).
    method = _gba(disc_layers=0)
    method.networks["features"] = _GivenFeatures()
    with torch.no_grad():
        method.networks["discriminator"][0].weight.copy_(
            torch.tensor([[1.0, -2.0, 0.0], [-1.0, 3.0, 0.5]]))
        method.networks["discriminator"][0].bias.zero_()
        method.networks["classifier"][0].weight.copy_(
            torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        method.networks["classifier"][0].bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([[2.0, 0.0, 0.0, 9.0], [0.0, 1.0, 0.0, 9.0]]).reshape(2, 1, 2, 2)
    b = torch.tensor([0, 0])
    expected = {
        "none": [[2.5, 0.0], [0.5, 1.0]],       # raw features
        # D taken as right: drop g > 0; masks (0, 1, 1) and (1, 0, 0)
        "predicted": [[0.5, 0.0], [0.5, 0.0]],
        # from b: right -> drop g > 0, wrong -> drop g < 0; masks (0, 1, 1) and (0, 1, 1)
        "label": [[0.5, 0.0], [0.5, 1.0]],
    }
    with torch.no_grad():
        for test_mask, logits in expected.items():
            method.hp["test_mask"] = test_mask
            assert method.predict(x, b).tolist() == logits, test_mask
        with pytest.raises(ConfigError, match="test_mask=label needs bias labels"):
            method.predict(x)


def test_gba_cmnist_runs_every_method_in_both_input_scalings(data_dir, tmp_path):
    # the paper's comparison (LfF's copied rows: inputs divided by 255 twice) and ours
    from debiaskit.bench.presets import get_preset
    from debiaskit.bench.runner import plan

    runs = plan(get_preset("gba-cmnist"), tmp_path, 1, ["Vanilla", "LfF", "GBA-Dmasked"],
                data_dir=data_dir)
    seen = {(p.method, p.row): p.config for p in runs}
    assert sorted({row for _, row in seen}) == ["95.0", "95.0-unit", "98.0", "98.0-unit"]
    for (method, row), cfg in seen.items():
        assert cfg.model_options["input_scale_quirk"] == (not row.endswith("-unit"))
        assert cfg.hparams.get("gce_code_scale", False) == (method == "LfF"
                                                            and not row.endswith("-unit"))
    assert seen[("GBA-Dmasked", "98.0")].hparams == {"disc_features": "masked"}


@pytest.mark.parametrize("disc_features", ["raw", "masked"])
def test_what_d_sees_through_the_reversal(disc_features):
    # the reversed gradient of L_d reaches a masked feature only when D sees raw features
    torch.manual_seed(0)
    method = _gba(lambda_adv=1.0, disc_features=disc_features)
    x = torch.randn(4, 1, 2, 2)
    f = method.networks["features"].forward_features(x)
    a = method.mask(f, torch.tensor([0, 1, 1, 0]), "gba")
    assert 0 < a.sum() < a.numel()
    f_hook = f.detach().requires_grad_(True)
    method.networks["features"].forward_features = lambda _x: f_hook
    method.mask = lambda *_: a
    loss, _ = method.loss(type("B", (), {"x": x, "y": torch.tensor([0, 1, 0, 1]),
                                         "b": torch.tensor([0, 1, 1, 0])})())
    loss.backward()
    # the classifier's gradient is zero on masked features; what is left there comes from D
    leak = f_hook.grad[a == 0].abs().sum()
    assert (leak > 0) == (disc_features == "raw")


@pytest.mark.slow
def test_d_is_less_accurate_on_masked_features_after_training(data_dir):
    prep = prepare(RunConfig(method="gba", data_params={"conflict_ratio": 0.05},
                             train_subset=6000, eval_subset=1000, threads=1, data_dir=data_dir,
                             hparams={"lambda_adv": 0.3}))
    method = prep.method
    method.total_epochs = 4
    loader = InMemoryLoader(prep.train, 256, seed=0)
    for epoch in range(2):
        method.begin_epoch(epoch, loader)
        method.train(True)
        for batch in loader.epoch(epoch):
            method.update(batch)
    stats = method.epoch_stats(prep.train)
    assert stats["disc_accuracy_raw"] > 0.5  # D learnt the colour
    assert stats["disc_accuracy_masked"] < stats["disc_accuracy_raw"] - 0.2
    assert 0.0 < stats["masked_aligned"] < 1.0 and 0.0 < stats["masked_conflicting"] < 1.0


def test_adversarial_has_no_mask_and_domain_independent_sums_raw_logits():
    spec = DataSpec(input_shape=(1, 2, 2), num_classes=3, num_train=2,
                    train_targets=torch.tensor([0, 1]), num_bias=2,
                    train_bias=torch.tensor([0, 1]))
    adv = METHODS["adversarial"](spec, NetworkFactory("mlp", (1, 2, 2), 3), {})
    assert adv.hp["mask_rule"] == "none" and adv.hp["test_mask"] == "none"
    f = torch.rand(2, adv.networks["classifier"][0].in_features)
    assert torch.equal(adv.mask(f, None, "none"), torch.ones_like(f))

    di = METHODS["domain_independent"](spec, NetworkFactory("mlp", (1, 2, 2), 3), {})
    net = di.networks["model"]
    assert net.get_classifier().out_features == 6
    logits = torch.tensor([[1.0, 5.0, 0.0, 4.0, -3.0, 2.0]])  # colour (1, 5, 0), grey (4, -3, 2)
    di.networks["model"] = FixedLogits(logits)
    x = torch.zeros(1, 1, 2, 2)
    assert di.predict(x).tolist() == [[5.0, 2.0, 2.0]]         # sum of raw logits: class 0
    cond = METHODS["domain_independent"](spec, NetworkFactory("mlp", (1, 2, 2), 3),
                                         {"inference": "conditional"})
    cond.networks["model"] = FixedLogits(logits)
    assert cond.predict(x, torch.tensor([1])).tolist() == [[4.0, -3.0, 2.0]]
    # training reads only the sample's own domain's softmax
    from debiaskit.data.loader import Batch
    batch = Batch(x=x, y=torch.tensor([2]), index=torch.tensor([0]), b=torch.tensor([1]))
    loss, _ = di.loss(batch)
    assert loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(torch.tensor([[4.0, -3.0, 2.0]]),
                                          torch.tensor([2])).item())
    with pytest.raises(ConfigError, match="conditional needs bias labels"):
        cond.predict(x)


@pytest.mark.parametrize("name", ["gba", "adversarial", "domain_independent"])
def test_one_valued_bias_attribute_is_refused(name):
    spec = DataSpec(input_shape=(1, 2, 2), num_classes=2, num_train=2,
                    train_targets=torch.tensor([0, 1]), num_bias=1,
                    train_bias=torch.tensor([0, 0]))
    with pytest.raises(ConfigError, match="at least two values") as err:
        METHODS[name](spec, NetworkFactory("mlp", (1, 2, 2), 2), {})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args, words", [
    (["--method", "gba", "--no-bias-labels"], "needs bias labels"),
    (["--method", "adversarial", "--no-bias-labels"], "needs bias labels"),
    (["--method", "domain_independent", "--no-bias-labels"], "needs bias labels"),
    (["--method", "gba", "--hp", "lambda_adv=-1"], "lambda_adv=-1.0 is out of range"),
    (["--method", "gba", "--hp", "mask_rule=random"], "mask_rule='random'"),
])
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(train_fails_cleanly, args, words):
    train_fails_cleanly(args, words)
