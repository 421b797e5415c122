"""The Me-Momentum loop (METHOD.md §3) and the cross-entropy baseline, resumable at every epoch.

The loop reads like METHOD.md's pseudocode, written over an explicit `LoopState` (outer round,
inner round, epoch, early-stopping margin, best values, confident set) so that a checkpoint
taken at the end of any epoch holds the whole position and a resumed run continues exactly.
Inner round 0 is the warm-up with the early-stopping margin; rounds 1.. retrain on the
confident examples.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR

from utils.engine import StopRequested
from utils.run.atomic import atomic_torch_save
from utils.run.checkpoint import capture_rng_states, require_format, restore_rng_states
from utils.run.config import config_to_dict
from utils.run.files import RunFiles
from utils.run.lifecycle import Checkpointer
from utils.run.preemption import NonFiniteLoss, Preempted
from utils.selection import confident_mask, confident_set_quality
from utils.vision_task import VisionTask

LR_MILESTONES = (40, 80)        # MultiStepLR of the inner rounds, gamma 0.1 (METHOD.md §3)
MARGIN_STEP = 0.1               # early-stopping margin grows by 0.1 per epoch without improvement
MARGIN_LIMIT = 2                # ... and the warm-up stops once it exceeds 2 (20 epochs)
CHECKPOINT_FORMAT = 2
LIVE_STATE = ("model", "optimizer", "scheduler")  # checkpoint entries that training changes in place


def early_stopping_step(val_acc: float, inner_best: float, margin: float) -> tuple[float, float, bool]:
    """The official warm-up rule: improve only by more than the margin; the margin is a float
    accumulated in steps of 0.1 (its rounding decides ties, so it is reproduced exactly)."""
    if val_acc > inner_best + margin:
        return val_acc, 0.0, True
    return inner_best, margin + MARGIN_STEP, False


def warm_up_finished(epochs_done: int, margin: float, n_epoch: int) -> bool:
    return epochs_done >= n_epoch or margin > MARGIN_LIMIT


@dataclass
class LoopState:
    """Where the run is and what it has found so far; everything a resumed run needs but weights."""

    outer: int = 0
    inner: int = 0            # 0: warm-up (or the CE baseline's single phase); 1..: inner rounds
    epoch: int = 0            # epochs finished in the current phase
    margin: float = 0.0
    inner_best: float = 0.0
    last_round: float = 0.0
    best_val_acc: float = 0.0
    test_acc: float = 0.0             # test accuracy of the best-validation model (the reported figure)
    test_acc_official: float = 0.0    # the same model, as the official printout averages it (per batch)
    best_at: dict[str, int] | None = None   # where that model was taken: outer, inner, epoch
    test_acc_last: float | None = None      # the model of the very last epoch (set when finished)
    epochs_run: int = 0
    finished: bool = False
    rounds: list[dict[str, Any]] = field(default_factory=list)


def clone_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


class MeMomentumRun:
    """Runs `config.method` on one experiment, writing metrics, weights and checkpoints."""

    def __init__(self, task: VisionTask, files: RunFiles, checkpointer: Checkpointer | None = None,
                 log: Callable[[str], None] = print, scalar_log: Any = None) -> None:
        self.exp = task
        self.config = task.config
        self.files = files
        self.checkpointer = checkpointer or Checkpointer(files.checkpoint, task.config.checkpoint_every)
        self.log = log
        self.scalar_log = scalar_log
        self.config_dict = config_to_dict(task.config)
        self.state = LoopState()
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: MultiStepLR | None = None
        self.confident: torch.Tensor | None = None   # positions in the training split; None = all
        self.latest_weights: dict[str, torch.Tensor] | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.metrics_size = files.metrics_size()
        self.elapsed_before = 0.0
        self.started = time.time()

    # ----------------------------------------------------------------- the loops
    def run(self) -> LoopState:
        try:
            if not self.state.finished:
                self._run_ce() if self.config.method == "ce" else self._run_memomentum()
                self._finish()
        except StopRequested:
            self.checkpointer.flush()  # the state of the last finished epoch
            raise Preempted(f"stopped on request; resume from {self.files.checkpoint}",
                            getattr(self.exp.should_stop, "signal_name", None)) from None
        return self.state

    def _finish(self) -> None:
        """The model of the very last epoch is tested too (result.json's test_acc_last)."""
        s = self.state
        if s.best_val_acc == 0.0 and self.config.method == "memomentum":
            self.log("warning: no inner-round epoch beat its warm-up's validation accuracy, so no best "
                     "model was kept and, as in the official code, the reported test accuracy is 0; "
                     "train longer (--n_epoch)")
        s.test_acc_last = self.exp.test(self.model).exact if self.model is not None else None
        s.finished = True
        self.checkpointer.write_now(self.checkpoint_state())

    def _run_memomentum(self) -> None:
        s, cfg = self.state, self.config
        while s.outer < cfg.max_outer_loop:
            if s.inner == 0:
                if s.epoch == 0:
                    self._start_warm_up()
                while not warm_up_finished(s.epoch, s.margin, cfg.n_epoch):
                    val_acc, record = self._train_and_validate("warmup")
                    s.inner_best, s.margin, improved = early_stopping_step(val_acc, s.inner_best, s.margin)
                    if improved:
                        self._keep_latest()
                    self._end_epoch(record)
                s.inner, s.epoch = 1, 0
            while s.inner < cfg.max_inner_loop:
                if s.epoch == 0:
                    self._start_inner_round()
                while s.epoch < cfg.n_epoch:
                    val_acc, record = self._train_and_validate("inner")
                    if val_acc > s.inner_best:
                        s.inner_best = val_acc
                        self._keep_latest()
                        if val_acc > s.best_val_acc:
                            record["test_acc"] = self._keep_best(val_acc)
                    self._end_epoch(record)
                # A round that does not raise the best validation accuracy ends the inner rounds.
                improved = s.inner_best > s.last_round
                s.last_round = s.inner_best if improved else s.last_round
                s.inner, s.epoch = s.inner + 1, 0
                if not improved:
                    self.log(f"outer {s.outer}: validation accuracy did not improve in inner round "
                             f"{s.inner - 1}; next outer round")
                    break
            s.outer, s.inner, s.epoch = s.outer + 1, 0, 0

    def _run_ce(self) -> None:
        """The 'Standard' baseline: cross-entropy on all noisy labels, same data, split and engine,
        with the inner rounds' MultiStepLR; reports the test accuracy of the best-validation epoch."""
        s = self.state
        if s.epoch == 0:
            self._new_network(with_schedule=True)
        while s.epoch < self.config.n_epoch:
            val_acc, record = self._train_and_validate("ce")
            if val_acc > s.best_val_acc:
                record["test_acc"] = self._keep_best(val_acc)
            self._end_epoch(record)

    # ----------------------------------------------------------------- phases
    def _new_network(self, with_schedule: bool) -> None:
        self.model = self.exp.new_model()
        self.optimizer = self.exp.new_optimizer(self.model)
        self.scheduler = MultiStepLR(self.optimizer, list(LR_MILESTONES), 0.1) if with_schedule else None

    def _start_warm_up(self) -> None:
        """A fresh network on the current set (all examples at first, then the last confident set)."""
        self._new_network(with_schedule=False)
        self.state.inner_best, self.state.margin, self.state.last_round = 0.0, 0.0, 0.0

    def _start_inner_round(self) -> None:
        """Reload the latest weights, new SGD + MultiStepLR, re-extract confident examples."""
        if self.latest_weights is None:  # the warm-up never improved on 0 %: keep what it reached
            self.log("warm-up never improved validation accuracy; using its final weights as 'latest'")
            self._keep_latest()
        self._new_network(with_schedule=True)
        self.model.load_state_dict(self.latest_weights)
        self._extract_confident_examples()

    def _extract_confident_examples(self) -> None:
        s = self.state
        logits = self.exp.training_set_logits(self.model)
        mask = confident_mask(logits, self.exp.train_labels, self.exp.num_classes, self.config.select)
        quality = confident_set_quality(mask, self.exp.train_labels, self.exp.train_clean_labels,
                                        self.exp.num_classes)
        record = {"kind": "round", "outer": s.outer, "inner": s.inner, **quality}
        if quality["confident_size"] == 0:
            record["empty"] = True
            self.log(f"outer {s.outer} round {s.inner}: no prediction agrees with its noisy label; "
                     f"keeping the previous training set ({self._train_size()} examples)")
        else:
            self.confident = mask.nonzero().squeeze(1)
        s.rounds.append(record)
        if self.config.save_rounds:
            self._save_round(logits, mask)
        self.metrics_size = self.files.append_metrics(record)
        if self.scalar_log is not None:
            self.scalar_log.log_round(record, s.epochs_run)
        precision = "n/a" if quality["precision"] is None else f"{quality['precision']:.2f}%"
        self.log(f"outer {s.outer} round {s.inner}: {quality['confident_size']} confident examples "
                 f"of {self.exp.num_train}, label precision {precision}")

    def _save_round(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        """--save_rounds: the examples this extraction looked at, its model's probabilities, its choice."""
        exp = self.exp
        self.files.write_round(self.state.outer, self.state.inner, {
            "index": exp.train_index,
            "noisy_labels": exp.train_labels.cpu().numpy().astype("int64"),
            "clean_labels": exp.train_clean_labels.cpu().numpy().astype("int64"),
            "pred_probs": torch.softmax(logits.float(), dim=1).cpu().numpy().astype("float32"),
            "confident": mask.cpu().numpy().astype(bool),
        })

    def _train_size(self) -> int:
        return self.exp.num_train if self.confident is None else len(self.confident)

    # ----------------------------------------------------------------- one epoch
    def _train_and_validate(self, phase: str) -> tuple[float, dict[str, Any]]:
        s = self.state
        start = time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        description = f"{phase} o{s.outer} r{s.inner} e{s.epoch + 1}"
        stats = self.exp.train_epoch(self.model, self.optimizer, self.confident, description)
        if not math.isfinite(stats.loss):
            raise NonFiniteLoss(
                f"training loss is {stats.loss} in outer round {s.outer}, {phase} round {s.inner}, "
                f"epoch {s.epoch + 1} (try a smaller --lr); last good checkpoint: "
                f"{self.files.checkpoint if self.files.checkpoint.exists() else 'none yet'}")
        val_acc = self.exp.validate(self.model)
        if self.scheduler is not None:
            self.scheduler.step()
        s.epoch += 1
        s.epochs_run += 1
        record = {"kind": "epoch", "phase": phase, "outer": s.outer, "inner": s.inner, "epoch": s.epoch,
                  "train_loss": round(stats.loss, 6), "train_acc": round(stats.accuracy, 4),
                  "val_acc": val_acc, "test_acc": None, "lr": lr, "train_size": stats.count,
                  "seconds": round(time.time() - start, 3)}
        return val_acc, record

    def _end_epoch(self, record: dict[str, Any]) -> None:
        self.metrics_size = self.files.append_metrics(record)
        if self.scalar_log is not None:
            self.scalar_log.log_epoch(record, self.state.epochs_run)
        test = "" if record["test_acc"] is None else f" test {record['test_acc']:.2f}"
        self.log(f"{record['phase']:<6} outer {record['outer']} round {record['inner']} epoch "
                 f"{record['epoch']:>3}: loss {record['train_loss']:.4f} train {record['train_acc']:.2f} "
                 f"val {record['val_acc']:.2f}{test} lr {record['lr']:g} ({record['seconds']:.1f}s)")
        self.checkpointer.save_soon(self.checkpoint_state(), live=LIVE_STATE)
        if self.exp.should_stop is not None and self.exp.should_stop():
            raise StopRequested

    def _keep_latest(self) -> None:
        self.latest_weights = clone_weights(self.model)
        self._write_weights("latest", self.latest_weights)

    def _keep_best(self, val_acc: float) -> float:
        s = self.state
        test = self.exp.test(self.model)
        s.best_val_acc, s.test_acc, s.test_acc_official = val_acc, test.exact, test.batch_mean
        s.best_at = {"outer": s.outer, "inner": s.inner, "epoch": s.epoch}
        self.best_weights = clone_weights(self.model)
        self._write_weights("best", self.best_weights)
        return s.test_acc

    def _write_weights(self, which: str, weights: dict[str, torch.Tensor]) -> None:
        """latest.pt / best.pt in the run folder, and the official file names under --model_dir."""
        atomic_torch_save(self.files.weights(which), weights)
        official = Path(self.config.model_dir) / f"{self.config.official_checkpoint_stem}_{which}.hdf5"
        atomic_torch_save(official, weights)

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config_dict,
            "loop": dataclasses.asdict(self.state),
            "model": self.model.state_dict() if self.model is not None else None,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "confident": self.confident.cpu() if self.confident is not None else None,
            "latest_weights": self.latest_weights,
            "best_weights": self.best_weights,
            "rng": capture_rng_states({"pipeline": self.exp.generator}),
            "metrics_size": self.metrics_size,
            "elapsed_s": self.elapsed_s(),
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from `checkpoint` exactly: objects are rebuilt first, RNG states restored last."""
        require_format(checkpoint, self.files.checkpoint, CHECKPOINT_FORMAT)
        self.state = LoopState(**checkpoint["loop"])
        self.latest_weights = checkpoint["latest_weights"]
        self.best_weights = checkpoint["best_weights"]
        confident = checkpoint["confident"]
        self.confident = confident.to(self.exp.device) if confident is not None else None
        if checkpoint["model"] is not None:
            self._new_network(with_schedule=checkpoint["scheduler"] is not None)
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.metrics_size = checkpoint["metrics_size"]
        self.files.truncate_metrics(self.metrics_size)
        self.elapsed_before = checkpoint["elapsed_s"]
        self.started = time.time()
        restore_rng_states(checkpoint["rng"], {"pipeline": self.exp.generator})

    def elapsed_s(self) -> float:
        return self.elapsed_before + time.time() - self.started
