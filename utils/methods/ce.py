"""The "Standard" baseline (docs/method.md, "Cross-entropy"): plain cross-entropy on every noisy label.

    a fresh network, SGD with MultiStepLR(40, 80), trained n_epoch epochs on the whole noisy split;
    test the model whenever its validation accuracy beats the best so far (reported)

Same data, split, network, engine and schedule as Me-Momentum's inner rounds.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from utils.engine import Trainer
from utils.methods.memomentum import LR_MILESTONES
from utils.run.loop import Loop


class CrossEntropy(Loop):
    LIVE_ENTRIES: ClassVar[tuple[str, ...]] = ("model", "optimizer", "scheduler")

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.trainer: Trainer | None = None

    def train(self) -> None:
        s = self.state
        if s.epoch == 0:
            self.trainer = self.task.new_trainer(milestones=LR_MILESTONES)
        while s.epoch < self.config.n_epoch:
            val_acc, record = self.train_one_epoch(self.trainer, None, "ce")
            record["test_acc"] = self.keep_best_and_test(val_acc, self.trainer.model)
            self.end_epoch(record)

    def final_model(self) -> nn.Module | None:
        return self.trainer.model if self.trainer is not None else None

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict() if self.trainer is not None else dict(Trainer.EMPTY_STATE)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["model"] is not None:
            self.trainer = self.task.new_trainer(milestones=LR_MILESTONES)
            self.trainer.load_state_dict(saved)
