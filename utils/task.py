"""The task interface: what a method's loop may ask of its data, whatever the dataset
(docs/CONTRIBUTING.md, "Adding a method").

Two tasks implement it: utils/vision_task.py (MNIST, CIFAR-10/100, CIFAR-N, digits; main.py) and
utils/clothing_task.py (Clothing1M, one process or under torchrun; Clothing.py). A method imports no
task module (a test keeps it so): a loop written against this interface alone runs on every dataset
(CE and Co-teaching do). What a task has beyond it is named in `provides`, and a method that needs
such a thing declares it (`Method.needs`): a task without it refuses the method in one line. PES
needs the outputs over the training set (both tasks have them), PES-semi also the vision task's
two-view streams. Me-Momentum's and PES's loops on Clothing1M (their authors' other programs) use
that task's further members: per-class validation, class-weighted loss, per-file predictions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from utils.engine import Trainer
from utils.metrics import TestAccuracy

# What a task may have beyond the interface (Task.provides):
CLEAN_TRAINING_LABELS = "clean training labels"  # the true label of every training example (synthetic noise)
# training_set_logits(model): outputs for every training example, augmented as in training;
# validation_predictions(model): (prediction, noisy label) of every validation example
TRAINING_SET_OUTPUTS = "outputs over the training and validation sets"
# two_view_stream(subset, batch_size): endless batches of two augmented views of a subset;
# generator: the seeded CPU torch.Generator (checkpointed) a method's own random draws come from
TWO_VIEW_STREAMS = "streams of two augmented views"


class Task(Protocol):
    name: str                          # "mnist", "cifar10", ..., "clothing1m": in refusals and result.json
    config: Any                        # the entry point's configuration
    device: torch.device
    num_classes: int
    provides: frozenset[str]           # e.g. CLEAN_TRAINING_LABELS
    train_labels: torch.Tensor         # the noisy label of every training example, on the device
    train_clean_labels: torch.Tensor | None  # their true labels where known (CLEAN_TRAINING_LABELS), else None
    test_labels: torch.Tensor
    assumed_noise_rate: float          # the share of wrong labels a method may assume (e.g. a forget rate)

    @property
    def num_train(self) -> int: ...

    # ---- training
    def training_batches(self, subset: torch.Tensor | None, description: str, drop_last: bool = False
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(augmented images, labels, positions in the training split) of one shuffled pass over the
        examples at `subset` (None: all); under torchrun, this process's share. A progress bar on a
        terminal."""

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's mean cross-entropy as the task trains it."""

    def new_model(self, name: str | None = None) -> nn.Module:
        """A fresh network of the task (the one that trains: DistributedDataParallel under torchrun);
        `name` names another of the task's networks (main.py: models/__init__.py's)."""

    def default_trainer(self) -> Trainer:
        """A fresh network with the task's own optimizer and schedule (its official code's)."""

    def sum_over_processes(self, sums: dict[str, float]) -> dict[str, float]:
        """An epoch's sums added up over the processes (the same dict with one process)."""

    # ---- measuring
    def validate(self, model: nn.Module) -> float:
        """Accuracy on the validation set, as the task's official code measures it."""

    def test(self, model: nn.Module) -> TestAccuracy:
        """Exact test accuracy, and as the official code of the task prints it."""

    def test_predictions(self, model: nn.Module) -> torch.Tensor:
        """The predicted class of every test image (−1: an image that could not be read)."""

    # ---- the run driver's
    def describe(self) -> dict[str, Any]: ...
    def fingerprint(self) -> str: ...
    @property
    def weights_owner_file(self) -> Path: ...
    def official_weights_path(self, which: str) -> Path | None: ...
    def generator_states(self) -> dict[str, torch.Tensor]: ...
    def restore_generators(self, states: dict[str, torch.Tensor]) -> None: ...
