"""The accuracy measures of utils/metrics.py (Clothing1M's per-class ones too), checked on hand-computed examples."""
import math

import numpy as np
import pytest
import torch

from utils.metrics import (accuracy, batch_mean_accuracy, class_balanced_accuracy, per_class_accuracy_precision,
                           per_class_scores)


def test_class_balanced_accuracy_hand_example():
    # class 0: 3 of 4 right (75 %), class 1: 1 of 1 (100 %), class 2: 0 of 2 (0 %) → mean 58.33
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 1])
    assert class_balanced_accuracy(preds, labels, 3) == 58.33
    assert accuracy(preds, labels) == 100 * 4 / 7


def test_class_balanced_accuracy_ignores_absent_classes():
    labels = torch.tensor([0, 0, 2])
    preds = torch.tensor([0, 1, 2])
    assert class_balanced_accuracy(preds, labels, 5) == 75.0


def test_class_balanced_accuracy_rounds_to_two_decimals():
    labels = torch.tensor([0, 0, 0])
    preds = torch.tensor([0, 1, 1])
    assert class_balanced_accuracy(preds, labels, 1) == 33.33


def test_batch_mean_accuracy_is_the_unweighted_mean_over_batches():
    predictions = torch.tensor([1, 1, 1, 0, 0])
    labels = torch.tensor([1, 1, 0, 0, 1])
    # batches of 2: [1, 1] 100 %, [1, 0] 50 %, [0] 0 % -> mean 50 %, while the exact accuracy is 60 %
    assert batch_mean_accuracy(predictions, labels, 2) == 50.0
    assert accuracy(predictions, labels) == 60.0
    assert batch_mean_accuracy(predictions, labels, 5) == 60.0
    assert batch_mean_accuracy(torch.tensor([]), torch.tensor([]), 4) == 0.0


def test_per_class_accuracy_precision_and_scores_match_hand_computation():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 0, -1])  # the last image was unreadable: not counted
    acc, precision = per_class_accuracy_precision(predictions, labels, 4)
    # class 0: 2 of 3 right (66.67), predicted 3 times, 2 right (66.67); class 1: 1/2 = 50, 1/2 = 50
    assert acc[:2].tolist() == [66.67, 50.0] and precision[:2].tolist() == [66.67, 50.0]
    assert math.isnan(acc[2]) and math.isnan(precision[2])   # no readable example, never predicted
    assert math.isnan(acc[3]) and math.isnan(precision[3])
    scores = per_class_scores(np.array([50.0, 100.0]), np.array([100.0, 50.0]), beta=0.45)
    assert scores.tolist() == pytest.approx([0.45 * 50 + 0.55 * 100, 0.45 * 100 + 0.55 * 50])  # 77.5, 72.5
