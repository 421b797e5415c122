"""Me-Momentum on MNIST, CIFAR-10/100 and digits (Bai & Liu, ICCV 2021; docs/method.md, "Me-Momentum").

    S := the whole noisy training split
    repeat max_outer_loop times:                            # outer round
        warm-up: a fresh network, SGD, trained on S until the validation accuracy stops improving by
            more than a margin that grows by 0.1 per epoch without improvement (stop above 2), or
            n_epoch epochs; keep the weights of its last improvement ("latest")
        repeat at most max_inner_loop - 1 times:            # inner round
            reload "latest"; new SGD + MultiStepLR(40, 80)
            S := the examples of the whole split whose prediction equals their noisy label
            train n_epoch epochs on S; keep "latest" whenever validation beats the best of this
                outer round, and test the model whenever it beats the best of the run (reported)
            end the inner rounds when the round did not raise the best validation accuracy
        # the next outer round starts a fresh network on the last confident set S ("momentum")

Inner round 0 is the warm-up. The state is explicit (`MeMomentumState`), so that a checkpoint at the
end of any epoch holds the whole position and a resumed run continues exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from utils.run.loop import LoopState, TrainerLoop, cpu_weights
from utils.selection import confident_mask, confident_set_quality

LR_MILESTONES = (40, 80)        # MultiStepLR of the inner rounds, gamma 0.1
MARGIN_STEP = 0.1               # early-stopping margin grows by 0.1 per epoch without improvement
MARGIN_LIMIT = 2                # ... and the warm-up stops once it exceeds 2 (20 epochs)


def early_stopping_step(val_acc: float, inner_best: float, margin: float) -> tuple[float, float, bool]:
    """The official warm-up rule: improve only by more than the margin; the margin is a float
    accumulated in steps of 0.1 (its rounding decides ties, so it is reproduced exactly)."""
    if val_acc > inner_best + margin:
        return val_acc, 0.0, True
    return inner_best, margin + MARGIN_STEP, False


def warm_up_finished(epochs_done: int, margin: float, n_epoch: int) -> bool:
    return epochs_done >= n_epoch or margin > MARGIN_LIMIT


@dataclass
class MeMomentumState(LoopState):
    margin: float = 0.0          # the warm-up's early-stopping margin
    inner_best: float = 0.0      # best validation accuracy of this outer round
    last_round: float = 0.0      # inner_best at the end of the previous inner round


def me_momentum(task: Any, run: Any, title: str) -> TrainerLoop:
    """Me-Momentum's loop for `task`: the official code is two algorithms, main.py's (this file) and
    Clothing.py's (utils/methods/memomentum_clothing1m.py), both kept as they are."""
    if task.name == "clothing1m":
        from utils.methods.memomentum_clothing1m import MeMomentumClothing1M  # its imports only when needed
        return MeMomentumClothing1M(task, run, title)
    return MeMomentum(task, run, title)


class MeMomentum(TrainerLoop):
    State = MeMomentumState

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.confident: torch.Tensor | None = None   # positions in the training split; None = all
        self.latest_weights: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        s, cfg = self.state, self.config
        while s.outer < cfg.max_outer_loop:
            if s.inner == 0:
                if s.epoch == 0:
                    self.start_warm_up()
                while not warm_up_finished(s.epoch, s.margin, cfg.n_epoch):
                    val_acc, record = self.train_and_validate("warmup")
                    s.inner_best, s.margin, improved = early_stopping_step(val_acc, s.inner_best, s.margin)
                    if improved:
                        self.keep_latest()
                    self.end_epoch(record)
                s.inner, s.epoch = 1, 0
            while s.inner < cfg.max_inner_loop:
                if s.epoch == 0:
                    self.start_inner_round()
                while s.epoch < cfg.n_epoch:
                    val_acc, record = self.train_and_validate("inner")
                    if val_acc > s.inner_best:
                        s.inner_best = val_acc
                        self.keep_latest()
                        record["test_acc"] = self.keep_best_and_test(val_acc, self.trainer.model)
                    self.end_epoch(record)
                # A round that does not raise the best validation accuracy ends the inner rounds.
                improved = s.inner_best > s.last_round
                s.last_round = s.inner_best if improved else s.last_round
                s.inner, s.epoch = s.inner + 1, 0
                if not improved:
                    self.run.log(f"outer {s.outer}: validation accuracy did not improve in inner round "
                                 f"{s.inner - 1}; next outer round")
                    break
            s.outer, s.inner, s.epoch = s.outer + 1, 0, 0
        if s.best_val_acc == 0.0:
            self.run.log("warning: no inner-round epoch beat its warm-up's validation accuracy, so no best "
                         "model was kept and, as in the official code, the reported test accuracy is 0; "
                         "train longer (--n_epoch)")

    def start_warm_up(self) -> None:
        """A fresh network on the current set (all examples at first, then the last confident set)."""
        self.trainer = self.task.new_trainer(milestones=None)
        self.state.inner_best, self.state.margin, self.state.last_round = 0.0, 0.0, 0.0

    def start_inner_round(self) -> None:
        """Reload the latest weights, new SGD + MultiStepLR, re-extract confident examples."""
        # differs from the official code: its final weights are used as "latest"
        if self.latest_weights is None:  # the warm-up never improved on 0 %: keep what it reached
            self.run.log("warm-up never improved validation accuracy; using its final weights as 'latest'")
            self.keep_latest()
        self.trainer = self.task.new_trainer(milestones=LR_MILESTONES)
        self.trainer.model.load_state_dict(self.latest_weights)
        self.extract_confident_examples()

    def extract_confident_examples(self) -> None:
        s, task = self.state, self.task
        logits = task.training_set_logits(self.trainer.model)
        mask = confident_mask(logits, task.train_labels, task.num_classes, self.config.select)
        quality = confident_set_quality(mask, task.train_labels, task.train_clean_labels, task.num_classes)
        record = {"kind": "round", "outer": s.outer, "inner": s.inner, **quality}
        # differs from the official code: the previous training set is kept
        if quality["confident_size"] == 0:
            record["empty"] = True
            self.run.log(f"outer {s.outer} round {s.inner}: no prediction agrees with its noisy label; "
                         f"keeping the previous training set ({self.train_size()} examples)")
        else:
            self.confident = mask.nonzero().squeeze(1)
        self.save_round(lambda: task.round_arrays(logits, mask))
        precision = "n/a" if quality["precision"] is None else f"{quality['precision']:.2f}%"
        self.end_round(record, f"outer {s.outer} round {s.inner}: {quality['confident_size']} confident "
                               f"examples of {task.num_train}, label precision {precision}")

    def train_size(self) -> int:
        return self.task.num_train if self.confident is None else len(self.confident)

    def train_and_validate(self, phase: str) -> tuple[float, dict[str, Any]]:
        return self.train_one_epoch(self.trainer, self.confident, phase)

    def keep_latest(self) -> None:
        self.latest_weights = cpu_weights(self.trainer.model)
        self.write_weights("latest", self.latest_weights)

    # ------------------------------------------------------------------ the protocol
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "confident": self.confident.cpu() if self.confident is not None else None,
                "latest_weights": self.latest_weights}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.latest_weights = saved["latest_weights"]
        confident = saved["confident"]
        self.confident = confident.to(self.task.device) if confident is not None else None
        if saved["model"] is not None:
            self.trainer = self.task.new_trainer(milestones=LR_MILESTONES if saved["scheduler"] else None)
            self.trainer.load_state_dict(saved)
