"""``--compile``: when ``auto`` compiles the training step, and that the compiled step trains
what the eager one does."""

import pytest
import torch

from debiaskit import runs
from debiaskit.train import COMPILE_MIN_STEPS, RunConfig, train

SMALL = dict(data_params={"conflict_ratio": 0.02}, eval_subset=500, progress=False,
             threads=1, epochs=1, precision="fp32")


@pytest.mark.slow
@pytest.mark.parametrize("method, model, subset, reason", [
    ("lff", "mlp", 600, "auto: off, no convolutional network"),
    ("groupdro", "resnet20", 300, "auto: off, method groupdro does not declare a compiled step"),
    ("lff", "resnet20", 300, f"auto: off, 2 training steps, fewer than {COMPILE_MIN_STEPS}"),
])
def test_auto_compiles_only_declared_convolutional_runs_long_enough(
        data_dir, tmp_path, method, model, subset, reason):
    summary = train(RunConfig(method=method, model=model, train_subset=subset,
                              batch_size=256 if subset < 600 else 512, data_dir=data_dir,
                              **SMALL), tmp_path)
    assert summary["compile"] == {"requested": "auto", "compiled": False, "reason": reason}


@pytest.mark.slow
def test_compiled_lff_step_trains_what_the_eager_step_trains(data_dir, tmp_path):
    """Both networks, both Adam optimisers and the per-sample EMA tables, compiled as one
    step, end where the eager step ends (up to float rounding)."""
    cfg = dict(method="lff", train_subset=1024, data_dir=data_dir, **SMALL)
    eager = train(RunConfig(**cfg, compile=False), tmp_path / "eager")
    compiled = train(RunConfig(**cfg, compile=True), tmp_path / "compiled")
    assert compiled["compile"] == {"requested": True, "compiled": True, "reason": "requested"}
    assert eager["compile"]["compiled"] is False
    a = runs.load_torch(tmp_path / "eager" / runs.MODEL)["networks"]
    b = runs.load_torch(tmp_path / "compiled" / runs.MODEL)["networks"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    wa = runs.load_torch(tmp_path / "eager" / runs.WEIGHTS)["weights"]
    wb = runs.load_torch(tmp_path / "compiled" / runs.WEIGHTS)["weights"]
    torch.testing.assert_close(wb, wa, rtol=1e-4, atol=1e-5)  # the EMA tables' weights
    assert not torch.equal(wa, torch.ones_like(wa))  # (the tables did move)
    for split, metrics in eager["metrics"].items():
        assert abs(compiled["metrics"][split]["accuracy"] - metrics["accuracy"]) <= 0.2
