"""The trainer: determinism, resume after a kill, model selection, the run directory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from debiaskit import runs
from debiaskit.errors import ConfigError, DebiaskitError
from debiaskit.train import RunConfig, check_config, train

SMALL = dict(data_params={"conflict_ratio": 0.02}, train_subset=6000, eval_subset=2000,
             progress=False, threads=1)


def _evals(run_dir):
    return [r["eval"] for r in runs.read_metrics(run_dir)]


@pytest.mark.slow
def test_same_seed_same_numbers(data_dir, tmp_path):
    a = train(RunConfig(method="lff", epochs=2, data_dir=data_dir, **SMALL), tmp_path / "a")
    b = train(RunConfig(method="lff", epochs=2, data_dir=data_dir, **SMALL), tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    c = train(RunConfig(method="lff", epochs=2, seed=1, data_dir=data_dir, **SMALL), tmp_path / "c")
    assert c["metrics"] != a["metrics"]


#: The keys of metrics.jsonl's records that may differ between two runs (timings);
#: summary.json's timings, memory and pack decision are not compared either.
TIMING_KEYS = {"seconds", "train_seconds"}


def _run_numbers(run_dir):
    """A finished run's numbers: its epoch records (timings dropped), its summary's
    metrics and selection, and its saved tensors (trained networks, sample weights)."""
    import torch
    records = [{k: v for k, v in r.items() if k not in TIMING_KEYS}
               for r in runs.read_metrics(run_dir)]
    summary = runs.read_json(run_dir / runs.SUMMARY)
    kept = {k: summary[k] for k in ("metrics", "last_epoch_metrics", "selected_epoch",
                                     "epochs_trained", "seed")}
    tensors = {}
    for name in (runs.MODEL, runs.WEIGHTS):
        if (run_dir / name).exists():
            saved = torch.load(run_dir / name, map_location="cpu", weights_only=False)
            stack = [(name, saved)]
            while stack:  # every tensor in the saved (nested) dicts, by its key path
                key, value = stack.pop()
                if isinstance(value, dict):
                    stack.extend((f"{key}/{k}", v) for k, v in value.items())
                elif isinstance(value, torch.Tensor):
                    tensors[key] = value
    return records, kept, tensors, summary.get("pack")


@pytest.mark.slow
def test_same_seed_same_numbers_in_two_processes(data_dir, tmp_path):
    # `debiaskit train` twice, each in a process of its own with the default options (a
    # tiny run): per-process choices (pack "auto" times the first batch and is remembered
    # for the rest of the process) must not change the numbers, which
    # test_same_seed_same_numbers, in one process, cannot see
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        proc = subprocess.run(
            [sys.executable, "-m", "debiaskit", "train", "--method", "lff",
             "--train-subset", "2000", "--eval-subset", "1000", "--epochs", "1",
             "--data-dir", data_dir, "--out", str(out)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "DEBIASKIT_CACHE": str(out) + "-cache"})
        assert proc.returncode == 0, proc.stderr
    (rec_a, sum_a, ten_a, pack_a), (rec_b, sum_b, ten_b, pack_b) = map(_run_numbers, outs)
    why = f"same seed, two processes, different numbers (pack: {pack_a} vs {pack_b})"
    assert sum_a["seed"] == 0 and len(rec_a) == 1 and ten_a
    assert rec_a == rec_b, why
    assert sum_a == sum_b, why
    assert ten_a.keys() == ten_b.keys(), why
    import torch
    differ = [k for k in ten_a if not (ten_a[k].dtype == ten_b[k].dtype
                                       and torch.equal(ten_a[k], ten_b[k]))]
    assert not differ, f"{why}: tensors {differ}"
    # where the numbers were computed is on record (what reproduces where: docs/bench.md)
    machine = json.loads((outs[0] / "summary.json").read_text())
    assert machine["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["machine"]["device"] == "cpu" and machine["machine"]["threads"] >= 1
    assert machine["versions"]["torch"] == torch.__version__


def _cli_train(data_dir, out, epochs):
    return [sys.executable, "-m", "debiaskit.cli", "train", "--method", "lff",
            "--conflict-ratio", "0.02", "--train-subset", "6000", "--eval-subset", "2000",
            "--threads", "1", "--epochs", str(epochs), "--data-dir", data_dir, "--out", str(out),
            # two separate runs with --pack auto may choose differently (timing), which
            # changes float rounding; a resumed run keeps its own choice (the checkpoint)
            "--pack", "on"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(data_dir, tmp_path):
    epochs = 6
    subprocess.run(_cli_train(data_dir, tmp_path / "whole", epochs), check=True,
                   capture_output=True)
    proc = subprocess.Popen(_cli_train(data_dir, tmp_path / "cut", epochs),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "cut" / runs.METRICS
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(runs.read_metrics(tmp_path / "cut"))
    assert 2 <= done_before < epochs, "the kill must land mid-run"
    assert not runs.is_finished(tmp_path / "cut")
    subprocess.run(_cli_train(data_dir, tmp_path / "cut", epochs), check=True, capture_output=True)
    assert [r["epoch"] for r in runs.read_metrics(tmp_path / "cut")] == list(range(1, epochs + 1))
    assert _evals(tmp_path / "cut") == _evals(tmp_path / "whole")
    whole = runs.read_json(tmp_path / "whole" / runs.SUMMARY)
    cut = runs.read_json(tmp_path / "cut" / runs.SUMMARY)
    assert cut["metrics"] == whole["metrics"]


@pytest.mark.slow
def test_run_directory_contents(data_dir, tmp_path):
    train(RunConfig(method="erm", epochs=2, data_dir=data_dir, **SMALL), tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [runs.CONFIG, runs.METRICS, runs.SUMMARY, runs.MODEL])
    config = runs.read_json(tmp_path / runs.CONFIG)
    assert config["run"]["seed"] == 0 and len(config["data"]["train_checksum"]) == 64
    assert {"torch", "torchvision", "numpy", "debiaskit"} <= set(config["versions"])
    lines = (tmp_path / runs.METRICS).read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert "last epoch" in runs.read_json(tmp_path / runs.SUMMARY)["protocol"]


@pytest.mark.slow
def test_finished_run_is_never_overwritten(data_dir, tmp_path):
    train(RunConfig(method="erm", epochs=1, data_dir=data_dir, **SMALL), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DebiaskitError, match="finished run"):
        train(RunConfig(method="erm", epochs=1, data_dir=data_dir, **SMALL), tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_unfinished_run_with_other_config_is_refused(data_dir, tmp_path):
    (tmp_path / runs.CONFIG).write_text(json.dumps({"run": {"method": "lff"}}))
    with pytest.raises(DebiaskitError, match="different configuration"):
        train(RunConfig(method="erm", epochs=1, data_dir=data_dir, **SMALL), tmp_path)


@pytest.mark.slow
def test_heldout_selection_picks_the_best_validation_epoch(data_dir, tmp_path):
    s = train(RunConfig(method="erm", epochs=4, selection="heldout", data_dir=data_dir, **SMALL),
              tmp_path)
    records = runs.read_metrics(tmp_path)
    val = [r["eval"]["val"]["accuracy"] for r in records]
    assert s["selected_epoch"] == 1 + val.index(max(val))
    assert s["metrics"] == records[s["selected_epoch"] - 1]["eval"]
    config = runs.read_json(tmp_path / runs.CONFIG)
    assert config["data"]["train_size"] == 5400  # 10 % of 6000 held out


@pytest.mark.slow
def test_oracle_is_labelled(data_dir, tmp_path):
    s = train(RunConfig(method="erm", epochs=2, selection="oracle", data_dir=data_dir, **SMALL),
              tmp_path)
    assert "TEST-SET ORACLE" in s["protocol"]
    tests = [r["eval"]["test"]["unbiased"] for r in runs.read_metrics(tmp_path)]
    assert s["metrics"]["test"]["unbiased"] == max(tests)


def test_worst_group_selection_needs_bias_labels(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="bias labels"):
        train(RunConfig(method="erm", selection="worst_group", drop_bias_labels=True,
                        data_dir=data_dir, **SMALL), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "f.json"
    runs.write_json(path, {"a": 1})

    def boom(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(DebiaskitError, match="disk full"):
        runs.atomic_write(path, boom)
    assert runs.read_json(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["f.json"]


@pytest.mark.slow
def test_bf16_autocast_trains_like_float32_and_says_so(data_dir, tmp_path):
    fp32 = train(RunConfig(method="lff", epochs=2, data_dir=data_dir, **SMALL), tmp_path / "a")
    bf16 = train(RunConfig(method="lff", epochs=2, precision="bf16", force_precision=True,
                           data_dir=data_dir, **SMALL), tmp_path / "b")
    assert bf16["metrics"] != fp32["metrics"]  # the passes really ran in bfloat16
    assert set(bf16["metrics"]) == set(fp32["metrics"])
    for split in fp32["metrics"]:  # the final and the biased model, aligned and conflicting
        for column in ("aligned", "conflicting"):
            assert abs(bf16["metrics"][split][column] - fp32["metrics"][split][column]) < 3.0
    assert "bf16 autocast" in bf16["protocol"] and "float32, seed" in fp32["protocol"]
    with pytest.raises(ConfigError, match="precision"):
        train(RunConfig(method="erm", precision="fp8", data_dir=data_dir, **SMALL), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_bf16_refused_without_native_bf16_unless_forced(data_dir, tmp_path, monkeypatch):
    from debiaskit import precision
    cfg = RunConfig(method="erm", epochs=1, precision="bf16", data_dir=data_dir, **SMALL)
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    with pytest.raises(ConfigError, match="no native bf16 .*--precision fp32.*--force-precision"):
        train(cfg, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert check_config(RunConfig(**{**vars(cfg), "force_precision": True})).precision == "bf16"
    check_config(RunConfig(**{**vars(cfg), "precision": "fp32"}))  # float32 always runs
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    assert check_config(cfg).precision == "bf16"


@pytest.mark.slow
def test_run_written_before_a_config_field_existed_resumes(data_dir, tmp_path):
    cfg = check_config(RunConfig(method="erm", epochs=1, data_dir=data_dir, **SMALL))
    old = {k: v for k, v in runs.json_safe(cfg.identity()).items() if k != "precision"}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / runs.CONFIG).write_text(json.dumps({"run": old}))
    assert train(cfg, tmp_path)["epochs_trained"] == 1


@pytest.mark.slow
def test_unfinished_run_on_changed_data_is_refused(data_dir, tmp_path):
    # a run interrupted before its data (or the code generating it) changed must not resume
    # on the new data: the stored training-set checksum is compared
    cfg = RunConfig(method="erm", epochs=1, data_dir=data_dir, **SMALL)
    train(cfg, tmp_path)
    (tmp_path / runs.SUMMARY).unlink()  # as if interrupted
    stored = runs.read_json(tmp_path / runs.CONFIG)
    stored["data"]["train_checksum"] = "0" * 64
    runs.write_json(tmp_path / runs.CONFIG, stored)
    with pytest.raises(DebiaskitError, match="other training data"):
        train(cfg, tmp_path)


@pytest.mark.slow
def test_eval_every_records_fewer_epochs_and_trains_the_same(data_dir, tmp_path):
    every = train(RunConfig(method="erm", epochs=3, data_dir=data_dir, **SMALL), tmp_path / "a")
    sparse = train(RunConfig(method="erm", epochs=3, eval_every=2, data_dir=data_dir, **SMALL),
                   tmp_path / "b")
    assert ["eval" in r for r in runs.read_metrics(tmp_path / "b")] == [False, True, True]
    assert sparse["metrics"] == every["metrics"]  # the same networks, evaluated at the end
    assert runs.read_metrics(tmp_path / "b")[1]["eval"] == _evals(tmp_path / "a")[1]
    with pytest.raises(ConfigError, match="selection last"):
        train(RunConfig(method="erm", selection="heldout", eval_every=2, data_dir=data_dir,
                        **SMALL), tmp_path / "c")
    assert not (tmp_path / "c").exists()
