"""Metrics against hand-computed examples."""

import math

import numpy as np
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


@pytest.mark.filterwarnings("error")  # an empty mean or 0 / 0 must be handled, not warned
def test_cells_with_no_samples_or_no_conflicting_cell_give_nan_without_warnings():
    from debiaskit.metrics import cell_counts, class_mean, summarize_cells
    total, correct = cell_counts(torch.tensor([0, 1]), torch.tensor([0, 1]),
                                 torch.tensor([0, 1]), 2, 2)
    assert correct.dtype == np.int64 and total.tolist() == [[1, 0], [0, 1]]
    # only aligned cells hold samples: conflicting (and the gap) are NaN, not an error
    m = summarize_cells(total, correct, np.eye(2, dtype=bool))
    assert m["aligned"] == 100.0 and math.isnan(m["conflicting"])
    assert math.isnan(m["bias_gap"]) and m["worst_group"] == 100.0
    empty = summarize_cells(np.zeros((2, 2), int), np.zeros((2, 2), int), np.eye(2, dtype=bool))
    assert all(math.isnan(empty[k]) for k in
               ("accuracy", "unbiased", "aligned", "conflicting", "worst_group", "class_mean"))
    assert math.isnan(class_mean(np.zeros(3, int), np.zeros(3, int)))
    none = classification_metrics(torch.zeros(0, dtype=torch.long),
                                  torch.zeros(0, dtype=torch.long))
    assert math.isnan(none["accuracy"]) and math.isnan(none["class_mean"])


def test_cells_and_ece_cells_are_rounded_to_four_decimals():
    # cell (0, 0): 1 of 3 right -> 33.3333 %; its three predictions at confidence 0.9 in one
    # bin: |1/3 - 0.9| = 56.6667 %
    y = torch.tensor([0, 0, 0, 1])
    b = torch.tensor([0, 0, 0, 1])
    pred = torch.tensor([0, 1, 1, 1])
    conf = torch.tensor([0.9, 0.9, 0.9, 1.0])
    m = classification_metrics(pred, y, b, 2, 2, confidence=conf)
    assert m["cells"][0][0] == 33.3333
    assert m["ece_cells"][0][0] == 56.6667


def test_ece_default_is_fifteen_bins_and_confidence_zero_falls_in_the_first():
    from debiaskit.metrics import expected_calibration_error
    # 0.62 and 0.65 share bin (9/15, 10/15] of 15 bins (|1/2 - 0.635| = 13.5 %) but not
    # with 16 bins ((0.38 + 0.65) / 2 = 51.5 %)
    conf, right = torch.tensor([0.62, 0.65]), torch.tensor([True, False])
    assert expected_calibration_error(conf, right) == pytest.approx(13.5)
    assert expected_calibration_error(conf, right, bins=16) == pytest.approx(51.5)
    # a confidence of 0 counts in the first bin, with 0.05 (right): |1/2 - 0.025|
    assert expected_calibration_error(torch.tensor([0.0, 0.05]), torch.tensor([False, True])
                                      ) == pytest.approx(47.5)


def test_gradient_ratio_without_confounding_gradient_is_infinite_and_below_one_is_kept():
    from debiaskit.metrics import gradient_ratio
    mask = torch.tensor([[[True, False]]])
    causal, confound, ratio = gradient_ratio(torch.tensor([[[[0.0, 0.3]]]]), mask)
    assert (causal, confound) == pytest.approx((0.3, 0.0)) and ratio == float("inf")
    # a confounding gradient below 1 still divides: 0.3 / 0.5
    assert gradient_ratio(torch.tensor([[[[0.5, 0.3]]]]), mask)[2] == pytest.approx(0.6)


def test_unpaired_inputs_are_refused_with_the_whole_message():
    from debiaskit.metrics import macro_auc, next_class_shift
    probs = torch.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"^next_class_shift needs paired Original / "
                                         r"Mixed-Next probabilities$"):
        next_class_shift(probs, probs, torch.tensor([0, 1]))  # only the labels' length
    with pytest.raises(ValueError, match=r"^next_class_shift needs paired"):
        next_class_shift(probs, probs[:2], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^macro_auc needs at least two classes among the "
                                         r"labels$"):
        macro_auc(probs, torch.tensor([1, 1, 1]))


def test_one_sample_and_the_defaults():
    from debiaskit.metrics import summarize_cells
    # one sample, right: 100 % (not NaN: a split of one sample has an accuracy)
    one = summarize_cells(np.array([[1, 0], [0, 0]]), np.array([[1, 0], [0, 0]]),
                          np.eye(2, dtype=bool))
    assert one["accuracy"] == 100.0
    # ten classes unless told otherwise: the cell matrix has a row for each
    pred, y, b = _example()
    assert len(classification_metrics(pred, y, b, num_bias=10)["cells"]) == 10
    with pytest.raises(ValueError, match=r"^classification_metrics needs num_bias \(the "
                                         r"number of bias values\) with bias labels$"):
        classification_metrics(pred, y, b)


def test_one_bias_value_is_allowed():
    # one class, one bias value: a single aligned cell, 2 of 3 right
    m = classification_metrics(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]),
                               torch.tensor([0, 0, 0]), num_classes=1, num_bias=1)
    assert m["cells"] == [[pytest.approx(200 / 3, abs=1e-4)]]
    assert m["unbiased"] == pytest.approx(200 / 3) and math.isnan(m["conflicting"])
