"""CF/F's metrics against hand-computed examples: saliency AUPR, input-gradient and
DeepLiftShap maps of a linear model, the next-class shift and the macro AUC."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from debiaskit.errors import ConfigError
from debiaskit.explain.saliency import saliency_aupr, saliency_maps
from debiaskit.metrics import macro_auc, next_class_shift
from parity import require_data


def test_aupr_is_one_for_the_mask_and_the_positive_rate_for_a_constant_map():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :1] = True         # 4 of 16 pixels
    masks[1, :2] = True         # 8 of 16
    masks[2] = True             # all foreground: skipped
    value, scored = saliency_aupr(masks.float(), masks)
    assert (value, scored) == (pytest.approx(100.0), 2)
    value, _ = saliency_aupr(torch.ones(3, 4, 4), masks)
    assert value == pytest.approx(100.0 * (4 / 16 + 8 / 16) / 2)
    # a map that ranks one background pixel above the foreground, by hand
    scores = masks[:1].float().clone()
    scores[0, 3, 3] = 2.0
    value, _ = saliency_aupr(scores, masks[:1])
    # thresholds: 2.0 -> precision 0, recall 0; 1.0 -> precision 4/5, recall 1 (the four
    # tied positives enter together): AP = sum of recall steps x precision = 4/5
    assert value == pytest.approx(100.0 * 4 / 5)
    with pytest.raises(ConfigError, match="scores have shape"):
        saliency_aupr(torch.ones(3, 4, 5), masks)


def _linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    return model, model[1].weight.detach().view(3, 3, 4, 4)


def test_gradient_and_deeplift_shap_maps_of_a_linear_model():
    model, w = _linear()
    x = torch.rand(2, 3, 4, 4)
    y = torch.tensor([2, 0])
    grad = saliency_maps(model, x, y, "gradient")
    assert torch.allclose(grad, torch.stack([w[k].pow(2).sum(0).sqrt() for k in y.tolist()]))
    baselines = torch.rand(5, 3, 4, 4)
    dls = saliency_maps(model, x, y, "deeplift_shap", baselines)
    # linear: w * (x - baseline), averaged over the baselines
    want = torch.stack([(w[k] * (x[i] - baselines.mean(0))).pow(2).sum(0).sqrt()
                        for i, k in enumerate(y.tolist())])
    assert torch.allclose(dls, want, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown saliency method"):
        saliency_maps(model, x, y, "gradcam")


def test_next_class_shift_and_macro_auc_by_hand():
    y = torch.tensor([0, 1, 2])
    original = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]])
    mixed = torch.tensor([[0.4, 0.5, 0.1], [0.1, 0.5, 0.4], [0.3, 0.1, 0.6]])
    # next classes 1, 2, 0: +0.3, +0.3, 0.0 -> +20 points on average
    assert next_class_shift(original, mixed, y) == pytest.approx(20.0)
    assert macro_auc(original, y) == pytest.approx(100.0)
    probs = torch.tensor([[0.6, 0.4], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    # class 0 scores (0.6, 0.4 | 0.7, 0.2): pairs won 2 of 4 -> 0.5; class 1 the same
    assert macro_auc(probs, labels) == pytest.approx(50.0)


@pytest.mark.slow
def test_explain_saliency_on_a_trained_run(tmp_path, data_dir):
    import json
    import subprocess
    import sys
    require_data("cifar10.npz")
    run = tmp_path / "run"
    common = [sys.executable, "-m", "debiaskit"]
    train = subprocess.run(
        common + ["train", "--dataset", "bg_shift", "--data", "train_per_class=30",
                  "--data", "test_per_class=5", "--method", "cff", "--hp", "factual=shuffle",
                  "--epochs", "1", "--data-dir", data_dir, "--out", str(run)],
        capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    for method in ("gradient", "deeplift_shap"):
        proc = subprocess.run(common + ["explain", "saliency", str(run), "--split", "mixed_next",
                                        "--method", method, "--images", "4",
                                        "--data-dir", data_dir], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        result = json.loads((run / f"saliency-mixed_next-{method}.json").read_text())
        assert result["images_scored"] == 50 and 0 < result["aupr"] <= 100
        assert -100 < result["next_class_shift"] < 100  # original / mixed_next are paired
        auc = result["macro_auc"]
        assert set(auc) == {"original", "mixed_same", "mixed_rand", "mixed_next"}
        assert all(0 <= v <= 100 for v in auc.values())
        assert (run / f"saliency-mixed_next-{method}.png").stat().st_size > 5000
    bad = subprocess.run(common + ["explain", "saliency", str(run), "--split", "nope",
                                   "--data-dir", data_dir], capture_output=True, text=True)
    assert bad.returncode == 2 and "no evaluation split 'nope'" in bad.stderr
