"""Optimisers and schedules by name, and normalisation with the training set's statistics."""

from __future__ import annotations

import pytest
import torch

from debiaskit import runs
from debiaskit.data.dataset import BiasedDataset
from debiaskit.errors import ConfigError
from debiaskit.train import RunConfig, channel_stats, normalisation_from_data, prepare, train

SMALL = dict(train_subset=2000, eval_subset=1000, batch_size=256, threads=1,
             data_params={"conflict_ratio": 0.05})


@pytest.mark.slow
def test_sgd_with_step_schedule_on_real_data(data_dir, tmp_path):
    cfg = RunConfig(method="erm", epochs=3, optimizer="sgd", momentum=0.9, schedule="step",
                    lr_step=1, lr_gamma=0.5, hparams={"lr": 0.1, "weight_decay": 1e-4},
                    data_dir=data_dir, **{**SMALL, "batch_size": 64})
    opt = prepare(cfg).method.optimizers["model"]
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)
    summary = train(cfg, tmp_path)
    lrs = [r["lr"]["model"] for r in runs.read_metrics(tmp_path)]
    assert lrs == pytest.approx([0.05, 0.025, 0.0125])  # after each epoch's step
    assert "SGD (momentum 0.9), lr x0.5 every 1 epochs" in summary["protocol"]
    assert summary["metrics"]["test"]["aligned"] > 50  # it learned the colour (chance: 10)


@pytest.mark.slow
def test_default_is_adam_without_schedule(data_dir):
    prep = prepare(RunConfig(method="lff", epochs=1, data_dir=data_dir, **SMALL))
    assert all(isinstance(o, torch.optim.Adam) for o in prep.method.optimizers.values())


@pytest.mark.parametrize("fields, words", [
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "linear"}, "schedule"),
    ({"schedule": "step", "selection": "early_stop"}, "early_stop"),
])
def test_bad_optimiser_settings_are_refused_before_anything_is_written(data_dir, tmp_path,
                                                                        fields, words):
    with pytest.raises(ConfigError, match=words):
        train(RunConfig(method="erm", epochs=1, data_dir=data_dir, **SMALL, **fields),
              tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_channel_stats_by_hand():
    # channel 0: values 0 and 255 -> mean 0.5, std 0.5; channel 1: all 51 -> 0.2, 0
    x = torch.zeros(2, 2, 1, 2, dtype=torch.uint8)
    x[0, 0] = 255
    x[:, 1] = 51
    mean, std = channel_stats(x, chunk=1)
    assert mean == pytest.approx([0.5, 0.2]) and std == pytest.approx([0.5, 0.0], abs=1e-7)
    ds = BiasedDataset(name="t", x=x, y=torch.zeros(2, dtype=torch.long), num_classes=2)
    opts = normalisation_from_data({"mean": "train", "std": [1.0, 1.0], "other": 3}, ds)
    assert opts["mean"] == pytest.approx([0.5, 0.2]) and opts["std"] == [1.0, 1.0]
    assert opts["other"] == 3
