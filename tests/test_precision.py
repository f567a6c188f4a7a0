"""``--precision auto``: the rule, the probe, the run's record, resume, and the bench."""

import json

import pytest
import torch

from debiaskit import precision, runs
from debiaskit.errors import ConfigError
from debiaskit.train import RunConfig, check_config, same_run, train

SMALL = dict(data_params={"conflict_ratio": 0.02}, train_subset=600, eval_subset=500,
             progress=False, threads=1, epochs=1)


def _never():
    raise AssertionError("the probe must not run")


@pytest.mark.parametrize("bf16_seconds, chosen", [(0.9, "bf16"), (0.5, "bf16"),
                                                  (0.91, "fp32"), (1.2, "fp32")])
def test_auto_picks_bf16_only_when_native_and_at_least_ten_percent_faster(
        monkeypatch, bf16_seconds, chosen):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    got, reason = precision.choose_precision(
        "auto", "cpu", lambda: {"fp32": 1.0, "bf16": bf16_seconds})
    assert got == chosen
    assert f"({bf16_seconds:.2f}x; bf16 needs <= 0.9x)" in reason


def test_auto_without_native_bf16_is_float32_without_probing(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    got, reason = precision.choose_precision("auto", "cpu", _never)
    assert got == "fp32" and "no native bf16" in reason
    # an explicit precision is taken as it is
    assert precision.choose_precision("bf16", "cpu", _never) == ("bf16", "requested")


def test_probe_times_both_precisions_and_leaves_the_rng_alone():
    from debiaskit.models import NetworkFactory
    make = NetworkFactory("mlp", (3, 28, 28), 10, {})
    state = torch.get_rng_state()
    seconds = precision.probe_seconds(make, (3, 28, 28), 10, 256, rounds=1)
    assert set(seconds) == {"fp32", "bf16"} and all(v > 0 for v in seconds.values())
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.slow
def test_auto_resolves_in_the_run_records_why_and_remembers(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("DEBIASKIT_PRECISION_AUTO", raising=False)
    monkeypatch.setenv("DEBIASKIT_PRECISION_CACHE", str(tmp_path / "choices.json"))
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    monkeypatch.setattr(precision, "probe_seconds", lambda *a, **k: {"fp32": 1.0, "bf16": 0.5})
    summary = train(RunConfig(method="erm", data_dir=data_dir, **SMALL), tmp_path / "a")
    stored = runs.read_json(tmp_path / "a" / runs.CONFIG)
    assert stored["run"]["precision"] == "bf16"  # the identity holds the resolved precision
    assert summary["precision"]["requested"] == "auto"
    assert summary["precision"]["precision"] == "bf16"
    assert summary["precision"]["reason"].startswith("auto: bf16 autocast; native bf16")
    assert stored["precision_choice"] == summary["precision"]
    assert "bf16 autocast" in summary["protocol"]
    # the choice is remembered for this machine and network: no second probe
    monkeypatch.setattr(precision, "probe_seconds", _never)
    again = train(RunConfig(method="erm", data_dir=data_dir, **SMALL), tmp_path / "b")
    assert again["precision"]["precision"] == "bf16"
    assert again["precision"]["reason"].endswith(f"(remembered in {tmp_path / 'choices.json'})")
    # another network is probed anew
    monkeypatch.setattr(precision, "probe_seconds", lambda *a, **k: {"fp32": 1.0, "bf16": 0.95})
    other = train(RunConfig(method="erm", data_dir=data_dir, **{**SMALL, "batch_size": 128}),
                  tmp_path / "c")
    assert other["precision"]["precision"] == "fp32" and "float32, seed" in other["protocol"]


@pytest.mark.slow
def test_the_environment_pins_auto_and_a_bad_value_is_refused(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "probe_seconds", _never)
    monkeypatch.setenv("DEBIASKIT_PRECISION_AUTO", "bf16")
    summary = train(RunConfig(method="erm", data_dir=data_dir, **SMALL), tmp_path / "a")
    assert summary["precision"] == {"requested": "auto", "precision": "bf16",
                                    "reason": "auto: bf16, fixed by DEBIASKIT_PRECISION_AUTO"}
    monkeypatch.setenv("DEBIASKIT_PRECISION_AUTO", "fp16")
    with pytest.raises(ConfigError, match="DEBIASKIT_PRECISION_AUTO=fp16: name fp32 or bf16"):
        train(RunConfig(method="erm", data_dir=data_dir, **SMALL), tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_resumed_run_keeps_the_precision_of_its_first_start(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_PRECISION_AUTO", "bf16")
    cfg = RunConfig(method="erm", data_dir=data_dir, **{**SMALL, "epochs": 2})
    first = train(cfg, tmp_path)
    (tmp_path / runs.SUMMARY).unlink()  # as if interrupted after its last epoch
    (tmp_path / runs.MODEL).unlink()
    monkeypatch.setenv("DEBIASKIT_PRECISION_AUTO", "fp32")  # auto would choose otherwise now
    again = train(cfg, tmp_path)
    assert runs.read_json(tmp_path / runs.CONFIG)["run"]["precision"] == "bf16"
    assert again["precision"]["precision"] == "bf16" and "kept" in again["precision"]
    assert again["metrics"] == first["metrics"]


def test_auto_matches_a_stored_run_of_either_precision():
    cfg = check_config(RunConfig(method="erm"))
    for stored_precision in ("fp32", "bf16"):
        stored = {"run": {**runs.json_safe(cfg.identity()), "precision": stored_precision}}
        assert same_run(cfg, stored)
        explicit = RunConfig(**{**vars(cfg), "precision": "fp32"})
        assert same_run(explicit, stored) == (stored_precision == "fp32")
    # a run from before precision existed trained in float32
    old = {"run": {k: v for k, v in runs.json_safe(cfg.identity()).items() if k != "precision"}}
    assert same_run(RunConfig(**{**vars(cfg), "precision": "fp32"}), old)
    assert not same_run(RunConfig(**{**vars(cfg), "precision": "bf16"}), old)


def test_bench_chooses_once_for_runs_not_started_and_reports_what_ran(data_dir, tmp_path,
                                                                        monkeypatch):
    from debiaskit.bench import get_preset
    from debiaskit.bench.runner import plan, resolve_auto_precision
    from debiaskit.bench.tables import protocol_lines
    monkeypatch.delenv("DEBIASKIT_PRECISION_AUTO", raising=False)
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    probes = []

    def probe(*a, **k):
        probes.append(1)
        return {"fp32": 1.0, "bf16": 0.5}

    monkeypatch.setattr(precision, "probe_seconds", probe)
    planned = plan(get_preset("quick"), tmp_path, 2, data_dir=data_dir)
    assert {p.config.precision for p in planned} == {"auto"}
    started = planned[0]
    started.run_dir.mkdir(parents=True)
    runs.write_json(started.run_dir / runs.CONFIG,
                    {"run": {**runs.json_safe(started.config.identity()), "precision": "fp32"}})
    log = []
    resolved = resolve_auto_precision(planned, log.append)
    assert len(probes) == 1 and len(log) == 1 and "probe of the run's network" in log[0]
    assert resolved[0].config.precision == "auto"  # resumes in its own precision
    assert {p.config.precision for p in resolved[1:]} == {"bf16"}
    text = " ".join(protocol_lines(get_preset("quick"), resolved))
    assert f"mixed precisions: bf16 autocast in {len(planned) - 1} runs, float32 in 1 runs" \
        in text, text
    assert json.dumps(resolved[1].config.identity())  # resolved configs stay plain data
