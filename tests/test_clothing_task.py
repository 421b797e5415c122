"""utils/clothing_task.py: Clothing1M's class weights and the class-weighted loss (docs/method.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from data.clothing import IGNORED_LABEL
from utils.clothing_task import ClassWeightedLoss
from utils.methods.memomentum_clothing1m import class_weights


def test_class_weights_match_hand_computation():
    # n = [2, 1, 1, 0], v = [1, 1, 2, 4]: mean n = 1, mean v = 2
    weights = class_weights(np.array([2, 1, 1, 0]), np.array([1, 1, 2, 4]))
    assert weights.tolist() == [0.25, 0.5, 1.0, 0.0]  # (1/2)(1/2), (1/1)(1/2), (1/1)(2/2), absent -> 0

def test_class_weighted_loss_is_weighted_cross_entropy_and_ignores_skipped_images():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = ClassWeightedLoss(weights, world_size=1)
    assert loss(logits, labels).item() == pytest.approx(nn.CrossEntropyLoss(weight=weights)(logits, labels).item())
    masked = labels.clone()
    masked[:2] = IGNORED_LABEL
    expected = nn.CrossEntropyLoss(weight=weights)(logits[2:], labels[2:]).item()
    assert loss(logits, masked).item() == pytest.approx(expected)
    per_example = nn.functional.cross_entropy(logits, labels, reduction="none") * weights[labels]
    both_calls = (per_example.sum() + per_example[2:].sum()) / (weights[labels].sum() + weights[labels[2:]].sum())
    assert loss.epoch_loss() == pytest.approx(both_calls.item())  # the weighted mean over the epoch
