"""The training engine shared by every entry point: device choice, one training epoch,
prediction, and the accuracy measures of METHOD.md §3.

Batches come from any iterable of (images, labels) already on the device, so the device
pipeline (MNIST/CIFAR) and a DataLoader (Clothing1M) use the same code.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn


def select_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; any explicit torch device string overrides."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast where the device supports it; a no-op otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass
class EpochStats:
    """Sums over one pass (kept as sums so that distributed ranks can add them up)."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / max(self.count, 1)


class StopRequested(Exception):
    """Raised between batches when the process was asked to stop (SIGTERM/SIGUSR1)."""


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    amp: bool = False, should_stop: Callable[[], bool] | None = None) -> EpochStats:
    """One pass of SGD over `batches`. Loss and accuracy are summed on the device and read once."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for images, labels in batches:
        with autocast(device, amp):
            logits = model(images)
            loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * labels.numel()
        correct += (logits.detach().argmax(1) == labels).sum()
        count += labels.numel()
        if should_stop is not None and should_stop():
            raise StopRequested
    return EpochStats(float(loss_sum), int(correct), count)


def predict_logits(model: nn.Module, batches: Iterable[torch.Tensor], amp: bool = False) -> torch.Tensor:
    """Logits for every batch, concatenated in order (float32, on the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode(), autocast(device, amp):
        for images in batches:
            outputs.append(model(images).float())
    if not outputs:
        return torch.empty(0, 0, device=device)
    return torch.cat(outputs)


def class_balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of per-class accuracy, in percent, rounded to 2 decimals (METHOD.md §3).

    The official code averages over all classes and yields NaN when a class is absent from the
    validation set (so nothing ever counts as an improvement); we average over present classes.
    """
    labels = labels.long()
    totals = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[predictions == labels], minlength=num_classes).double()
    present = totals > 0
    if not bool(present.any()):
        return 0.0
    per_class = 100.0 * hits[present] / totals[present]
    return round(float(per_class.mean()), 2)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy over all examples, in percent (the official printout averages per batch)."""
    if labels.numel() == 0:
        return 0.0
    return 100.0 * float((predictions == labels).sum()) / labels.numel()


def images_only(batches: Iterable[tuple]) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch[0]
