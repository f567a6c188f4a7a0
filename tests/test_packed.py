"""Packed arithmetic of networks that read the same batch: equal to one call each."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from debiaskit.models import build_model, feature_extractor
from debiaskit.models.packed import forward_shared, packable
from debiaskit.train import RunConfig, train


def _mlps(n=2, **options):
    torch.manual_seed(0)
    return [build_model("mlp", (3, 28, 28), 10, **options) for _ in range(n)]


@pytest.mark.parametrize("options", [{}, {"input_scale_quirk": True}, {"feature_dim": 16}])
def test_packed_outputs_and_gradients_equal_separate_calls(options):
    nets = _mlps(2, **options)
    x = torch.rand(64, 3, 28, 28) * (255.0 if options.get("input_scale_quirk") else 1.0)
    y = torch.randint(0, 10, (64,))
    grads = {}
    for pack in (True, False):
        for net in nets:
            net.zero_grad()
        outs = forward_shared(nets, x, pack)
        sum(nn.functional.cross_entropy(o, y) * (i + 1) for i, o in enumerate(outs)).backward()
        grads[pack] = ([o.detach() for o in outs],
                       [p.grad.clone() for net in nets for p in net.parameters()])
    assert packable(nets)
    for a, b in zip(grads[True][0] + grads[True][1], grads[False][0] + grads[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_feature_extractors_pack_and_other_networks_run_one_by_one():
    encoders = [feature_extractor(net)[0] for net in _mlps(2, feature_dim=16)]
    x = torch.rand(8, 3, 28, 28)
    assert packable(encoders)
    for a, b in zip(forward_shared(encoders, x), [e(x) for e in encoders]):
        assert a.shape == (8, 16)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # different input scaling, or a convolutional network: not packed, still correct
    mixed = _mlps(1) + _mlps(1, input_scale_quirk=True)
    assert not packable(mixed)
    torch.testing.assert_close(forward_shared(mixed, x)[1], mixed[1](x))
    convs = [build_model("resnet20", (3, 32, 32), 10) for _ in range(2)]
    assert not packable(convs)
    x32 = torch.rand(2, 3, 32, 32)
    for net in convs:
        net.eval()
    torch.testing.assert_close(forward_shared(convs, x32)[0], convs[0](x32))


@pytest.mark.slow
@pytest.mark.parametrize("method,hparams,epochs", [("lff", {}, 3),
                                                   ("disent", {"swap_start": 5}, 1)])
def test_a_packed_run_equals_an_unpacked_one(data_dir, tmp_path, method, hparams, epochs):
    """LfF (three epochs) and DisEnt (one epoch, feature swapping from step 6) on real
    Colored MNIST, packed and one network at a time: the same metrics and weights up to
    float rounding (DisEnt's Adam at lr 0.01 amplifies rounding differences in weights whose
    gradient is near zero, so it is compared after fewer steps)."""
    summaries, weights = {}, {}
    for pack in (True, False):
        cfg = RunConfig(method=method, hparams=hparams, data_params={"conflict_ratio": 0.02},
                        epochs=epochs, train_subset=6000, eval_subset=2000, data_dir=data_dir,
                        progress=False, pack=pack, threads=1,
                        model_options={"feature_dim": 16} if method == "disent" else {})
        out = tmp_path / f"pack{pack}"
        summaries[pack] = train(cfg, out)
        weights[pack] = torch.load(out / "model.pt", weights_only=False)["networks"]
    for key, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][key], rtol=1e-3, atol=1e-4)
    for split, metrics in summaries[True]["metrics"].items():
        assert abs(metrics["accuracy"] - summaries[False]["metrics"][split]["accuracy"]) <= 0.3


@pytest.mark.slow
def test_pack_auto_times_both_once_and_the_run_records_the_decision(data_dir, tmp_path):
    from debiaskit.bench.tables import packing_lines
    from debiaskit.models import packed

    nets = [build_model("mlp", (3, 28, 28), 10) for _ in range(2)]
    x = torch.rand(64, 3, 28, 28)
    decision = packed.pack_decision(nets, x, steps=2, repeats=1)
    assert isinstance(decision["packed"], bool)
    assert decision["packed"] == (decision["packed_ms"] < decision["separate_ms"])
    assert all(p.grad is None for net in nets for p in net.parameters())  # copies were timed
    assert packed.pack_decision(nets, x, steps=2, repeats=1) == decision  # memoised
    convs = [build_model("resnet20", (3, 32, 32), 10) for _ in range(2)]
    assert packed.pack_decision(convs, torch.rand(2, 3, 32, 32))["packed"] is False
    cfg = RunConfig(method="lff", data_params={"conflict_ratio": 0.02}, epochs=1,
                    train_subset=1000, eval_subset=500, data_dir=data_dir, progress=False,
                    threads=1)
    assert cfg.pack is False  # the default: the same numbers in every process
    erm = train(replace(cfg, method="erm"), tmp_path / "erm")["pack"]  # nothing to pack
    assert erm["mode"] == "off" and erm["packed"] is False and "not applicable" in erm["reason"]
    cfg = replace(cfg, pack="auto")
    summary = train(cfg, tmp_path / "auto")
    assert summary["pack"]["mode"] == "auto" and summary["pack"]["separate_ms"] > 0
    lines = packing_lines([{"mode": "auto", "packed": True, "packed_ms": 9.0,
                            "separate_ms": 10.0},
                           {"mode": "auto", "packed": False, "packed_ms": 11.0,
                            "separate_ms": 10.0}, {"mode": "on", "packed": True}])
    assert lines == ["Packing: pack auto packed 1 of 2 runs with networks to pack (packed / "
                     "one-by-one time per step 0.90-1.10x, timed on each run's first batch)."]
