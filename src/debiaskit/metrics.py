"""Accuracy metrics of biased-data evaluation, all derived from one (class, bias) matrix.

Definitions (LfF Sec. 4; docs/metrics.md): the cell accuracy ``A[c, b]`` is the accuracy
on test samples of class c with bias value b. *Unbiased* accuracy is the mean over
non-empty cells; *aligned* the mean over the aligned cells (b = g(c), the diagonal here);
*conflicting* the mean over the other cells; the *bias gap* is aligned - conflicting and
*mean* is (aligned + conflicting) / 2 (GBA's CIFAR-10S "mean"; equal to *unbiased* only when
there are as many aligned as conflicting cells); the *worst group* is the smallest cell
accuracy. *Accuracy* is the plain sample mean; *class mean* the unweighted mean of the
per-class accuracies (LfF's BAR metric, Table 6), over the classes that have samples.
With the predictions' confidences (the largest softmax probability), *ece* is the expected
calibration error (Guo et al. 2017) of the split and ``ece_cells`` that of every cell.
"""

from __future__ import annotations

import numpy as np
import torch


def cell_counts(pred: torch.Tensor, y: torch.Tensor, b: torch.Tensor, num_classes: int,
                num_bias: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples, correct) per (class, bias) cell, each of shape (num_classes, num_bias)."""
    cell = (y * num_bias + b).cpu()
    size = num_classes * num_bias
    total = torch.bincount(cell, minlength=size)
    correct = torch.bincount(cell, weights=(pred.cpu() == y.cpu()).double(), minlength=size)
    shape = (num_classes, num_bias)
    return total.reshape(shape).numpy(), correct.reshape(shape).numpy().round().astype(np.int64)


def cell_accuracy(total: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Accuracy (%) of every cell; NaN where a cell has no samples."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * correct / np.maximum(total, 1), np.nan)


def summarize_cells(total: np.ndarray, correct: np.ndarray,
                    aligned_cells: np.ndarray) -> dict[str, float]:
    """All the scalar metrics from a cell matrix; ``aligned_cells`` marks the aligned cells."""
    acc = cell_accuracy(total, correct)
    filled = total > 0
    aligned = acc[aligned_cells & filled]
    conflicting = acc[~aligned_cells & filled]
    mean = (lambda v: float(np.mean(v)) if len(v) else float("nan"))
    out = {
        "accuracy": (100.0 * float(correct.sum()) / int(total.sum()) if total.sum() > 0
                     else float("nan")),
        "unbiased": mean(acc[filled]),
        "aligned": mean(aligned),
        "conflicting": mean(conflicting),
        "worst_group": float(np.min(acc[filled])) if filled.any() else float("nan"),
    }
    out["bias_gap"] = out["aligned"] - out["conflicting"]
    out["mean"] = (out["aligned"] + out["conflicting"]) / 2
    out["class_mean"] = class_mean(total.sum(1), correct.sum(1))
    return out


def class_mean(total: np.ndarray, correct: np.ndarray) -> float:
    """Unweighted mean (%) of the per-class accuracies, over the classes with samples."""
    filled = total > 0
    if not filled.any():
        return float("nan")
    return float(np.mean(100.0 * correct[filled] / total[filled]))


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor,
                               bins: int = 15) -> float:
    """ECE (%, Guo et al. 2017): ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over ``bins``
    equal-width confidence bins ``((m - 1) / M, m / M]``; NaN for no samples."""
    confidence = confidence.detach().cpu().double()
    correct = correct.detach().cpu().double()
    if len(confidence) == 0:
        return float("nan")
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(index, minlength=bins).double()
    gap = (torch.bincount(index, weights=correct, minlength=bins)
           - torch.bincount(index, weights=confidence, minlength=bins)).abs()
    return 100.0 * (gap.sum() / count.sum()).item()


def classification_metrics(pred: torch.Tensor, y: torch.Tensor, b: torch.Tensor | None = None,
                           num_classes: int = 10, num_bias: int = 0,
                           aligned_bias: torch.Tensor | None = None,
                           confidence: torch.Tensor | None = None) -> dict:
    """Metrics of predictions ``pred`` against targets ``y`` (and bias labels ``b``).

    Without bias labels only ``accuracy`` and ``class_mean`` are defined. ``aligned_bias[c]``
    is the bias value aligned with class c (default: c itself). The returned dict also holds
    the cell matrix as ``cells`` (list of lists, NaN for empty cells) when bias labels are
    given. With ``confidence`` (each prediction's largest softmax probability) it adds
    ``ece``, and with bias labels ``ece_cells`` (the ECE of each cell, NaN when empty).
    With bias labels, ``num_bias`` (the number of bias values) must be given.
    """
    if b is not None and num_bias < 1:
        raise ValueError("classification_metrics needs num_bias (the number of bias values) "
                         "with bias labels")
    right = pred.cpu() == y.cpu()
    if b is None:
        size = max(num_classes, int(y.max()) + 1 if len(y) else 0)
        total = torch.bincount(y.cpu(), minlength=size).numpy()
        correct = torch.bincount(y.cpu(), weights=right.double(), minlength=size).numpy()
        out = {"accuracy": 100.0 * right.double().mean().item(),
               "class_mean": class_mean(total, correct)}
    else:
        total, correct = cell_counts(pred, y, b, num_classes, num_bias)
        g = (torch.arange(num_classes) if aligned_bias is None else aligned_bias.cpu()).numpy()
        aligned_cells = np.zeros((num_classes, num_bias), dtype=bool)
        aligned_cells[np.arange(num_classes), g] = True
        out = summarize_cells(total, correct, aligned_cells)
        out["cells"] = cell_accuracy(total, correct).round(4).tolist()
    if confidence is not None:
        out["ece"] = expected_calibration_error(confidence, right)
        if b is not None:
            cell = (y * num_bias + b).cpu()
            out["ece_cells"] = [[round(expected_calibration_error(
                confidence[cell == c * num_bias + k], right[cell == c * num_bias + k]), 4)
                for k in range(num_bias)] for c in range(num_classes)]
    return out


def gradient_ratio(input_grad: torch.Tensor,
                   confounding: torch.Tensor) -> tuple[float, float, float]:
    """LAD's gradient ratio (LAD, Eq. 1): ``(||dL/dz+||, ||dL/dz-||, GR)``.

    ``input_grad`` is the B x C x H x W gradient of the loss with respect to the input
    pixels, ``confounding`` a C x H x W boolean mask of the pixels that carry the
    confounding signal z-; every other pixel is causal (z+). GR < 1: the gradient favours
    the confounder.
    """
    squared = input_grad.detach().pow(2).sum(0)
    causal = squared[~confounding].sum().sqrt().item()
    confound = squared[confounding].sum().sqrt().item()
    return causal, confound, causal / confound if confound > 0 else float("inf")


def next_class_shift(probs_original: torch.Tensor, probs_mixed_next: torch.Tensor,
                     y: torch.Tensor) -> float:
    """CF/F's background reliance (CF/F, Table 3): the mean change (in percentage
    points) of the probability of class ``y + 1 mod K`` from the Original to the Mixed-Next
    test image of the same foreground (rows of the two probability matrices are pairs)."""
    if probs_original.shape != probs_mixed_next.shape or len(y) != len(probs_original):
        raise ValueError("next_class_shift needs paired Original / Mixed-Next probabilities")
    nxt = ((y + 1) % probs_original.shape[1])[:, None].to(probs_original.device)
    return 100.0 * (probs_mixed_next.gather(1, nxt) - probs_original.gather(1, nxt)).mean().item()


def macro_auc(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Macro-averaged one-vs-rest ROC AUC (%) of class probabilities (CF/F's CCT metric),
    by scikit-learn; classes absent from ``y`` are left out of the average."""
    from sklearn.metrics import roc_auc_score
    probs, y = probs.detach().cpu().double().numpy(), y.cpu().numpy()
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError("macro_auc needs at least two classes among the labels")
    scores = [roc_auc_score(y == c, probs[:, c]) for c in present]
    return 100.0 * float(np.mean(scores))
