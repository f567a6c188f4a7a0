"""Metrics against hand-computed examples."""

import math

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


def test_without_bias_labels_only_accuracy():
    m = classification_metrics(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
    assert m == {"accuracy": 75.0}
