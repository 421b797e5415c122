"""What every training loop shares: the state all loops keep, the small protocol the run driver
(utils/run/driver.py) calls, and the steps every loop takes the same way (docs/CONTRIBUTING.md,
"Adding a method").

A method is a subclass of `Loop` in utils/methods/ that implements

    train()                  run the method until it has finished (on a resumed run: from `state`)
    state_dict()             what it needs to continue beyond `state`: networks, optimizers, sets
    load_state_dict(saved)   the inverse, on a resumed run (`state` is already restored)
    final_model()            the network of its last epoch (result.json's test_acc_last)

and may add `result_fields()`, its own keys of result.json. Inside `train()` it calls `end_epoch`
after every epoch and `end_round` after every round, and `keep_best_and_test` with each validation
accuracy. Everything else (start, resume, checkpoints, stop requests, result files, exit codes) is
the driver's.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from utils.engine import EpochStats, Step, Trainer, run_steps, supervised_step
from utils.errors import NonFiniteLoss
from utils.run.lifecycle import cpu_copy
from utils.metrics import TestAccuracy


@dataclass
class LoopState:
    """Where a run stands and what it has found; a method's state adds its own fields.

    Every field is a plain value or, for the names in ARRAY_FIELDS, a numpy array, so that the
    checkpoint loads with torch.load(weights_only=True).
    """

    outer: int = 0
    inner: int = 0
    epoch: int = 0                      # epochs finished in the current phase
    epochs_run: int = 0                 # epochs finished in the whole run
    best_val_acc: float = 0.0
    test_acc: float = 0.0               # test accuracy of the best-validation model (reported)
    test_acc_official: float = 0.0      # the same model, as the method's own code prints it
    best_at: dict[str, int] | None = None   # where that model was taken: outer, inner, epoch
    test_acc_last: float | None = None  # the model of the very last epoch (set when finished)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    ARRAY_FIELDS: ClassVar[tuple[str, ...]] = ()

    def count_epoch(self) -> None:
        """One more epoch finished: in its round (`epoch`) and in the whole run (`epochs_run`)."""
        self.epoch += 1
        self.epochs_run += 1

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for name in self.ARRAY_FIELDS:
            values[name] = torch.from_numpy(np.array(values[name]))
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LoopState":
        values = dict(values)
        for name in cls.ARRAY_FIELDS:
            values[name] = values[name].numpy()
        return cls(**values)


def cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the network's weights on the CPU (kept in memory, written to weight files)."""
    return cpu_copy(model.state_dict())


class Loop:
    """One method's training loop on one task (MNIST/CIFAR: utils/vision_task.py; Clothing1M:
    utils/clothing_task.py). See the module docstring for what a subclass implements."""

    State: ClassVar[type[LoopState]] = LoopState

    def __init__(self, task: Any, run: Any, title: str) -> None:
        """`run`: the run driver's side of the run (utils/run/driver.py, Run), which hands itself here."""
        self.task = task
        self.run = run
        self.config = task.config
        self.title = title
        self.state = self.State()

    # ------------------------------------------------------------------ the protocol
    def train(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from `saved`; `self.state` is restored already, random states are restored after."""

    def final_model(self) -> nn.Module | None:
        raise NotImplementedError

    def result_fields(self) -> dict[str, Any]:
        return {}

    def test(self, model: nn.Module) -> TestAccuracy:
        """The model's test accuracy, exact and as the method's own code reports it (the task's way,
        unless the method's authors measure it otherwise)."""
        return self.task.test(model)

    # ------------------------------------------------------------------ the steps every loop takes
    def epoch_record(self, phase: str, train_loss: float, train_acc: float, val_acc: float, lr: float,
                     train_size: int, started: float, **extra: Any) -> dict[str, Any]:
        """The metrics.jsonl record of the epoch just finished (`state.epoch` counts it already)."""
        s = self.state
        return {"kind": "epoch", "phase": phase, "outer": s.outer, "inner": s.inner, "epoch": s.epoch,
                "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 4), "val_acc": val_acc,
                "test_acc": None, "lr": lr, "train_size": int(train_size),
                "seconds": round(time.time() - started, 3), **extra}

    def train_one_epoch(self, trainer: Any, subset: torch.Tensor | None, phase: str) -> tuple[float, dict[str, Any]]:
        """One epoch of `trainer` on the training examples at `subset` (None: all), then validation
        and the schedule's step; returns the validation accuracy and the epoch's record."""
        s = self.state
        started = time.time()
        lr = trainer.lr
        batches = self.task.training_batches(subset, f"{phase} o{s.outer} r{s.inner} e{s.epoch + 1}")
        step = supervised_step(trainer.model, trainer.optimizer, self.task.training_loss, self.config.amp)
        stats = EpochStats.of(self.train_steps(batches, step, [trainer.model], phase))
        val_acc = self.task.validate(trainer.model)
        trainer.step_schedule()
        s.count_epoch()
        return val_acc, self.epoch_record(phase, stats.loss, stats.accuracy, val_acc, lr, stats.count, started)

    def train_steps(self, batches: Iterable[tuple], step: Step, networks: Sequence[nn.Module],
                    phase: str) -> dict[str, float]:
        """One pass of the method's `step` over `batches` (the engine's run_steps: training mode, the
        sums, stop requests), refused when its loss is not finite; returns the step's sums, added up
        over the processes under torchrun (so that every process sees the same figures and stops alike)."""
        sums = self.task.sum_over_processes(run_steps(batches, step, networks, self.run.should_stop))
        self.require_finite(sums.get("loss", 0.0), phase)
        return sums

    def end_epoch(self, record: dict[str, Any],
                  after_checkpoint: Callable[[], None] | None = None) -> None:
        """Log the epoch, checkpoint soon (every --checkpoint_every seconds), stop if asked to."""
        self.run.record_epoch(self, record, after_checkpoint)

    def end_round(self, record: dict[str, Any], line: str, summary: dict[str, Any] | None = None) -> None:
        """Log a round (an extraction, a rebuilt training set) in metrics.jsonl and the log; its
        `summary` (default: the whole record) goes into result.json's rounds."""
        self.state.rounds.append(record if summary is None else summary)
        self.run.record_round(self, record, line)

    def keep_best_and_test(self, val_acc: float, model: nn.Module,
                           tested: TestAccuracy | None = None) -> float | None:
        """When `val_acc` beats the best so far: test this model (the reported figure; `tested`: its
        test accuracy, when measured already), remember where it was taken and write its weights
        (best.pt); returns its test accuracy, else None."""
        s = self.state
        if not val_acc > s.best_val_acc:
            return None
        test = tested if tested is not None else self.test(model)
        s.best_val_acc, s.test_acc, s.test_acc_official = val_acc, test.exact, test.official
        s.best_at = {"outer": s.outer, "inner": s.inner, "epoch": s.epoch}
        if self.run.is_main:  # only the main process writes: the others need no copy
            self.write_weights("best", cpu_weights(model))
        return test.exact

    def write_weights(self, which: str, weights: dict[str, torch.Tensor]) -> None:
        """RUN_DIR/{which}.pt, and the official file name under --model_dir where the task has one."""
        self.run.write_weights(which, weights, self.task.official_weights_path(which))

    def require_finite(self, train_loss: float, phase: str) -> None:
        if not math.isfinite(train_loss):
            s = self.state
            raise NonFiniteLoss(
                f"the training loss became {train_loss} in outer round {s.outer}, {phase} round {s.inner}, "
                f"epoch {s.epoch + 1} (try a smaller --lr); last good checkpoint: {self.run.last_checkpoint()}")

    def save_round(self, arrays: Callable[[], dict[str, np.ndarray]]) -> None:
        """--save_rounds: RUN_DIR/rounds/outer{o}_inner{i}.npz with what `arrays()` returns."""
        self.run.save_round(self.state.outer, self.state.inner, arrays)


class TrainerLoop(Loop):
    """A loop that trains one network at a time: `self.trainer` (network, optimizer, schedule) is
    what it saves, restores and reports last; None before the first epoch."""

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.trainer: Trainer | None = None

    def final_model(self) -> nn.Module | None:
        return self.trainer.module if self.trainer is not None else None

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict() if self.trainer is not None else dict(Trainer.EMPTY_STATE)
