"""The Me-Momentum loop on Clothing1M (METHOD.md §4), resumable, single-process or under torchrun.

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

The data, network and passes are in utils/clothing_task.py, the per-class rules in utils/selection.py
and utils/metrics.py, starting, resuming, checkpoints and result files in utils/run/lifecycle.py.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from data.clothing_index import class_counts
from utils.clothing_config import ClothingConfig
from utils.clothing_task import (ClassWeightedLoss, ClothingTask, Trainer, class_weights, load_weights,
                                 network_without_drawing, new_trainer, open_task, predict_positions,
                                 stop_if_requested, test, train_epoch, validate)
from utils.errors import CheckpointError, UserError
from utils.run.atomic import atomic_torch_save
from utils.run.checkpoint import capture_rng_states, require_format, restore_rng_states
from utils.run.config import config_to_dict
from utils.run.distributed import DistContext, all_reduce_sum, barrier
from utils.run.files import RunFiles
from utils.run.lifecycle import Checkpointer, RunStart, finish_run, open_run_folder, start_run
from utils.run.preemption import NonFiniteLoss, Preempted
from utils.run.provenance import describe_device, git_commit, versions
from utils.selection import (checkpoint_for_each_class, examples_by_checkpoint, rebuild_training_set,
                             update_best_checkpoints)

TITLE = "Clothing1M Me-Momentum"
CHECKPOINT_FORMAT = 2  # 1: before the shared run lifecycle (no "format" key)


@dataclass
class LoopState:
    """Where the loop stands; with the model, optimizer and scheduler, all a resumed run needs."""

    num_classes: int
    train_positions: np.ndarray          # current training set S: positions in the (shuffled) noisy list
    outer: int = 0
    inner: int = 0
    epoch: int = 0                       # epochs finished in this inner round
    best_scores: np.ndarray | None = None       # per class, this outer round (zeros at its start)
    best_files: list[str | None] | None = None  # per class, this outer round (None: no checkpoint yet)
    latest_file: str | None = None
    epoch_files: list[str] = field(default_factory=list)
    best_val_acc: float = 0.0
    test_acc: float = 0.0                # test accuracy of the best-validation model (reported)
    test_acc_official: float = 0.0       # the same model, as the official printout averages it
    best_at: dict[str, int] | None = None
    test_acc_last: float | None = None   # the model of the very last epoch (set when finished)
    best_model_name: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    bad_images: int = 0
    wall_time_s: float = 0.0
    finished: bool = False

    def __post_init__(self) -> None:
        if self.best_scores is None:
            self.reset_class_bests()

    def reset_class_bests(self) -> None:
        self.best_scores = np.zeros(self.num_classes, dtype=np.float64)
        self.best_files = [None] * self.num_classes
        self.latest_file = None

    def to_dict(self) -> dict[str, Any]:
        values = dict(vars(self))
        values["epoch_files"], values["best_files"] = list(self.epoch_files), list(self.best_files)
        values["train_positions"] = torch.from_numpy(np.asarray(self.train_positions, dtype=np.int64))
        values["best_scores"] = [float(x) for x in self.best_scores]
        values["rounds"] = json.dumps(self.rounds)  # plain text: loadable with weights_only=True
        values["best_at"] = json.dumps(self.best_at)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LoopState":
        values = dict(values)
        values["train_positions"] = values["train_positions"].numpy().astype(np.int64)
        values["best_scores"] = np.array(values["best_scores"], dtype=np.float64)
        values["rounds"] = json.loads(values["rounds"])
        values["best_at"] = json.loads(values["best_at"])
        return cls(**values)

    @property
    def starts_outer_round(self) -> bool:
        return self.inner == 0 and self.epoch == 0


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def run_clothing(config: ClothingConfig, context: DistContext, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """Run (or continue, or skip when finished) Me-Momentum on Clothing1M; returns the result dict."""
    files = RunFiles(config.run_dir)
    start = start_run(config, files)
    if start.finished:
        if context.is_main:
            print(f"{files.result} exists: this run has finished (delete the folder to run it again)")
        return files.read_result()
    torch.manual_seed(config.seed)  # the new last layer of each outer round draws from it (METHOD.md §4)
    task = open_task(config, context, should_stop)
    if context.is_main:
        open_run_folder(config, files, start)
    state, saved = restore_state(task, start)
    checkpointer = Checkpointer(files.checkpoint, config.checkpoint_every, enabled=context.is_main)
    clock_start = time.time() - state.wall_time_s
    trainer = None
    try:
        # The ranges start where a resumed run stopped; `state` advances with the loops.
        for _outer in range(state.outer, config.max_outer_loop):
            trainer = outer_round_trainer(task, state, saved)
            saved = None
            for _inner in range(state.inner, config.max_inner_loop):
                loss_fn = ClassWeightedLoss(training_class_weights(task, state), context.world_size)
                for _epoch in range(state.epoch, config.n_epoch):
                    run_epoch(task, state, trainer, loss_fn)
                    save_state(task, state, trainer, checkpointer, clock_start)
                if not is_last_round(config, state):
                    rebuild_after_round(task, state)
                advance_round(config, state)
                save_state(task, state, trainer, checkpointer, clock_start)
        return finish(task, state, trainer, checkpointer, clock_start)
    except Preempted as stop:
        checkpointer.flush()  # the state of the last finished epoch
        raise Preempted(str(stop), getattr(should_stop, "signal_name", None)) from None


def is_last_round(config: ClothingConfig, state: LoopState) -> bool:
    # The official code also rebuilds after the very last round; nothing uses that set, so we skip it.
    return state.outer == config.max_outer_loop - 1 and state.inner == config.max_inner_loop - 1


def advance_round(config: ClothingConfig, state: LoopState) -> None:
    state.inner, state.epoch = state.inner + 1, 0
    if state.inner == config.max_inner_loop:
        # The next outer round starts from the pretrained network on the last training set ("momentum").
        state.outer, state.inner = state.outer + 1, 0
        state.reset_class_bests()


def run_epoch(task: ClothingTask, state: LoopState, trainer: Trainer, loss_fn: ClassWeightedLoss) -> None:
    """Train one epoch on S, validate, score the classes, save the weights, test if validation improved."""
    stop_if_requested(task, f"before outer {state.outer} inner {state.inner} epoch {state.epoch + 1}")
    started = time.time()
    lr = trainer.optimizer.param_groups[0]["lr"]
    train_loss, train_acc, bad = train_epoch(task, trainer, loss_fn, state.train_positions, state.outer,
                                             state.inner, state.epoch)
    state.bad_images += bad
    require_finite(task, state, train_loss)
    validation = validate(task, trainer)
    trainer.scheduler.step()
    weights_file = save_epoch_weights(task, state, trainer, validation.accuracy)
    state.best_scores, state.best_files = update_best_checkpoints(state.best_scores, state.best_files,
                                                                  validation.scores, weights_file)
    state.latest_file = weights_file
    test_acc = evaluate_test_if_best(task, state, trainer, validation.accuracy, weights_file)
    log_epoch(task, state, {
        "kind": "epoch", "phase": "inner", "outer": state.outer, "inner": state.inner, "epoch": state.epoch + 1,
        "train_loss": train_loss, "train_acc": train_acc, "val_acc": validation.accuracy, "test_acc": test_acc,
        "lr": lr, "train_size": int(len(state.train_positions)), "seconds": round(time.time() - started, 3),
        "val_class_acc": json_floats(validation.per_class_acc),
        "val_class_precision": json_floats(validation.per_class_precision),
        "val_class_score": json_floats(validation.scores), "bad_images": state.bad_images,
        "weights_file": weights_file})
    state.epoch += 1


def evaluate_test_if_best(task: ClothingTask, state: LoopState, trainer: Trainer, val_acc: float,
                          weights_file: str) -> float | None:
    """The test set is evaluated only when validation accuracy beats the best so far (it is then reported)."""
    if not val_acc > state.best_val_acc:
        return None
    accuracy = test(task, trainer.module)
    state.best_val_acc, state.test_acc, state.test_acc_official = val_acc, accuracy.exact, accuracy.batch_mean
    state.best_model_name = weights_file
    state.best_at = {"outer": state.outer, "inner": state.inner, "epoch": state.epoch + 1}
    if task.context.is_main:
        atomic_torch_save(task.files.best, trainer.module.state_dict())
    return accuracy.exact


def require_finite(task: ClothingTask, state: LoopState, train_loss: float) -> None:
    if not math.isfinite(train_loss):
        raise NonFiniteLoss(f"the training loss became {train_loss} in outer round {state.outer}, inner "
                            f"round {state.inner}, epoch {state.epoch + 1}; the last good checkpoint is "
                            f"{task.files.checkpoint} (lower --lr, or resume from it)")


def log_epoch(task: ClothingTask, state: LoopState, record: dict[str, Any]) -> None:
    append_metrics(task, record)
    test = f" | test acc {record['test_acc']:.2f}" if record["test_acc"] is not None else ""
    task.log(f"outer {state.outer} inner {state.inner} epoch {state.epoch + 1}/{task.config.n_epoch} | "
            f"lr {record['lr']:g} | train loss {record['train_loss']:.4f} acc {record['train_acc']:.2f} "
            f"(n={record['train_size']}) | val acc {record['val_acc']:.2f}{test} | {record['seconds']:.0f}s")


def rebuild_after_round(task: ClothingTask, state: LoopState) -> None:
    """S := per class, the examples of the original noisy list its best checkpoint agrees with."""
    config, splits = task.config, task.splits
    stop_if_requested(task, f"before rebuilding the training set after outer {state.outer} inner {state.inner}")
    files, fallback = checkpoint_for_each_class(state.best_files, state.latest_file)
    if fallback:
        task.log(f"WARNING: class(es) {fallback} never scored above 0 in outer round {state.outer}; their "
                    f"examples are selected with the latest checkpoint {state.latest_file} (METHOD.md §5)")
    noisy_labels = splits.labels[splits.train]
    predictions = predict_by_class_checkpoints(task, noisy_labels, files)
    state.train_positions = rebuild_training_set(noisy_labels, predictions)
    if len(state.train_positions) == 0:
        raise UserError(f"the training set rebuilt after outer round {state.outer}, inner round {state.inner} "
                        f"is empty: no class's best checkpoint agrees with any noisy label, so the network "
                        f"has learnt nothing yet; train longer (--n_epoch), use pretrained weights, or check "
                        f"the data and labels")
    sizes = class_counts(noisy_labels[state.train_positions], config.num_classes)
    record = {"kind": "round", "outer": state.outer, "inner": state.inner,
              "confident_size": int(len(state.train_positions)), "per_class_size": sizes.tolist(),
              "checkpoint_of_class": files, "fallback_classes": fallback}
    state.rounds.append({key: record[key] for key in ("outer", "inner", "confident_size")})
    if config.save_rounds and task.context.is_main:
        save_round(task, state, predictions)
    append_metrics(task, record)
    task.log(f"rebuilt the training set after outer {state.outer} inner {state.inner}: "
            f"{len(state.train_positions)} examples, per class {sizes.tolist()}")


def save_round(task: ClothingTask, state: LoopState, predictions: np.ndarray) -> None:
    """--save_rounds: every training example (its line in the index's training list), its noisy label,
    the prediction of its class's checkpoint (−1: unreadable), and whether it was kept. No clean labels
    (Clothing1M has none for the training list) and no probabilities (a million rows of 14)."""
    splits = task.splits
    confident = np.zeros(len(splits.train), dtype=bool)
    confident[state.train_positions] = True
    task.files.write_round(state.outer, state.inner, {
        "index": splits.train_order, "noisy_labels": splits.labels[splits.train].astype(np.int64),
        "predictions": predictions.astype(np.int64), "confident": confident,
    })


def predict_by_class_checkpoints(task: ClothingTask, noisy_labels: np.ndarray, files: list[str]) -> np.ndarray:
    """For every training example, the prediction of its noisy class's checkpoint (eval transform)."""
    barrier()  # rank 0 must have finished writing the weight files the other ranks now read
    model = network_without_drawing(task, None)
    predictions = np.full(len(noisy_labels), -1, dtype=np.int64)
    for weights_file, positions in examples_by_checkpoint(noisy_labels, files).items():
        if len(positions) == 0:  # the same on every rank: no collective is skipped by only some
            continue
        model.load_state_dict(load_weights(weights_file, task.device))
        predictions[positions] = predict_positions(task, model, task.splits.train[positions])
    return predictions


def training_class_weights(task: ClothingTask, state: LoopState) -> torch.Tensor:
    noisy_labels = task.splits.labels[task.splits.train[state.train_positions]]
    weights = class_weights(class_counts(noisy_labels, task.config.num_classes), task.val_counts)
    return torch.tensor(weights, dtype=torch.float32, device=task.device)


def outer_round_trainer(task: ClothingTask, state: LoopState, saved: dict[str, Any] | None) -> Trainer:
    """Fresh at the start of an outer round; otherwise the network, optimizer and scheduler saved mid-round."""
    if saved is None or state.starts_outer_round:
        return new_trainer(task)
    trainer = new_trainer(task, saved)
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    return trainer


def save_epoch_weights(task: ClothingTask, state: LoopState, trainer: Trainer, val_acc: float) -> str:
    """The official per-epoch file {outer}-{inner}-{epoch}-{val_acc}.hdf5 (a torch state dict)."""
    name = f"{state.outer}-{state.inner}-{state.epoch}-{round(val_acc, 2)}.hdf5"
    path = task.config.epoch_weights_dir / name
    if task.context.is_main:
        atomic_torch_save(path, trainer.module.state_dict())
    state.epoch_files.append(str(path))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Checkpoints, resuming, the result
# ---------------------------------------------------------------------------------------------

def checkpoint_state(task: ClothingTask, state: LoopState, trainer: Trainer | None,
                     rng_states: dict[str, Any]) -> dict[str, Any]:
    mid_round = trainer is not None and not state.starts_outer_round
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config_to_dict(task.config),
        "world_size": task.context.world_size,
        "state": state.to_dict(),
        "model": trainer.module.state_dict() if mid_round else None,
        "optimizer": trainer.optimizer.state_dict() if mid_round else None,
        "scheduler": trainer.scheduler.state_dict() if mid_round else None,
        "rng": rng_states,
        "metrics_size": task.files.metrics_size(),
    }


def save_state(task: ClothingTask, state: LoopState, trainer: Trainer, checkpointer: Checkpointer,
               clock_start: float) -> None:
    """The checkpoint (rank 0, atomic, at most every --checkpoint_every seconds); once it is written,
    the weight files that no class of it needs any more are deleted."""
    state.wall_time_s = time.time() - clock_start
    rng_states = all_rng_states(task)  # collective: every rank takes part
    if not task.context.is_main:
        return
    doomed = [] if task.config.keep_all_checkpoints else unneeded_weight_files(state)

    def delete_doomed() -> None:
        state.epoch_files = [name for name in state.epoch_files if name not in doomed]
        for name in doomed:
            Path(name).unlink(missing_ok=True)

    checkpointer.save_soon(checkpoint_state(task, state, trainer, rng_states), live=("model", "optimizer", "scheduler"),
                           on_write=delete_doomed)


def all_rng_states(task: ClothingTask) -> dict[str, Any]:
    """torch's global generators (the new last layer of each outer round) and the task's, of every rank."""
    states = capture_rng_states()
    states.update({f"generator:{name}": value for name, value in task.generator_states().items()})
    return states


def unneeded_weight_files(state: LoopState) -> list[str]:
    """Files no class points to, that are not the latest, nor the best-validation model's (reported)."""
    needed = {name for name in [*state.best_files, state.latest_file, state.best_model_name] if name}
    return [name for name in state.epoch_files if name not in needed]


def restore_state(task: ClothingTask, start: RunStart) -> tuple[LoopState, dict[str, Any] | None]:
    """A fresh state, or the state of the checkpoint start_run loaded (after checking it fits)."""
    if start.checkpoint is None:
        return LoopState(task.config.num_classes, np.arange(len(task.splits.train), dtype=np.int64)), None
    saved, path = start.checkpoint, start.checkpoint_path
    if "state" not in saved:
        raise CheckpointError(f"{path} is not a Clothing.py checkpoint")
    require_format(saved, path, CHECKPOINT_FORMAT)
    if saved["world_size"] != task.context.world_size:
        task.log(f"WARNING: the checkpoint was written by {saved['world_size']} process(es), this run has "
                 f"{task.context.world_size}: batches and augmentation will differ from an uninterrupted run")
    state = LoopState.from_dict(saved["state"])
    missing = [name for name in [*state.best_files, state.latest_file] if name and not Path(name).is_file()]
    if missing:
        raise CheckpointError(f"{path} needs weight files that are gone: {', '.join(missing[:3])}")
    restore_rng_states(saved["rng"])
    if not task.restore_generators({key.removeprefix("generator:"): value for key, value in saved["rng"].items()
                                    if key.startswith("generator:")}):
        task.log(f"WARNING: the checkpoint has no augmentation stream for rank {task.context.rank}; it starts afresh")
    task.log(f"resuming from {path}: outer {state.outer} inner {state.inner} epoch {state.epoch}")
    return state, saved


def append_metrics(task: ClothingTask, record: dict[str, Any]) -> None:
    if task.context.is_main:
        task.files.append_metrics(record)


def finish(task: ClothingTask, state: LoopState, trainer: Trainer | None, checkpointer: Checkpointer,
           clock_start: float) -> dict[str, Any]:
    config = task.config
    if not state.finished:
        state.test_acc_last = test(task, trainer.module).exact if trainer is not None else None
        state.finished = True
    state.wall_time_s = time.time() - clock_start
    rng_states = all_rng_states(task)
    if task.context.is_main:
        checkpointer.write_now(checkpoint_state(task, state, None, rng_states))
    bad = all_reduce_sum(torch.tensor([task.bad_in_prediction], device=task.device))
    result = {
        "method": "memomentum", "dataset": "clothing1m", "noise_type": "real", "noise_rate": None,
        "seed": config.seed, "best_val_acc": state.best_val_acc, "test_acc": state.test_acc,
        "test_acc_official": state.test_acc_official, "test_acc_last": state.test_acc_last,
        "best_at": state.best_at, "best_model_name": state.best_model_name, "rounds": state.rounds,
        "final_train_size": int(len(state.train_positions)),
        "bad_images_in_training": state.bad_images, "bad_images_in_prediction": int(bad[0]),
        "wall_time_s": round(state.wall_time_s, 3), "device": describe_device(task.device),
        "world_size": task.context.world_size, "git_commit": git_commit(), "versions": versions(),
        "config": config_to_dict(config),
    }
    if task.context.is_main:
        finish_run(config, task.files, result, TITLE)
    task.log(f"Best validation accuracy {state.best_val_acc:.2f}; test accuracy of that model "
             f"{state.test_acc:.2f} ({state.best_model_name}); last epoch {state.test_acc_last}")
    return result


def json_floats(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: undefined per-class values become null."""
    return [None if not math.isfinite(float(x)) else float(x) for x in values]
