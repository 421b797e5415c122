"""The accuracy measures of utils/metrics.py, checked on hand-computed examples."""
import torch

from utils.metrics import accuracy, batch_mean_accuracy, class_balanced_accuracy


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
