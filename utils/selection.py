"""Confident-example extraction (METHOD.md §3) and its label quality, as pure tensor functions."""
from __future__ import annotations

from typing import Any

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
