"""Me-Momentum on Clothing1M (docs/method.md, "Me-Momentum on Clothing1M"), one process or under torchrun.

    training set S := the whole noisy training list (shuffled once)
    repeat max_outer_loop times:                     # outer round
        model := fresh pretrained network; SGD; MultiStepLR(10, 20) for the whole outer round
        best score and best checkpoint of every class := 0, none
        repeat max_inner_loop times:                 # inner round
            loss := cross-entropy weighted by class_weights(counts of S, counts of clean val)
            for epoch in 1..n_epoch:
                train on S; evaluate the clean validation set; scheduler step
                score_c := beta * accuracy_c + (1 - beta) * precision_c;  save the weights
                class c remembers these weights if score_c beats its best in this outer round
                if validation accuracy beats the best so far: evaluate the test set (reported)
            S := per class c, the examples of the ORIGINAL noisy list labelled c that class c's
                 best checkpoint also predicts as c  (the model itself keeps training)
    report the test accuracy of the model with the best validation accuracy

The data, network and passes are the task's (utils/clothing_task.py, through the task interface), the
per-class rules in utils/selection.py and utils/metrics.py; starting, resuming, checkpoints and result
files are the run driver's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from data.clothing_index import class_counts
from utils.engine import EpochStats, Trainer, supervised_step
from utils.errors import CheckpointError, UserError
from utils.metrics import per_class_accuracy_precision, per_class_scores, readable_accuracy
from utils.run.atomic import atomic_torch_save
from utils.run.distributed import all_reduce_sum, barrier
from utils.run.loop import LoopState, TrainerLoop
from utils.selection import (checkpoint_for_each_class, examples_by_checkpoint, rebuild_training_set,
                             update_best_checkpoints)


@dataclass
class ClothingState(LoopState):
    """The loop's position plus what the per-class rule remembers (inner rounds 0.. all train)."""

    train_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # S
    best_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per class, this outer round
    best_files: list[str | None] = field(default_factory=list)  # per class (None: no checkpoint yet)
    latest_file: str | None = None
    epoch_files: list[str] = field(default_factory=list)
    best_model_name: str = ""
    bad_images: int = 0

    ARRAY_FIELDS: ClassVar[tuple[str, ...]] = ("train_positions", "best_scores")

    def reset_class_bests(self, num_classes: int) -> None:
        self.best_scores = np.zeros(num_classes, dtype=np.float64)
        self.best_files = [None] * num_classes
        self.latest_file = None

    @property
    def starts_outer_round(self) -> bool:
        return self.inner == 0 and self.epoch == 0


def class_weights(train_counts: np.ndarray, val_counts: np.ndarray) -> np.ndarray:
    """w_c = (mean_k n_k / n_c) · (v_c / mean_k v_k), computed in float64 as officially.

    A class absent from the training set gets weight 0 instead of the official inf; no
    training example carries that label, so the loss is the same.
    """
    n = np.asarray(train_counts, dtype=np.float64)
    v = np.asarray(val_counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = (n.mean() / n) * (v / v.mean())
    return np.where(n > 0, weights, 0.0)


@dataclass(frozen=True)
class Validation:
    accuracy: float                  # overall accuracy on the clean validation set, % (compared unrounded)
    per_class_acc: np.ndarray
    per_class_precision: np.ndarray
    scores: np.ndarray


class MeMomentumClothing1M(TrainerLoop):
    State = ClothingState

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.state.train_positions = np.arange(task.num_train, dtype=np.int64)
        self.state.reset_class_bests(self.config.num_classes)

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        s, config = self.state, self.config
        while s.outer < config.max_outer_loop:  # one inner round per pass
            if self.trainer is None or s.starts_outer_round:
                self.trainer = self.task.new_trainer()
            loss_fn = self.task.class_weighted_loss(self.training_class_weights())
            while s.epoch < config.n_epoch:
                self.run_epoch(loss_fn)
            # The official code also rebuilds after the very last round; nothing uses that set.
            if not (s.outer == config.max_outer_loop - 1 and s.inner == config.max_inner_loop - 1):
                self.rebuild_after_round()
            self.advance_round()
            self.run.checkpoint_soon(self, self.weight_files_cleanup())

    def advance_round(self) -> None:
        s = self.state
        s.inner, s.epoch = s.inner + 1, 0
        if s.inner == self.config.max_inner_loop:
            # The next outer round starts from the pretrained network on the last training set ("momentum").
            s.outer, s.inner = s.outer + 1, 0
            s.reset_class_bests(self.config.num_classes)

    def run_epoch(self, loss_fn: Any) -> None:
        """Train one epoch on S, validate, score the classes, save the weights, test if validation improved."""
        s, task, trainer = self.state, self.task, self.trainer
        started = time.time()
        lr = trainer.lr
        batches = task.training_batches(s.train_positions, f"outer {s.outer} inner {s.inner} epoch {s.epoch + 1}")
        step = supervised_step(trainer.model, trainer.optimizer, loss_fn, self.config.amp)
        stats = EpochStats.of(self.train_steps(batches, step, [trainer.model], "inner"))
        train_loss, train_acc = loss_fn.epoch_loss(), stats.accuracy
        s.bad_images += task.unreadable_in_training()
        self.require_finite(train_loss, "inner")
        validation = self.validate()
        trainer.step_schedule()
        weights_file = self.save_epoch_weights(validation.accuracy)
        s.best_scores, s.best_files = update_best_checkpoints(s.best_scores, s.best_files, validation.scores,
                                                              weights_file)
        s.latest_file = weights_file
        s.count_epoch()
        test_acc = self.keep_best_and_test(validation.accuracy, trainer.module)
        if test_acc is not None:
            s.best_model_name = weights_file
        record = self.epoch_record(
            "inner", train_loss, train_acc, validation.accuracy, lr, len(s.train_positions), started,
            val_class_acc=json_floats(validation.per_class_acc),
            val_class_precision=json_floats(validation.per_class_precision),
            val_class_score=json_floats(validation.scores), bad_images=s.bad_images, weights_file=weights_file)
        record["test_acc"] = test_acc
        self.end_epoch(record, self.weight_files_cleanup())

    def save_epoch_weights(self, val_acc: float) -> str:
        """The official per-epoch file {outer}-{inner}-{epoch}-{val_acc}.hdf5 (a torch state dict;
        epoch counted from 0, as officially)."""
        s = self.state
        path = self.config.epoch_weights_dir / f"{s.outer}-{s.inner}-{s.epoch}-{round(val_acc, 2)}.hdf5"
        if self.run.is_main:
            atomic_torch_save(path, self.trainer.module.state_dict())
        s.epoch_files.append(str(path))
        return str(path)

    def validate(self) -> Validation:
        """Clean validation set, eval transform: overall accuracy and the per-class scores."""
        predictions, labels = self.task.validation_predictions(self.trainer.model)
        per_class_acc, per_class_precision = per_class_accuracy_precision(predictions, labels, self.config.num_classes)
        return Validation(readable_accuracy(predictions, labels), per_class_acc, per_class_precision,
                          per_class_scores(per_class_acc, per_class_precision, self.config.beta))

    def training_class_weights(self) -> np.ndarray:
        splits = self.task.splits
        noisy_labels = splits.labels[splits.train[self.state.train_positions]]
        return class_weights(class_counts(noisy_labels, self.config.num_classes), self.task.val_counts)

    def rebuild_after_round(self) -> None:
        """S := per class, the examples of the original noisy list its best checkpoint agrees with."""
        s, task = self.state, self.task
        files, fallback = checkpoint_for_each_class(s.best_files, s.latest_file)
        if fallback:
            self.run.log(f"WARNING: class(es) {fallback} never scored above 0 in outer round {s.outer}; their "
                         f"examples are selected with the latest checkpoint {s.latest_file} (docs/method.md)")
        noisy_labels = task.splits.labels[task.splits.train]
        predictions = predict_by_class_checkpoints(task, noisy_labels, files)
        s.train_positions = rebuild_training_set(noisy_labels, predictions)
        if len(s.train_positions) == 0:
            raise UserError(f"the training set rebuilt after outer round {s.outer}, inner round {s.inner} "
                            f"is empty: no class's best checkpoint agrees with any noisy label, so the network "
                            f"has learnt nothing yet; train longer (--n_epoch), use pretrained weights, or check "
                            f"the data and labels")
        sizes = class_counts(noisy_labels[s.train_positions], self.config.num_classes)
        record = {"kind": "round", "outer": s.outer, "inner": s.inner,
                  "confident_size": int(len(s.train_positions)), "per_class_size": sizes.tolist(),
                  "checkpoint_of_class": files, "fallback_classes": fallback}
        self.save_round(lambda: self.round_arrays(predictions))
        self.end_round(record, f"rebuilt the training set after outer {s.outer} inner {s.inner}: "
                               f"{len(s.train_positions)} examples, per class {sizes.tolist()}",
                       summary={key: record[key] for key in ("outer", "inner", "confident_size")})

    def round_arrays(self, predictions: np.ndarray) -> dict[str, np.ndarray]:
        """--save_rounds: every training example (its line in the index's training list), its noisy label,
        the prediction of its class's checkpoint (−1: unreadable), and whether it was kept. No clean labels
        (Clothing1M has none for the training list) and no probabilities (a million rows of 14)."""
        splits = self.task.splits
        confident = np.zeros(len(splits.train), dtype=bool)
        confident[self.state.train_positions] = True
        return {"index": splits.train_order, "noisy_labels": splits.labels[splits.train].astype(np.int64),
                "predictions": predictions.astype(np.int64), "confident": confident}

    def weight_files_cleanup(self) -> Callable[[], None] | None:
        """What to do once the checkpoint of the state as it is now is written: delete the per-epoch
        weight files no class of it needs (unless --keep_all_checkpoints)."""
        if self.config.keep_all_checkpoints:
            return None
        s = self.state
        needed = {name for name in [*s.best_files, s.latest_file, s.best_model_name] if name}
        doomed = [name for name in s.epoch_files if name not in needed]

        def delete() -> None:
            s.epoch_files = [name for name in s.epoch_files if name not in doomed]
            for name in doomed:
                Path(name).unlink(missing_ok=True)

        return delete

    # ------------------------------------------------------------------ the protocol
    def state_dict(self) -> dict[str, Any]:
        """The network, optimizer and schedule only in the middle of an outer round (a new one builds
        them afresh)."""
        return dict(Trainer.EMPTY_STATE) if self.state.starts_outer_round else super().state_dict()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        s = self.state
        missing = [name for name in [*s.best_files, s.latest_file] if name and not Path(name).is_file()]
        if missing:
            raise CheckpointError(f"the checkpoint needs weight files that are gone: {', '.join(missing[:3])}")
        if saved["model"] is not None:
            self.trainer = self.task.new_trainer(saved)

    def result_fields(self) -> dict[str, Any]:
        bad = all_reduce_sum(torch.tensor([self.task.bad_in_prediction], device=self.task.device))
        s = self.state
        return {"best_model_name": s.best_model_name, "final_train_size": int(len(s.train_positions)),
                "bad_images_in_training": s.bad_images, "bad_images_in_prediction": int(bad[0])}


def predict_by_class_checkpoints(task: Any, noisy_labels: np.ndarray, files: list[str]) -> np.ndarray:
    """For every training example, the prediction of its noisy class's checkpoint (eval transform)."""
    barrier()  # rank 0 must have finished writing the weight files the other ranks now read
    model = task.network_for_weights()
    predictions = np.full(len(noisy_labels), -1, dtype=np.int64)
    for weights_file, positions in examples_by_checkpoint(noisy_labels, files).items():
        if len(positions) == 0:  # the same on every rank: no collective is skipped by only some
            continue
        model.load_state_dict(task.load_weights(weights_file))
        predictions[positions] = task.train_predictions(model, positions)
    return predictions


def json_floats(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: undefined per-class values become null."""
    return [None if not math.isfinite(float(x)) else float(x) for x in values]
