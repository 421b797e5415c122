"""utils/selection.py: confident-example extraction and its label quality; Clothing1M's per-class checkpoints."""
import numpy as np
import torch

from utils.selection import (agreement_mask, checkpoint_for_each_class, confident_set_quality, examples_by_checkpoint,
                             rebuild_training_set, small_loss_mask, update_best_checkpoints)


def test_agreement_is_prediction_equals_noisy_label():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    noisy = torch.tensor([0, 0, 0])
    assert agreement_mask(logits, noisy).tolist() == [True, False, True]


def test_small_loss_keeps_as_many_per_class_but_the_lowest_losses():
    # Class 1: example 0 agrees (p=0.44), example 1 does not (argmax 2) but has the larger
    # p(label)=0.49, so the smaller loss. One example of class 1 agrees, so small-loss keeps one:
    # example 1. Class 0: examples 2 and 3 agree, 4 does not; small-loss keeps 2 and 3.
    logits = torch.tensor([[0.0, 1.0, 0.9], [-5.0, 1.0, 1.05],
                           [3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    noisy = torch.tensor([1, 1, 0, 0, 0])
    agree = agreement_mask(logits, noisy)
    small = small_loss_mask(logits, noisy, 3)
    assert agree.tolist() == [True, False, True, True, False]
    assert small.tolist() == [False, True, True, True, False]


def test_quality_precision_recall_hand_example():
    noisy = torch.tensor([0, 0, 1, 1, 1])
    clean = torch.tensor([0, 1, 1, 1, 0])
    mask = torch.tensor([True, True, True, False, False])
    q = confident_set_quality(mask, noisy, clean, 2)
    assert q["confident_size"] == 3 and q["per_class_size"] == [2, 1]
    # correct in mask: idx 0 and 2 → precision 2/3; correct overall: idx 0, 2, 3 → recall 2/3
    assert q["precision"] == round(200 / 3, 4) and q["recall"] == round(200 / 3, 4)
    assert q["per_class_precision"] == [50.0, 100.0] and q["per_class_recall"] == [100.0, 50.0]


def test_quality_without_clean_labels():
    q = confident_set_quality(torch.tensor([True]), torch.tensor([0]), None, 2)
    assert q["precision"] is None and q["confident_size"] == 1


# Clothing1M's per-class checkpoints (docs/method.md, "Me-Momentum on Clothing1M")

def test_best_checkpoint_needs_a_strictly_higher_score_and_nan_never_wins():
    scores, files = update_best_checkpoints(np.zeros(3), [None] * 3, np.array([10.0, 0.0, np.nan]), "a")
    assert files == ["a", None, None] and scores.tolist()[:2] == [10.0, 0.0]
    scores, files = update_best_checkpoints(scores, files, np.array([10.0, 5.0, 1.0]), "b")
    assert files == ["a", "b", "b"]  # a tie keeps the earlier checkpoint

def test_a_class_that_never_scored_falls_back_to_the_latest_checkpoint():
    files, fallback = checkpoint_for_each_class(["a", None, "b"], "latest")
    assert files == ["a", "latest", "b"] and fallback == [1]

def test_rebuild_selects_per_class_with_that_class_checkpoint():
    noisy = np.array([0, 1, 0, 2, 1, 2])
    groups = examples_by_checkpoint(noisy, ["a", "b", "a"])
    assert list(groups) == ["a", "b"]
    assert groups["a"].tolist() == [0, 2, 3, 5] and groups["b"].tolist() == [1, 4]
    # predictions of checkpoint a on 0, 2, 3, 5 and of b on 1, 4, written at the examples' positions
    predictions = np.array([0, 1, 1, 2, 0, -1])
    assert rebuild_training_set(noisy, predictions).tolist() == [0, 1, 3]
