"""The "Standard" baseline (docs/method.md, "Cross-entropy"): plain cross-entropy on every noisy label.

    a fresh network, SGD with MultiStepLR(40, 80), trained n_epoch epochs on the whole noisy split;
    test the model whenever its validation accuracy beats the best so far (reported)

Same data, split, network, engine and schedule as Me-Momentum's inner rounds.
"""
from __future__ import annotations

from typing import Any

from utils.methods.memomentum import LR_MILESTONES
from utils.run.loop import TrainerLoop


class CrossEntropy(TrainerLoop):
    def train(self) -> None:
        s = self.state
        if s.epoch == 0:
            self.trainer = self.task.new_trainer(milestones=LR_MILESTONES)
        while s.epoch < self.config.n_epoch:
            val_acc, record = self.train_one_epoch(self.trainer, None, "ce")
            record["test_acc"] = self.keep_best_and_test(val_acc, self.trainer.model)
            self.end_epoch(record)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["model"] is not None:
            self.trainer = self.task.new_trainer(milestones=LR_MILESTONES)
            self.trainer.load_state_dict(saved)
