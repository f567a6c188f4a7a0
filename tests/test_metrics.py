"""Metrics against hand-computed examples."""

import math

import pytest
import torch

from debiaskit.metrics import classification_metrics


def _example():
    # cells (y, b): (0,0) 4 samples 3 right; (0,1) 2 samples 1 right;
    #               (1,0) 2 samples 0 right; (1,1) 2 samples 2 right
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    b = torch.tensor([0, 0, 0, 0, 1, 1, 0, 0, 1, 1])
    pred = torch.tensor([0, 0, 0, 1, 0, 1, 0, 0, 1, 1])
    return pred, y, b


def test_hand_computed_cells():
    m = classification_metrics(*_example(), num_classes=2, num_bias=2)
    assert m["cells"] == [[75.0, 50.0], [0.0, 100.0]]
    assert m["accuracy"] == 60.0
    assert m["unbiased"] == (75 + 50 + 0 + 100) / 4
    assert m["aligned"] == (75 + 100) / 2
    assert m["conflicting"] == (50 + 0) / 2
    assert m["bias_gap"] == 87.5 - 25.0
    assert m["worst_group"] == 0.0


def test_other_alignment():
    # class 0 pairs with bias 1 and class 1 with bias 0: aligned/conflicting swap
    pred, y, b = _example()
    m = classification_metrics(pred, y, b, 2, 2, aligned_bias=torch.tensor([1, 0]))
    assert m["aligned"] == 25.0 and m["conflicting"] == 87.5


def test_empty_cells_are_left_out():
    y = torch.tensor([0, 0, 1])
    b = torch.tensor([0, 0, 0])
    pred = torch.tensor([0, 1, 1])
    m = classification_metrics(pred, y, b, 2, 2)
    assert math.isnan(m["cells"][0][1]) and math.isnan(m["cells"][1][1])
    assert m["unbiased"] == (50 + 100) / 2
    assert m["aligned"] == 50.0 and m["conflicting"] == 100.0


def test_without_bias_labels_only_accuracy_and_class_mean():
    # class 0: 3 samples, 2 right (66.67 %); class 1: 1 sample, right (100 %)
    m = classification_metrics(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
    assert m == {"accuracy": 75.0, "class_mean": pytest.approx(250 / 3)}


def test_class_mean_and_mean_hand_computed():
    # _example: class 0 has 6 samples, 4 right (66.67 %); class 1 has 4 samples, 2 right
    # (50 %): class mean (66.67 + 50) / 2 = 58.33, while the sample accuracy is 6/10 = 60.
    pred, y, b = _example()
    with_bias = classification_metrics(pred, y, b, num_classes=2, num_bias=2)
    without = classification_metrics(pred, y, num_classes=2)
    for m in (with_bias, without):
        assert math.isclose(m["class_mean"], (400 / 6 + 50) / 2)
        assert m["accuracy"] == 60.0
    # mean = (aligned + conflicting) / 2 = (87.5 + 25) / 2; unbiased (4 cells) is 56.25 too
    assert with_bias["mean"] == 56.25
    # a class absent from y is left out of the class mean: (100 + 0) / 2 over classes 0, 2
    m = classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 2]), num_classes=3)
    assert m["class_mean"] == 50.0


def test_expected_calibration_error_hand_computed():
    from debiaskit.metrics import expected_calibration_error
    # bins of width 0.5: (0, 0.5] holds 0.3 (wrong) and 0.4 (right): |1/2 - 0.35| = 0.15;
    # (0.5, 1] holds 0.9, 0.9 (right) and 0.6 (wrong): |2/3 - 0.8| = 2/15
    conf = torch.tensor([0.3, 0.4, 0.9, 0.9, 0.6])
    right = torch.tensor([False, True, True, True, False])
    expected = 100 * (2 / 5 * 0.15 + 3 / 5 * 2 / 15)
    assert expected_calibration_error(conf, right, bins=2) == pytest.approx(expected)
    # confidence equal to accuracy within every bin: perfectly calibrated
    assert expected_calibration_error(torch.tensor([1.0, 1.0, 0.5, 0.5]),
                                      torch.tensor([True, True, True, False])) == pytest.approx(0)
    assert math.isnan(expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=bool)))


def test_ece_per_split_and_per_cell():
    y = torch.tensor([0, 0, 1, 1])
    b = torch.tensor([0, 1, 1, 1])
    pred = torch.tensor([0, 1, 1, 0])
    conf = torch.tensor([0.8, 0.6, 0.9, 0.7])
    out = classification_metrics(pred, y, b, num_classes=2, num_bias=2, confidence=conf)
    # one 15-bin ECE over all four; cell (1, 1) holds a right 0.9 and a wrong 0.7, in
    # different bins: (0.1 + 0.7) / 2
    assert out["ece_cells"][0][0] == pytest.approx(20.0)   # right at 0.8
    assert out["ece_cells"][0][1] == pytest.approx(60.0)   # wrong at 0.6
    assert out["ece_cells"][1][1] == pytest.approx(40.0)
    assert math.isnan(out["ece_cells"][1][0])
    assert out["ece"] == pytest.approx(100 * (0.2 + 0.6 + 0.1 + 0.7) / 4)
    plain = classification_metrics(pred, y, confidence=conf)
    assert plain["ece"] == pytest.approx(out["ece"]) and "ece_cells" not in plain


def test_unbiased_is_the_mean_over_cells_not_of_aligned_and_conflicting():
    # 3 classes x 3 bias values: 3 aligned and 6 conflicting cells (Colored MNIST has 10 and
    # 90), so the mean over cells differs from (aligned + conflicting) / 2. One sample per
    # cell, two in cell (2, 0): every aligned cell right, conflicting cells (0, 1) and
    # (2, 0) right (the latter 1 of 2), the rest wrong.
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    b = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 2])
    pred = torch.tensor([0, 0, 1, 0, 1, 0, 2, 0, 0, 2])
    m = classification_metrics(pred, y, b, num_classes=3, num_bias=3)
    assert m["cells"] == [[100.0, 100.0, 0.0], [0.0, 100.0, 0.0], [50.0, 0.0, 100.0]]
    assert m["aligned"] == 100.0
    assert m["conflicting"] == pytest.approx((100 + 0 + 0 + 0 + 50 + 0) / 6)  # 25
    assert m["unbiased"] == pytest.approx((3 * 100 + 100 + 50) / 9)  # 50, not 62.5
    assert m["mean"] == pytest.approx(62.5)
    assert m["accuracy"] == 50.0  # 5 of 10 samples
