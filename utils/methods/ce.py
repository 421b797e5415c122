"""The "Standard" baseline (docs/method.md, "Cross-entropy"): plain cross-entropy on every noisy label.

    a fresh network with the task's optimizer and schedule (main.py: SGD with MultiStepLR(40, 80), as
    Me-Momentum's inner rounds; Clothing.py: the official Clothing.py's SGD with MultiStepLR(10, 20)),
    trained n_epoch epochs on the whole noisy training set;
    test the model whenever its validation accuracy beats the best so far (reported)
"""
from __future__ import annotations

from typing import Any

from utils.run.loop import TrainerLoop


class CrossEntropy(TrainerLoop):
    def train(self) -> None:
        s = self.state
        if s.epoch == 0:
            self.trainer = self.task.default_trainer()
        while s.epoch < self.config.n_epoch:
            val_acc, record = self.train_one_epoch(self.trainer, None, "ce")
            record["test_acc"] = self.keep_best_and_test(val_acc, self.trainer.module)
            self.end_epoch(record)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["model"] is not None:
            self.trainer = self.task.default_trainer()
            self.trainer.load_state_dict(saved)
