"""Reproducible on one machine: the same ``debiaskit train`` command run twice, each time
in a process of its own with the default options, gives the same numbers bit for bit, for
ERM, LfF and DisEnt on the MLP and for ERM on a ResNet-20; every run records what its
numbers depend on (the machine, the library versions, the arithmetic), also for each part
of a run that was resumed under other conditions (docs/reproducibility.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from debiaskit import runs
from debiaskit.methods.base import Method
from debiaskit.models import build_model
from debiaskit.precision import native_bf16
from checks import train_until
from debiaskit.train import RunConfig, train
from debiaskit.train.record import add_part, machine, pack_record, versions

SRC = Path(__file__).resolve().parents[1] / "src"

#: The keys of metrics.jsonl's records that may differ between two runs (timings).
TIMING_KEYS = {"seconds", "train_seconds"}

#: name -> (the options beyond sizes, epochs, threads and --out, the sizes, environment).
#: Only the method and the network are named: every other option is the default (precision
#: auto, which the tests pin to float32 or, where the CPU computes it natively, bf16; pack
#: off; compile auto, which stays off in runs this short).
MLP_SIZES = ["--train-subset", "3000", "--eval-subset", "1000", "--epochs", "2"]
CASES = {
    "erm": (["--method", "erm"], MLP_SIZES, {}),
    "lff": (["--method", "lff"], MLP_SIZES, {}),
    "disent": (["--method", "disent"], MLP_SIZES, {}),
    # a convolutional network: oneDNN's convolutions, batch norm, channels_last weights
    "erm-resnet20": (["--method", "erm", "--model", "resnet20"],
                     ["--train-subset", "600", "--eval-subset", "300", "--epochs", "2"], {}),
    # what auto resolves to on a CPU with native bf16 where its probe finds bf16 faster
    "lff-bf16": (["--method", "lff"], MLP_SIZES, {"DEBIASKIT_PRECISION_AUTO": "bf16"}),
}


def _train_twice(data_dir, tmp_path, options, sizes, env) -> list:
    """``debiaskit train OPTIONS`` into two run directories, in two processes at once (one
    thread each, importing this checkout's debiaskit); returns the two directories."""
    outs = [tmp_path / "a", tmp_path / "b"]
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    procs = [subprocess.Popen(
        [sys.executable, "-m", "debiaskit", "train", *options, *sizes, "--threads", "1",
         "--data-dir", data_dir, "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": path, **env}) for out in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    return outs


@pytest.fixture
def torch_threads():
    """Restores torch's thread count after a test that changes it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _networks(run_dir) -> dict:
    return runs.load_torch(run_dir / runs.MODEL)["networks"]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_same_command_twice_gives_the_same_numbers(case, data_dir, tmp_path):
    options, sizes, env = CASES[case]
    if env.get("DEBIASKIT_PRECISION_AUTO") == "bf16" and not native_bf16("cpu"):
        pytest.skip("this CPU has no native bf16 (auto never chooses bf16 here)")
    a, b = _train_twice(data_dir, tmp_path, options, sizes, env)
    sum_a, sum_b = (runs.read_json(d / runs.SUMMARY) for d in (a, b))
    assert sum_a["metrics"] == sum_b["metrics"]
    assert sum_a["last_epoch_metrics"] == sum_b["last_epoch_metrics"]
    records = [[{k: v for k, v in r.items() if k not in TIMING_KEYS}
                for r in runs.read_metrics(d)] for d in (a, b)]
    assert len(records[0]) == 2 and records[0] == records[1]
    nets_a, nets_b = _networks(a), _networks(b)
    assert nets_a.keys() == nets_b.keys()
    assert all(torch.equal(nets_a[k], nets_b[k]) for k in nets_a)
    # both state the same arithmetic, and the machine they computed on
    for key in ("precision", "compile", "pack", "seed_pack", "machine", "versions"):
        assert sum_a[key] == sum_b[key], key
    assert sum_a["precision"]["precision"] == env.get("DEBIASKIT_PRECISION_AUTO", "fp32")
    assert sum_a["compile"]["compiled"] is False and sum_a["pack"]["packed"] is False


@pytest.mark.slow
def test_every_run_records_what_its_numbers_depend_on(data_dir, tmp_path, torch_threads):
    cfg = RunConfig(method="erm", epochs=1, train_subset=500, eval_subset=200,
                    data_dir=data_dir, progress=False, threads=1)
    summary = train(cfg, tmp_path / "erm")
    config = runs.read_json(tmp_path / "erm" / runs.CONFIG)
    here = machine("cpu")
    assert summary["machine"] == here == config["machine"]
    assert here["threads"] == 1 and here["interop_threads"] >= 1
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert summary["versions"] == versions() == config["versions"]
    assert set(versions()) == {"debiaskit", "python", "torch", "torchvision", "numpy"}
    assert summary["machines"] == [{"from_epoch": 1, "machine": here, "versions": versions(),
                                    "compiled": False, "memory_format": "channels_last"}]
    assert summary["precision"] == config["precision_choice"]
    assert summary["precision"]["requested"] == "auto" and summary["precision"]["reason"]
    assert summary["compile"]["requested"] == "auto" and summary["compile"]["reason"]
    # packing is stated where it does not apply as well
    assert summary["pack"]["mode"] == "off" and summary["pack"]["packed"] is False
    assert "not applicable" in summary["pack"]["reason"]
    assert summary["seed_pack"]["packed"] is False and summary["seed_pack"]["reason"]
    lff = train(replace(cfg, method="lff"), tmp_path / "lff")
    assert lff["pack"] == {"mode": "off", "packed": False}




@pytest.mark.slow
def test_a_run_resumed_under_other_conditions_says_so(data_dir, tmp_path, monkeypatch,
                                                      torch_threads):
    cfg = RunConfig(method="erm", epochs=3, train_subset=500, eval_subset=200,
                    data_dir=data_dir, progress=False, threads=1)
    # resumed with the same threads: one part
    train_until(cfg, tmp_path / "same", monkeypatch)
    same = train(cfg, tmp_path / "same")
    assert [p["from_epoch"] for p in same["machines"]] == [1]
    # resumed with two threads (not part of the run's identity): two parts, in order
    train_until(cfg, tmp_path / "other", monkeypatch)
    other = train(replace(cfg, threads=2), tmp_path / "other")
    parts = other["machines"]
    assert [p["from_epoch"] for p in parts] == [1, 2]
    assert [p["machine"]["threads"] for p in parts] == [1, 2]
    assert all(p["versions"] == versions() for p in parts)
    assert other["machine"]["threads"] == 2  # where it finished
    assert runs.read_json(tmp_path / "other" / runs.CONFIG)["machine"]["threads"] == 1


def test_parts_are_added_only_when_the_conditions_change():
    here = {"machine": {"cpu_capability": "AVX2", "threads": 1}, "versions": {"torch": "2"},
            "compiled": False, "memory_format": "channels_last"}
    there = {**here, "machine": {"cpu_capability": "AVX512", "threads": 1}}
    parts = add_part([], 1, here)
    assert parts == [{"from_epoch": 1, **here}]
    assert add_part(parts, 4, here) == parts  # resumed on the same machine
    parts = add_part(parts, 4, there)
    assert parts == [{"from_epoch": 1, **here}, {"from_epoch": 4, **there}]
    parts = add_part(parts, 7, here)  # and back: three stretches, in order
    assert [p["from_epoch"] for p in parts] == [1, 4, 7]
    assert add_part(parts, 9, {**here, "compiled": True})[-1] == {"from_epoch": 9, **here,
                                                                   "compiled": True}
    assert add_part(parts, 9, {**here, "versions": {"torch": "3"}})[-1]["from_epoch"] == 9


def test_the_pack_record_states_every_mode():
    assert pack_record(False, None)["mode"] == "off"
    assert pack_record("auto", None) == {
        "mode": "auto", "packed": False,
        "reason": "not applicable: the method computes no two networks on one batch"}
    assert pack_record(True, None)["mode"] == "on"
    decided = {"mode": "auto", "packed": True, "packed_ms": 1.0, "separate_ms": 2.0}
    assert pack_record("auto", decided) == decided


def test_pack_on_records_networks_that_cannot_be_packed_as_not_packed():
    convs = [build_model("resnet20", (3, 16, 16), 10) for _ in range(2)]
    for net in convs:
        net.eval()
    method = SimpleNamespace(pack=True, pack_info=None)
    Method.forward_shared(method, convs, torch.rand(2, 3, 16, 16))
    assert method.pack_info == {"mode": "on", "packed": False,
                                "reason": "the networks cannot be packed"}
    mlps = [build_model("mlp", (3, 16, 16), 10) for _ in range(2)]
    method = SimpleNamespace(pack=True, pack_info=None)
    Method.forward_shared(method, mlps, torch.rand(2, 3, 16, 16))
    assert method.pack_info == {"mode": "on", "packed": True}
