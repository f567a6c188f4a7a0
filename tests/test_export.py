"""Exporting run directories to TensorBoard: the scalars equal metrics.jsonl."""

import json

import pytest

from debiaskit.cli import main
from debiaskit.train import RunConfig, train


@pytest.fixture(scope="module")
def two_runs(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for method in ("erm", "lff"):
        train(RunConfig(method=method, data_params={"conflict_ratio": 0.02}, epochs=2,
                        train_subset=2000, eval_subset=1000, data_dir=data_dir, progress=False),
              root / method / "seed0")
    return root


@pytest.mark.slow
def test_tensorboard_export_holds_every_numeric_metric(two_runs, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    runs = [str(two_runs / "erm" / "seed0"), str(two_runs / "lff" / "seed0")]
    assert main(["export", *runs, "--out", str(out)]) == 0
    assert "2 TensorBoard log folder(s)" in capsys.readouterr().out
    events = EventAccumulator(str(out / "lff" / "seed0"))
    events.Reload()
    records = [json.loads(line) for line in
               (two_runs / "lff" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    tags = events.Tags()["scalars"]
    assert {"train/loss_biased", "train/weight_mean", "eval/test/unbiased",
            "eval/biased/test/conflicting", "eval/test/ece", "time/seconds"} <= set(tags)
    assert not any(t.endswith("cells") for t in tags)
    for tag, path in (("eval/test/unbiased", ("eval", "test", "unbiased")),
                      ("train/loss_debiased", ("train", "loss_debiased"))):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        want = []
        for r in records:
            value = r
            for key in path:
                value = value[key]
            want.append((r["epoch"], value))
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert (out / "erm" / "seed0").is_dir()


@pytest.mark.slow
def test_export_bad_input_writes_nothing(two_runs, tmp_path, capsys):
    out = tmp_path / "tb"
    assert main(["export", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a debiaskit run directory" in err
    assert main(["export", str(two_runs / "erm" / "seed0"), "--to", "wandb",
                 "--out", str(out)]) == 2
    assert "unknown tracker 'wandb'" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(two_runs / "erm" / "seed0"), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
