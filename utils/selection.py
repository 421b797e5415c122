"""Confident-example extraction, as pure functions: main.py's agreement rule (docs/method.md,
"Me-Momentum") and its small-loss variant with the label quality of the result, and Clothing1M's
per-class choice of the checkpoint that selects each class's examples (docs/method.md, "Me-Momentum
on Clothing1M")."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


def agreement_mask(logits: torch.Tensor, noisy_labels: torch.Tensor) -> torch.Tensor:
    """The official rule: an example is confident when the predicted class equals its noisy label."""
    return logits.argmax(1) == noisy_labels


def small_loss_mask(logits: torch.Tensor, noisy_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the examples with the smallest cross-entropy, as many as the agreement rule keeps.

    A small-loss variant of the official rule (our option `--select small_loss`): the class sizes
    of the confident set are the same, only the choice within each class differs.
    """
    losses = F.cross_entropy(logits.float(), noisy_labels, reduction="none")
    keep_per_class = torch.bincount(noisy_labels[agreement_mask(logits, noisy_labels)],
                                    minlength=num_classes)
    # Group by class, ascending loss inside each class (two stable sorts), then rank within class.
    by_loss = torch.argsort(losses, stable=True)
    order = by_loss[torch.argsort(noisy_labels[by_loss], stable=True)]
    sorted_labels = noisy_labels[order]
    class_start = torch.cumsum(torch.bincount(noisy_labels, minlength=num_classes), 0)
    class_start = torch.cat([class_start.new_zeros(1), class_start[:-1]])
    rank = torch.arange(len(order), device=logits.device) - class_start[sorted_labels]
    mask = torch.zeros_like(noisy_labels, dtype=torch.bool)
    mask[order] = rank < keep_per_class[sorted_labels]
    return mask


def confident_mask(logits: torch.Tensor, noisy_labels: torch.Tensor, num_classes: int,
                   rule: str = "agree") -> torch.Tensor:
    if rule == "agree":
        return agreement_mask(logits, noisy_labels)
    if rule == "small_loss":
        return small_loss_mask(logits, noisy_labels, num_classes)
    raise ValueError(f"unknown selection rule {rule!r}")


def confident_set_quality(mask: torch.Tensor, noisy_labels: torch.Tensor,
                          clean_labels: torch.Tensor | None, num_classes: int) -> dict[str, Any]:
    """Size, and where clean labels are known, label precision and recall (percent), overall and per class.

    precision: fraction of confident examples whose noisy label is correct;
    recall: fraction of correctly labelled examples that were extracted. Per class = by noisy label.
    """
    sizes = torch.bincount(noisy_labels[mask], minlength=num_classes)
    quality: dict[str, Any] = {"confident_size": int(mask.sum()), "per_class_size": sizes.tolist(),
                               "precision": None, "recall": None,
                               "per_class_precision": None, "per_class_recall": None}
    if clean_labels is None:
        return quality
    correct = noisy_labels == clean_labels
    hits = torch.bincount(noisy_labels[mask & correct], minlength=num_classes)
    correct_total = torch.bincount(noisy_labels[correct], minlength=num_classes)
    quality["precision"] = _percent(hits.sum(), sizes.sum())
    quality["recall"] = _percent(hits.sum(), correct_total.sum())
    quality["per_class_precision"] = [_percent(h, s) for h, s in zip(hits, sizes)]
    quality["per_class_recall"] = [_percent(h, t) for h, t in zip(hits, correct_total)]
    return quality


def _percent(part: torch.Tensor, whole: torch.Tensor) -> float | None:
    return round(100.0 * int(part) / int(whole), 4) if int(whole) > 0 else None


def update_best_checkpoints(best_scores: np.ndarray, best_files: list[str | None], scores: np.ndarray,
                            checkpoint_file: str) -> tuple[np.ndarray, list[str | None]]:
    """Classes whose score strictly beats their best so far now point to `checkpoint_file` (NaN never does)."""
    improved = np.asarray(scores) > np.asarray(best_scores)  # NaN compares False, as officially
    new_scores = np.where(improved, scores, best_scores)
    new_files = [checkpoint_file if better else old for better, old in zip(improved, best_files)]
    return new_scores, new_files


def checkpoint_for_each_class(best_files: list[str | None], latest_file: str) -> tuple[list[str], list[int]]:
    """Each class's best checkpoint; a class that never scored above 0 gets the latest one.

    Officially such a class points to an empty file name and the run crashes (docs/method.md,
    "Where we differ from the official code").
    Returns the files and the classes that fell back.
    """
    fallback = [c for c, name in enumerate(best_files) if name is None]
    return [name if name is not None else latest_file for name in best_files], fallback


def examples_by_checkpoint(noisy_labels: np.ndarray, checkpoint_of_class: list[str]) -> dict[str, np.ndarray]:
    """Which training examples each distinct checkpoint must predict: those whose noisy label points to it."""
    groups: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(checkpoint_of_class):  # distinct, in class order
        classes = [c for c, other in enumerate(checkpoint_of_class) if other == name]
        groups[name] = np.flatnonzero(np.isin(noisy_labels, classes))
    return groups


def rebuild_training_set(noisy_labels: np.ndarray, predictions_by_class_checkpoint: np.ndarray) -> np.ndarray:
    """Positions in the original noisy list whose label's best checkpoint predicts that same label.

    `predictions_by_class_checkpoint[i]` is the prediction for example i of the checkpoint chosen
    for class noisy_labels[i] (−1: not predicted, e.g. an unreadable image). Sorted positions.
    """
    return np.flatnonzero(np.asarray(predictions_by_class_checkpoint) == np.asarray(noisy_labels))
