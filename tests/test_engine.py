"""The accuracy measures and device choice of utils/engine.py."""
import torch

from utils.engine import EpochStats, accuracy, class_balanced_accuracy, select_device


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


def test_epoch_stats_means():
    stats = EpochStats(loss_sum=6.0, correct=3, count=4)
    assert stats.loss == 1.5 and stats.accuracy == 75.0


def test_select_device_cpu_and_override():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in {"cuda", "mps", "cpu"}
