"""Hyper-parameter sweeps: reproducible sampling, resuming, the same numbers on Ray."""

import json
import shutil

import pytest

from debiaskit.bench.sweep import sample_hparams, searchable
from debiaskit.cli import main
from debiaskit.errors import ConfigError
from parity import require_data

ARGS = ("sweep", "lff", "--conflict-ratio", "0.02", "--trials", "3", "--seeds", "1",
        "--search", "lr,q", "--epochs", "1", "--train-subset", "2000", "--eval-subset", "1000")


def test_a_trial_depends_only_on_its_own_number():
    first = [sample_hparams("lff", t) for t in range(6)]
    assert first[0] == {}  # trial 0: the defaults
    assert sample_hparams("lff", 4) == first[4]  # no matter what was drawn before
    assert sample_hparams("lff", 4, ["q", "lr"]) == {k: first[4][k] for k in ("q", "lr")}
    for values in first[1:]:
        assert 1e-4 <= values["lr"] <= 1e-2 and 0.1 <= values["q"] <= 1.0
        assert 0.5 <= values["ema"] <= 0.99 and 1e-6 <= values["weight_decay"] <= 1e-2
    assert len({v["lr"] for v in first[1:]}) == 5
    assert set(searchable("jtt")) == {"lr", "weight_decay", "identification_epochs", "upweight"}
    assert sample_hparams("jtt", 3)["upweight"] in (5, 20, 50, 100)
    with pytest.raises(ConfigError, match="no searchable hyper-parameter gce_code_scale"):
        sample_hparams("lff", 1, ["gce_code_scale"])


def _trials(out):
    return {k: (v["hparams"], v["heldout"], v["test_unbiased"])
            for k, v in json.loads((out / "sweep.json").read_text())["trials"].items()}


@pytest.mark.slow
def test_sweep_resumes_only_unfinished_runs(capsys, tmp_path, data_dir):
    out = tmp_path / "sweep"
    assert main([*ARGS, "--workers", "2", "--out", str(out), "--data-dir", data_dir]) == 0
    text = capsys.readouterr().out
    assert "| trial000 | default | default |" in text and "Best by heldout (label-free)" in text
    assert "LABELLED" in text
    before = _trials(out)
    assert set(before) == {"trial000", "trial001", "trial002"}
    # a run killed midway: its summary and model never written
    for name in ("summary.json", "model.pt"):
        (out / "trial001" / "seed0" / name).unlink()
    assert main([*ARGS, "--workers", "1", "--out", str(out), "--data-dir", data_dir]) == 0
    text = capsys.readouterr().out
    assert "2 of 3 runs already finished; running 1" in text
    assert _trials(out) == before


@pytest.mark.slow
def test_sweep_on_a_local_ray_cluster_equals_the_local_pool(capsys, tmp_path, data_dir):
    ray = pytest.importorskip("ray", reason="the Ray backend is tested where ray is installed")
    results = {}
    for backend in ("pool", "ray"):
        out = tmp_path / backend
        extra = ["--ray", "local"] if backend == "ray" else ["--workers", "2"]
        try:
            assert main([*ARGS, *extra, "--out", str(out), "--data-dir", data_dir]) == 0
        finally:
            if backend == "ray":
                ray.shutdown()
        assert ("Ray cluster local" in capsys.readouterr().out) == (backend == "ray")
        results[backend] = _trials(out)
    assert results["ray"] == results["pool"]


def test_sweep_bad_input(capsys, tmp_path, data_dir):
    out = tmp_path / "sweep"
    for extra, words in ((["--search", "lr,colour"], "no searchable hyper-parameter colour"),
                         (["--rule", "worst_group"], "unknown label-free rule"),
                         (["--trials", "0"], "trials and seeds must be >= 1"),
                         (["--dataset", "colourful_mnist"], "unknown dataset")):
        args = [a for a in ARGS if a not in ("--search", "lr,q")]
        code = main([*args, *extra, "--out", str(out), "--data-dir", data_dir])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and words in err, err
        assert not out.exists()
    shutil.rmtree(out, ignore_errors=True)


GRID = ("sweep", "cff", "--dataset", "bg_shift", "--data", "train_per_class=40",
        "--data", "test_per_class=5", "--hp", "cf=grey", "--grid", "sal_lambda=0.1,10",
        "--rule", "heldout_mixed", "--seeds", "1", "--epochs", "1", "--batch-size", "64")


@pytest.mark.slow
def test_grid_sweep_scores_trials_on_held_out_images_with_other_backgrounds(capsys, tmp_path,
                                                                           data_dir):
    # one trial per listed value; the label-free rule reads the held-out split seen on
    # other classes' backgrounds (val_mixed), which the masks make without bias labels
    require_data("cifar10.npz")
    out = tmp_path / "grid"
    assert main([*GRID, "--workers", "1", "--out", str(out), "--data-dir", data_dir]) == 0
    text = capsys.readouterr().out
    result = json.loads((out / "sweep.json").read_text())
    trials = result["trials"]
    assert [t["hparams"] for t in trials.values()] == [{"sal_lambda": 0.1},
                                                        {"sal_lambda": 10}]
    for name, trial in trials.items():
        summary = json.loads((out / name / "seed0" / "summary.json").read_text())
        assert trial["heldout_mixed"] == summary["metrics"]["val_mixed"]["accuracy"]
    from debiaskit.bench.sweep import RULES
    rule = RULES["heldout_mixed"]
    assert not rule.labelled and rule.selection == "heldout"
    assert rule.score([{"metrics": {"val": {"accuracy": 90.0}, "val_mixed": {"accuracy": 40.0}}},
                       {"metrics": {"val": {"accuracy": 80.0},
                                    "val_mixed": {"accuracy": 50.0}}}]) == 45.0
    assert rule.value({"metrics": {"val": {"accuracy": 90.0}}}) is None  # no masks
    scores = {k: v["heldout_mixed"] for k, v in trials.items()}
    assert result["best"]["heldout_mixed"] == max(scores, key=scores.get)
    assert "Best by heldout_mixed (label-free)" in text


def test_grid_bad_input(capsys, tmp_path, data_dir):
    out = tmp_path / "grid"
    base = [a for a in GRID if a not in ("--grid", "sal_lambda=0.1,10")]
    for extra, words in ((["--grid", "sal_lambda=-1,1"], "sal_lambda=-1"),
                         (["--grid", "sal_lambda"], "must look like NAME=V1,V2"),
                         (["--grid", "sal_lambda=1", "--search", "lr"],
                          "give --grid or --search, not both"),
                         (["--grid", "colour=1,2"], "colour")):
        code = main([*base, *extra, "--out", str(out), "--data-dir", data_dir])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and words in err, err
        assert not out.exists()
