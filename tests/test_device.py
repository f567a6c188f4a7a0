"""Devices: ``--device auto`` and its resolution, refused devices, draws that give every
device the same numbers, checkpoints written on a GPU loaded on a CPU, and
``benchmarks/device_check.sh``. The ``cuda`` tests need a CUDA GPU (skipped elsewhere,
tests/conftest.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from debiaskit import runs
from debiaskit.device import draw, resolve_device
from debiaskit.errors import ConfigError
from checks import benchmark, train_until
from debiaskit.train import RunConfig, check_config, config_from_run, load_trained, train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
SMALL = dict(data_params={"conflict_ratio": 0.02}, train_subset=1000, eval_subset=500,
             progress=False, threads=1)


def _env(tmp_path) -> dict:
    """A subprocess environment that imports this checkout's debiaskit."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable,
            "DEBIASKIT_CACHE": str(tmp_path / "cache")}


# --- resolution ---------------------------------------------------------------------

def test_auto_is_the_default_and_resolves_to_the_gpu_only_where_there_is_one(monkeypatch):
    monkeypatch.delenv("DEBIASKIT_DEVICE", raising=False)
    assert RunConfig().device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    assert check_config(RunConfig()).device == "cpu"  # config.json records this, not auto
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("AUTO") == "cuda"
    assert check_config(RunConfig()).device == "cuda"
    assert resolve_device("cuda:0") == "cuda:0" and resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_auto_is_cpu_on_this_machine_without_a_gpu(monkeypatch):
    monkeypatch.delenv("DEBIASKIT_DEVICE", raising=False)
    assert resolve_device("auto") == "cpu"
    assert check_config(RunConfig(device="auto")).device == "cpu"


def test_the_environment_names_what_auto_stands_for(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("DEBIASKIT_DEVICE", "cpu")  # (as the test suite runs)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda") == "cuda"
    monkeypatch.setenv("DEBIASKIT_DEVICE", "auto")
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DEBIASKIT_DEVICE", "cuda")
    with pytest.raises(ConfigError, match=r"^DEBIASKIT_DEVICE=cuda \(the device --device auto "
                                          r"stands for\): --device cuda: no CUDA GPU"):
        resolve_device("auto")


@pytest.mark.parametrize("name, words", [
    ("gpu", "unknown device 'gpu'; choose one of: auto, cpu, cuda"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("meta", "unsupported device 'meta'"),
])
def test_unknown_devices_are_one_line_errors(name, words):
    with pytest.raises(ConfigError, match=words) as err:
        check_config(RunConfig(device=name))
    assert "\n" not in str(err.value)


def test_a_device_that_is_not_here_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"--device cuda: no CUDA GPU is available here "
                                          r"\(torch .*\); use --device auto or --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\), "
                                          r"cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_train_on_a_missing_gpu_fails_with_exit_2_and_one_line(train_fails_cleanly):
    # on a machine with GPUs, one index past the last is missing just the same
    name = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    train_fails_cleanly(["--device", name], f"--device {name}:")


def test_a_reloaded_run_computes_on_this_machines_device(monkeypatch):
    stored = {"run": RunConfig(method="lff").identity(), "runtime": {"device": "cuda"}}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config_from_run(stored)  # trained on a GPU, reloaded where there is none
    assert cfg.method == "lff" and check_config(cfg).device == "cpu"
    assert config_from_run(stored, device="cpu").device == "cpu"


# --- draws ----------------------------------------------------------------------------

def test_draw_uses_the_generators_device_and_moves_the_numbers():
    like = torch.empty(1, device="meta")  # stands in for a GPU tensor
    out = draw(torch.rand, 5, generator=torch.Generator().manual_seed(3), like=like)
    assert out.device.type == "meta" and out.shape == (5,)
    cpu = draw(torch.rand, 5, generator=torch.Generator().manual_seed(3), like=torch.empty(1))
    assert torch.equal(cpu, torch.rand(5, generator=torch.Generator().manual_seed(3)))
    perm = draw(torch.randperm, 6, generator=torch.Generator().manual_seed(1),
                like=torch.empty(1))
    assert torch.equal(perm, torch.randperm(6, generator=torch.Generator().manual_seed(1)))


def _strict(sample):
    """``sample`` refusing a generator on another device than the draw's, as torch does
    for a CPU generator asked for GPU numbers (the meta device does not check)."""
    def checked(*args, generator=None, device=None, **kwargs):
        if generator is not None and torch.device(device or "cpu") != generator.device:
            raise RuntimeError(f"Expected a '{torch.device(device).type}' device type for "
                               f"generator but found '{generator.device.type}'")
        return sample(*args, generator=generator, device=device, **kwargs)
    return checked


def test_infills_and_fgsm_draw_from_a_cpu_generator_for_images_on_another_device(monkeypatch):
    from debiaskit.data import infill
    from debiaskit.methods.cff import fgsm_background

    for name in ("rand", "randn", "randperm", "randint"):
        monkeypatch.setattr(torch, name, _strict(getattr(torch, name)))
    x = torch.rand(2, 3, 4, 4).to("meta")
    region = torch.zeros(2, 4, 4, dtype=torch.bool).to("meta")
    for fill in (infill.random_fill, infill.shuffle_batch):
        out = fill(x, region, torch.Generator().manual_seed(0))
        assert out.device.type == "meta" and out.shape == x.shape
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).to("meta")
    adv = fgsm_background(model, x, torch.tensor([0, 1]).to("meta"), ~region, 0.1,
                          torch.Generator().manual_seed(0))
    assert adv.device.type == "meta" and adv.shape == x.shape


# --- checkpoints ------------------------------------------------------------------------

def _save_as_if_on_gpu(path: Path, obj, monkeypatch) -> None:
    """Write ``obj`` with every storage tagged ``cuda:0``, as torch.save does on a GPU."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        runs.save_torch(path, obj)


@pytest.mark.skipif(torch.cuda.is_available(), reason="loads a GPU-tagged file onto the CPU "
                    "where there is no GPU")
def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    net = nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()}
    _save_as_if_on_gpu(tmp_path / "ckpt.pt", state, monkeypatch)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does here
        torch.load(tmp_path / "ckpt.pt", weights_only=False)
    loaded = runs.load_torch(tmp_path / "ckpt.pt")
    assert all(v.device.type == "cpu" for v in loaded["net"].values())
    assert torch.equal(loaded["net"]["weight"], net.weight.detach())
    again = nn.Linear(3, 2)
    again.load_state_dict(loaded["net"])
    opt2 = torch.optim.Adam(again.parameters())
    opt2.load_state_dict(loaded["opt"])
    torch.set_rng_state(loaded["rng"])  # needs a CPU ByteTensor




@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="loads GPU-tagged files onto the CPU "
                    "where there is no GPU")
def test_a_run_checkpointed_on_a_gpu_resumes_and_explains_on_the_cpu(data_dir, tmp_path,
                                                                     monkeypatch):
    cfg = RunConfig(method="lff", epochs=2, data_dir=data_dir, **SMALL)
    whole = train(cfg, tmp_path / "whole")
    train_until(cfg, tmp_path / "cut", monkeypatch)
    assert runs.read_json(tmp_path / "cut" / runs.CONFIG)["runtime"]["device"] == "cpu"
    ckpt_path = tmp_path / "cut" / runs.CHECKPOINT
    ckpt = runs.load_verified(ckpt_path)
    assert ckpt["epoch"] == 1 and ckpt["cuda_rng"] is None  # (written on the CPU)
    # as a GPU run would have written it: every storage on cuda:0, the GPU's RNG state too
    ckpt["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    _save_as_if_on_gpu(ckpt_path, ckpt, monkeypatch)
    cut = train(cfg, tmp_path / "cut")  # resumes on the CPU
    assert [r["epoch"] for r in runs.read_metrics(tmp_path / "cut")] == [1, 2]
    assert cut["metrics"] == whole["metrics"]
    model = runs.load_torch(tmp_path / "cut" / runs.MODEL)
    _save_as_if_on_gpu(tmp_path / "cut" / runs.MODEL, model, monkeypatch)
    prep = load_trained(tmp_path / "cut", device="auto")  # (explain's way in)
    assert prep.cfg.device == "cpu"
    loaded = prep.method.networks.state_dict()
    assert loaded.keys() == model["networks"].keys()
    assert all(torch.equal(loaded[k], v) for k, v in model["networks"].items())


# --- device_check.sh ----------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_check_says_in_one_line_that_there_is_no_gpu_and_writes_nothing(tmp_path):
    results = sorted((ROOT / "benchmarks" / "results").iterdir())
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out)], capture_output=True,
                          text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and proc.stderr == "", (proc.stdout, proc.stderr)
    assert lines[0].startswith("device_check: no CUDA GPU on this machine (torch ")
    assert lines[0].endswith("; nothing to measure")
    assert torch.__version__ in lines[0]
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name != "cache"] == []
    assert sorted((ROOT / "benchmarks" / "results").iterdir()) == results


def _device_check():
    return benchmark("device_check")


def test_device_check_times_the_presets_configurations_on_cuda(tmp_path, monkeypatch):
    import debiaskit.train.config as config
    from debiaskit.bench.presets import get_preset

    check = _device_check()
    monkeypatch.setattr(config, "resolve_device", lambda name: name)  # (no GPU here)
    (tmp_path / "data").mkdir()
    cmnist = check.preset_configs("lff-cmnist", "99.0", 2, tmp_path / "data", 512)
    assert set(cmnist) == {"Vanilla", "LfF"}
    vanilla, lff = cmnist["Vanilla"], cmnist["LfF"]
    assert (vanilla.method, lff.method) == ("erm", "lff")
    assert vanilla.device == lff.device == "cuda" and vanilla.threads is None
    assert vanilla.train_subset == 512 and vanilla.epochs == 2 and vanilla.seed == 0
    assert vanilla.model_options == {"input_scale_quirk": True}
    assert lff.hparams == {"gce_code_scale": True}
    assert vanilla.data_params == {**get_preset("lff-cmnist").row("99.0").data_params,
                                   "seed": 0}
    cc10 = check.preset_configs("lff-cc10-type0", "99.0", 3, tmp_path / "data")["LfF"]
    assert (cc10.dataset, cc10.model, cc10.augment) == ("corrupted_cifar10", "resnet20",
                                                        "crop_flip")
    assert cc10.data_params["type"] == "type0" and cc10.data_params["severity"] == 4
    assert cc10.data_params["conflict_ratio"] == pytest.approx(0.01)
    assert cc10.model_options["std"] == [0.2023, 0.1994, 0.201]
    assert cc10.train_subset is None and cc10.epochs == 3


def test_device_check_times_every_precision_with_and_without_compile():
    check = _device_check()
    variants = check.timing_variants(with_compile=True)
    assert variants == [("fp32", "compile_off", False), ("fp32", "compile_on", True),
                        ("bf16", "compile_off", False), ("bf16", "compile_on", True)]
    assert [k for _, k, _ in check.timing_variants(with_compile=False)] == ["compile_off"] * 2


# --- on a CUDA GPU ------------------------------------------------------------------------

def _cli_train(data_dir, out, device, epochs=1):
    return [sys.executable, "-m", "debiaskit", "train", "--method", "lff", "--epochs",
            str(epochs), "--train-subset", "1000", "--eval-subset", "500", "--conflict-ratio",
            "0.02", "--data-dir", data_dir, "--device", device, "--out", str(out)]


def _finite(values) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


@pytest.mark.cuda
@pytest.mark.slow
def test_a_cuda_run_has_the_structure_of_a_cpu_run(data_dir, tmp_path):
    for device in ("cpu", "cuda"):
        subprocess.run(_cli_train(data_dir, tmp_path / device, device, epochs=2), check=True,
                       capture_output=True, env=_env(tmp_path))
    cpu, gpu = ({"summary": runs.read_json(tmp_path / d / runs.SUMMARY),
                 "config": runs.read_json(tmp_path / d / runs.CONFIG),
                 "metrics": runs.read_metrics(tmp_path / d)} for d in ("cpu", "cuda"))
    assert gpu["config"]["runtime"]["device"] == "cuda"
    assert cpu["config"]["run"] == gpu["config"]["run"]  # the device is not the run's identity
    assert gpu["summary"].keys() == cpu["summary"].keys()
    assert gpu["summary"]["machine"]["device"] == "cuda" and gpu["summary"]["machine"]["gpu"]
    for split, m in gpu["summary"]["metrics"].items():
        assert m.keys() == cpu["summary"]["metrics"][split].keys()
        assert _finite(v for v in m.values() if isinstance(v, float))
        assert 0.0 <= m.get("unbiased", m["accuracy"]) <= 100.0
    assert [r["epoch"] for r in gpu["metrics"]] == [1, 2]
    assert all(isinstance(r["train_seconds"], float) for r in gpu["metrics"])
    assert _finite(v for r in gpu["metrics"] for v in r["train"].values())


@pytest.mark.cuda
@pytest.mark.slow
def test_a_run_checkpointed_on_cuda_resumes_on_the_cpu(data_dir, tmp_path, monkeypatch):
    cfg = RunConfig(method="lff", epochs=3, data_dir=data_dir, device="cuda", **SMALL)
    train_until(cfg, tmp_path / "run", monkeypatch)
    ckpt = runs.load_verified(tmp_path / "run" / runs.CHECKPOINT, map_location=None)
    assert ckpt["cuda_rng"] is not None
    assert next(iter(ckpt["method"]["module"].values())).device.type == "cuda"
    first = runs.read_metrics(tmp_path / "run")
    summary = train(replace(cfg, device="cpu"), tmp_path / "run")
    records = runs.read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[0] == first[0]
    assert summary["machine"]["device"] == "cpu" and summary["epochs_trained"] == 3
    assert _finite(v for v in summary["metrics"]["test"].values() if isinstance(v, float))
    # and the finished run (written on the CPU) reloads on the GPU
    prep = load_trained(tmp_path / "run", device="cuda")
    assert next(prep.method.parameters()).device.type == "cuda"


@pytest.mark.cuda
@pytest.mark.slow
def test_device_check_on_the_gpu_writes_its_json(data_dir, tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--train-subset", "1024",
                           "--pair-epochs", "1", "--no-compile", "--data-dir", data_dir],
                          capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["gpu"] == torch.cuda.get_device_name(0)
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["machine"]["device"] == "cuda" and record["machine"]["gpu"] == record["gpu"]
    assert "1 vs 2 epochs" in record["timing_method"]
    for workload in ("colored_mnist", "corrupted_cifar10_type0"):
        for method in ("Vanilla", "LfF"):
            variants = record["timings"][workload][method]
            assert set(variants) == {"fp32", "bf16"}
            fp32 = variants["fp32"]
            assert set(fp32) == {"compile_off"}  # --no-compile
            assert "seconds_per_epoch" in fp32["compile_off"], fp32  # (no error recorded)
            assert isinstance(fp32["compile_off"]["seconds_per_epoch"], float)
            assert fp32["compile_off"]["train_images"] == 1024
            bf16 = variants["bf16"]["compile_off"]
            assert isinstance(bf16.get("seconds_per_epoch"), float) or "skipped" in bf16, bf16
    for method in ("Vanilla", "LfF"):
        pair = record["pair"][method]
        assert 0.0 <= pair["unbiased"] <= 100.0 and 0.0 <= pair["conflicting"] <= 100.0
    assert record["pair"]["epochs"] == 1
    assert "result" in record["seed_packing"], record["seed_packing"]
    for method in ("erm", "lff"):
        assert set(record["seed_packing"]["result"]["results"][method]) == {"G=2", "G=3"}
