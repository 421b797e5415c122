"""The accuracy measures of docs/method.md and docs/outputs.md ("Which accuracy is which"): exact
accuracy, the official per-batch mean, the class-balanced validation accuracy (main.py), and
Clothing1M's per-class accuracy, precision and score."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class TestAccuracy(NamedTuple):
    """A model's accuracy on the clean test set, in percent."""

    exact: float      # over every test image (what result.json's test_acc holds)
    official: float   # as the method's own code prints it (Me-Momentum: the mean of per-batch accuracies)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy over all examples, in percent (the official printout averages per batch)."""
    if labels.numel() == 0:
        return 0.0
    return 100.0 * float((predictions == labels).sum()) / labels.numel()


def batch_mean_accuracy(predictions: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """The official printout (docs/method.md, "Where we differ from the official code"): the unweighted mean
    of the accuracies of consecutive batches of `batch_size`, so a smaller last batch counts as much
    as a full one."""
    if labels.numel() == 0:
        return 0.0
    hits = (predictions == labels).cpu().double()
    batch_of = torch.arange(labels.numel()) // batch_size
    per_batch = torch.bincount(batch_of, weights=hits) / torch.bincount(batch_of)
    return 100.0 * float(per_batch.mean())


def class_balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of per-class accuracy, in percent, rounded to 2 decimals (docs/method.md, "Me-Momentum").

    The official code averages over all classes and yields NaN when a class is absent from the
    validation set (so nothing ever counts as an improvement); we average over present classes.
    """
    labels = labels.long()
    totals = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[predictions == labels], minlength=num_classes).double()
    # differs from the official code: such a class is left out of the mean
    present = totals > 0
    if not bool(present.any()):
        return 0.0
    per_class = 100.0 * hits[present] / totals[present]
    return round(float(per_class.mean()), 2)


def per_class_accuracy_precision(predictions: np.ndarray, labels: np.ndarray,
                                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy (recall) and precision in percent, rounded to 2 decimals as officially.

    NaN where undefined (no example of the class; class never predicted), as in the official
    code, so such a class never counts as improved. Predictions < 0 (unreadable images) are left out.
    """
    valid = predictions >= 0
    predicted, truth = predictions[valid], labels[valid]
    totals = np.bincount(truth, minlength=num_classes)[:num_classes]
    predicted_counts = np.bincount(predicted, minlength=num_classes)[:num_classes]
    correct = np.bincount(truth[predicted == truth], minlength=num_classes)[:num_classes]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class_acc = np.around(100 * correct / totals, decimals=2)
        per_class_precision = np.around(100 * correct / predicted_counts, decimals=2)
    return per_class_acc, per_class_precision


def per_class_scores(per_class_acc: np.ndarray, per_class_precision: np.ndarray, beta: float) -> np.ndarray:
    """score_c = beta · a_c + (1 − beta) · p_c (docs/method.md, "Me-Momentum on Clothing1M")."""
    return beta * np.asarray(per_class_acc, dtype=np.float64) + (1 - beta) * np.asarray(
        per_class_precision, dtype=np.float64)


def readable_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over the readable images (prediction −1: unreadable), in percent, exact."""
    valid = predictions >= 0
    return accuracy(torch.from_numpy(predictions[valid]), torch.from_numpy(labels[valid]))
