"""LAD's walk diagnostic and the options that test why the walk remaps the cue (issue 20)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from debiaskit import runs
from debiaskit.cli import main
from debiaskit.data.protocols.bg_colored_mnist import colorize_background
from debiaskit.data.strokes import STROKE_RULES, mask_iou
from debiaskit.errors import ConfigError
from debiaskit.explain.walk_diagnostic import diagnose_run, digit_positions, format_table, verdict
from debiaskit.methods import DataSpec
from debiaskit.methods.lad import LAD
from debiaskit.methods.lad.walk import latent_walk, nearest_other_distance, spacing_scale
from debiaskit.models import NetworkFactory
from debiaskit.train import RunConfig, train


def test_stroke_rule_reads_the_white_digit_of_every_background_colour(mnist):
    gray = np.array(mnist.x_train[:500])
    bias = np.arange(500) % 10
    x = torch.from_numpy(colorize_background(gray, bias)).float() / 255
    assert torch.equal(STROKE_RULES["bg_colored_mnist"](x), torch.from_numpy(gray != 0))
    fg = torch.zeros(1, 3, 2, 2)
    fg[0, :, 0, 0] = torch.tensor([0.9, 0.1, 0.0])   # a red stroke pixel on black
    assert STROKE_RULES["colored_mnist"](fg).tolist() == [[[True, False], [False, False]]]


def test_mask_iou_and_digit_positions_by_hand():
    a = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    b = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0])  # empty vs empty: 1
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 3, 0] = True
    assert digit_positions(mask, (2, 2)).tolist() == [[[False, False], [True, False]]]


def test_spacing_scale_and_code_gaps_by_hand():
    codebook = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
    assert nearest_other_distance(codebook).tolist() == pytest.approx(
        [1.0, math.sqrt(18), 5.0, 1.0])
    # codes 0 and 3 are 1 apart; code 1's nearest is code 3 (sqrt 18); code 2's is code 1 (5)
    assert spacing_scale(codebook, torch.tensor([1, 2])) == pytest.approx(
        float(np.median([math.sqrt(18), 5.0])) / math.sqrt(2))


def test_step_scale_multiplies_every_step_and_on_step_sees_each():
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    torch.manual_seed(0)
    h = torch.randn(5, 2, 2, 2)
    seen = []
    identity = (lambda z: z)
    one = latent_walk(f, identity, h, steps=1, alpha=0.1)
    three = latent_walk(f, identity, h, steps=1, alpha=0.1, step_scale=3.0,
                        on_step=lambda step, delta, walked: seen.append((step, delta.norm())))
    assert torch.allclose(three - h, 3 * (one - h), atol=1e-6)
    assert [s for s, _ in seen] == [0]


def test_verdict_needs_all_three_bars():
    good = {"entropy": 0.85 * math.log(10), "class_bias_nmi": 0.04, "shape_iou": 0.81}
    assert verdict(good, 10)["good"]
    for key, bad in (("entropy", 0.79 * math.log(10)), ("class_bias_nmi", 0.06),
                     ("shape_iou", 0.79)):
        result = verdict({**good, key: bad}, 10)
        assert not result["good"] and not result[key]
        assert all(v for k, v in result.items() if k not in (key, "good"))


@pytest.fixture(scope="module")
def small_lad_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lad") / "run"
    cfg = RunConfig(dataset="bg_colored_mnist", method="lad", model="mlp", epochs=1,
                    train_subset=2000, eval_subset=1000, data_dir=data_dir,
                    hparams={"vq_epochs": 2, "vq_batch": 32, "vq_lr": 2e-3, "walk_steps": 3,
                             "alpha": 0.1, "walk_accumulate": True, "f_optimizer": "adam",
                             "f_lr": 1e-3}, progress=False)
    train(cfg, out)
    return out


@pytest.mark.slow
def test_walk_diagnostic_records_every_step_and_leaves_the_run_alone(small_lad_run, data_dir,
                                                                     tmp_path):
    stages = small_lad_run / runs.STAGES
    before = {p.name: p.stat().st_mtime_ns for p in stages.iterdir()}
    result = diagnose_run(small_lad_run, images=300, out=tmp_path / "diag", data_dir=data_dir)
    steps = result["steps"]
    assert [row["step"] for row in steps] == [0, 1, 2, 3]
    assert steps[0]["changed_digit"] == 0 and steps[0]["changed_background"] == 0
    assert steps[-1]["changed_background"] > 0
    assert steps[-1]["entropy"] > steps[0]["entropy"]      # the walk ascends f's entropy
    # rho = 1: the reconstructions keep the class colour, which the probe reads
    assert result["probe_split"] == "unbiased" and steps[0]["class_bias_nmi"] > 0.8
    assert steps[0]["bias_kept"] > 50          # chance: 10 %
    assert 0 < steps[0]["shape_iou"] <= 1 and steps[1]["step_norm"] > 0
    assert steps[1]["step_spacings"] == steps[1]["step_norm"] / steps[1]["code_gap"]
    assert steps[0]["step_spacings"] == 0      # step 0 is the start: no step yet
    assert (tmp_path / "diag" / "walk_diagnostic.png").stat().st_size > 5000
    assert runs.read_json(tmp_path / "diag" / "walk_diagnostic.json")["steps"] == steps
    assert "good walk" in format_table(result) and "step/gap" in format_table(result)
    # a hypothesis (f read at a temperature) reuses the run's VQ-VAE and f, changes the walk
    hot = diagnose_run(small_lad_run, {"f_temperature": 20.0}, images=300,
                       out=tmp_path / "hot", data_dir=data_dir)
    assert hot["settings"]["f_temperature"] == 20.0
    assert hot["steps"][0] == steps[0]
    assert hot["steps"][-1]["changed_background"] != steps[-1]["changed_background"]
    for name in ("vqvae", "bias_classifier"):
        meta = runs.read_json(tmp_path / "hot" / runs.STAGES / f"{name}.json")
        assert meta["reused_from"] == str(stages)
    assert {p.name: p.stat().st_mtime_ns for p in stages.iterdir()} == before


@pytest.mark.slow
def test_walk_diagnostic_bad_input_exits_2(tmp_path, capsys, small_lad_run, data_dir):
    assert main(["explain", "lad-walk", str(tmp_path / "nothing")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # a folder, but no LAD run in it
    assert main(["explain", "lad-walk", str(tmp_path / "empty")]) == 2
    assert "train one with --method lad" in capsys.readouterr().err
    assert main(["explain", "lad-walk", str(small_lad_run), "--images", "0"]) == 2
    assert main(["explain", "lad-walk", str(small_lad_run), "--hp", "walk_views=2",
                 "--out", str(tmp_path / "x"), "--data-dir", data_dir]) == 2
    assert "walk_augment" in capsys.readouterr().err
    assert not (tmp_path / "x" / "walk_diagnostic.json").exists()


@pytest.mark.slow
def test_walk_views_and_f_options(small_lad_run, data_dir):
    from debiaskit.stages import StageStore
    from debiaskit.train import prepare

    stored = runs.read_json(small_lad_run / runs.CONFIG)
    hp = {**stored["run"]["hparams"], "walk_views": 2, "walk_augment": "crop_affine",
          "f_steps": 3, "f_optimizer": "sgd", "f_lr": 0.01, "rewalk_every": 2}
    cfg = RunConfig(**{**stored["run"], "hparams": hp}, data_dir=data_dir)
    prep = prepare(cfg)
    store = StageStore(small_lad_run.parent / "views" / runs.STAGES,
                       small_lad_run / runs.STAGES)
    data = prep.method.prepare_training_data(prep.train, prep.evals, store, 0, "cpu")
    n = len(prep.train)
    assert len(data) == 2 * n and torch.equal(data.y[:n], data.y[n:])
    assert not torch.equal(data.x[:n], data.x[n:])          # the views' walks differ
    # a re-walk every 2 epochs: epochs 0-1 draw view 0, epochs 2-3 view 1, then view 0
    pools = [prep.method.begin_epoch(epoch, None) for epoch in range(5)]
    assert torch.equal(pools[0], torch.arange(n)) and torch.equal(pools[1], pools[0])
    assert torch.equal(pools[2], n + torch.arange(n)) and torch.equal(pools[4], pools[0])
    assert store.records["bias_classifier"]["stats"]["f_steps"] == 3
    assert "reused_from" in store.records["vqvae"]          # the VQ-VAE is the run's
    spec = DataSpec(input_shape=(3, 28, 28), num_classes=10, num_train=10,
                    train_targets=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ConfigError, match="walk_augment"):
        LAD(spec, NetworkFactory("mlp", (3, 28, 28), 10), {"walk_views": 3})
