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

The pure pieces (class weights, per-class scores, the rebuild) are named functions at the top;
the loop below them reads like the pseudocode. A full checkpoint is written at the end of every
epoch and after every rebuild, so a run continues with --resume auto after a preemption.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import MultiStepLR

from data.clothing import (ClothingLoader, ClothingSplits, DeviceBatchTransform, IGNORED_LABEL,
                           build_splits, default_num_workers, raise_or_count_bad)
from data.clothing_index import INDEX_FILE_NAME, class_counts, load_index
from models.pretrained import StateDict, build_classifier, load_imagenet_state
from utils.run.atomic import atomic_torch_save
from utils.run.checkpoint import capture_rng_states, load_checkpoint, restore_rng_states, save_checkpoint
from utils.run.resume import load_compatible_checkpoint, resume_path
from utils.clothing_config import RESUME_NEUTRAL_FIELDS, ClothingConfig
from utils.run.config import config_to_dict
from utils.run.distributed import (DistContext, all_reduce_sum, any_rank, barrier, broadcast_buffers,
                               gather_sharded, main_process_first, shard_for_training, shard_indices,
                               unwrap_model, wrap_model)
from utils.engine import StopRequested, accuracy, make_sgd, predict_logits, train_one_epoch, uses_channels_last
from utils.errors import CheckpointError, UserError
from utils.run.preemption import NonFiniteLoss, Preempted
from utils.run.progress import progress_enabled, with_progress
from utils.run.provenance import describe_device, git_commit, versions
from utils.run.files import RunFiles, append_results_log

MILESTONES = (10, 20)   # epochs of an outer round (the scheduler is created once per outer round)
GAMMA = 0.1
STOP_POLL_EVERY = 8     # batches between collective checks for a stop request


# ---------------------------------------------------------------------------------------------
# The science: pure functions (METHOD.md §4)
# ---------------------------------------------------------------------------------------------

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


def per_class_accuracy_precision(predictions: np.ndarray, labels: np.ndarray,
                                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy (recall) and precision in percent, rounded to 2 decimals as officially.

    NaN where undefined (no example of the class; class never predicted), as in the official
    code, so such a class never counts as improved. Predictions < 0 (unreadable images) are left out.
    """
    valid = predictions >= 0
    predicted, truth = predictions[valid], labels[valid]
    totals = np.bincount(truth, minlength=num_classes)[:num_classes]
    predicted_counts = np.bincount(predicted, minlength=num_classes)[:num_classes]
    correct = np.bincount(truth[predicted == truth], minlength=num_classes)[:num_classes]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class_acc = np.around(100 * correct / totals, decimals=2)
        per_class_precision = np.around(100 * correct / predicted_counts, decimals=2)
    return per_class_acc, per_class_precision


def per_class_scores(per_class_acc: np.ndarray, per_class_precision: np.ndarray, beta: float) -> np.ndarray:
    """score_c = beta · a_c + (1 − beta) · p_c (METHOD.md §4)."""
    return beta * np.asarray(per_class_acc, dtype=np.float64) + (1 - beta) * np.asarray(
        per_class_precision, dtype=np.float64)


def update_best_checkpoints(best_scores: np.ndarray, best_files: list[str | None], scores: np.ndarray,
                            checkpoint_file: str) -> tuple[np.ndarray, list[str | None]]:
    """Classes whose score strictly beats their best so far now point to `checkpoint_file` (NaN never does)."""
    improved = np.asarray(scores) > np.asarray(best_scores)  # NaN compares False, as officially
    new_scores = np.where(improved, scores, best_scores)
    new_files = [checkpoint_file if better else old for better, old in zip(improved, best_files)]
    return new_scores, new_files


def checkpoint_for_each_class(best_files: list[str | None], latest_file: str) -> tuple[list[str], list[int]]:
    """Each class's best checkpoint; a class that never scored above 0 gets the latest one.

    Officially such a class points to an empty file name and the run crashes (METHOD.md §5).
    Returns the files and the classes that fell back.
    """
    fallback = [c for c, name in enumerate(best_files) if name is None]
    return [name if name is not None else latest_file for name in best_files], fallback


def examples_by_checkpoint(noisy_labels: np.ndarray, checkpoint_of_class: list[str]) -> dict[str, np.ndarray]:
    """Which training examples each distinct checkpoint must predict: those whose noisy label points to it."""
    groups: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(checkpoint_of_class):  # distinct, in class order
        classes = [c for c, other in enumerate(checkpoint_of_class) if other == name]
        groups[name] = np.flatnonzero(np.isin(noisy_labels, classes))
    return groups


def rebuild_training_set(noisy_labels: np.ndarray, predictions_by_class_checkpoint: np.ndarray) -> np.ndarray:
    """Positions in the original noisy list whose label's best checkpoint predicts that same label.

    `predictions_by_class_checkpoint[i]` is the prediction for example i of the checkpoint chosen
    for class noisy_labels[i] (−1: not predicted, e.g. an unreadable image). Sorted positions.
    """
    return np.flatnonzero(np.asarray(predictions_by_class_checkpoint) == np.asarray(noisy_labels))


def epoch_seed(seed: int, purpose: int, outer: int, epoch_in_outer: int, rank: int = 0) -> int:
    """A seed for one epoch's randomness: an epoch replays identically after --resume (no state to save)."""
    sequence = np.random.SeedSequence([seed, purpose, outer, epoch_in_outer, rank])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)


SHUFFLE, AUGMENT = 1, 2


# ---------------------------------------------------------------------------------------------
# Run state and its checkpoint
# ---------------------------------------------------------------------------------------------

@dataclass
class LoopState:
    """Where the loop stands; with the model, optimizer and scheduler, all a resumed run needs."""

    num_classes: int
    train_positions: np.ndarray          # current training set S: positions in the (shuffled) noisy list
    outer: int = 0
    inner: int = 0
    epoch: int = 0                       # next epoch to run in this inner round (0-based)
    best_scores: np.ndarray | None = None       # per class, this outer round (zeros at its start)
    best_files: list[str | None] | None = None  # per class, this outer round (None: no checkpoint yet)
    latest_file: str | None = None
    epoch_files: list[str] = field(default_factory=list)
    best_val_acc: float = 0.0
    test_acc: float = 0.0                # test accuracy of the best-validation model (reported)
    best_model_name: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    bad_images: int = 0
    wall_time_s: float = 0.0

    def __post_init__(self) -> None:
        if self.best_scores is None:
            self.reset_class_bests()

    def reset_class_bests(self) -> None:
        self.best_scores = np.zeros(self.num_classes, dtype=np.float64)
        self.best_files = [None] * self.num_classes
        self.latest_file = None

    def to_dict(self) -> dict[str, Any]:
        values = dict(vars(self))
        values["train_positions"] = torch.from_numpy(np.asarray(self.train_positions, dtype=np.int64))
        values["best_scores"] = [float(x) for x in self.best_scores]
        values["rounds"] = json.dumps(self.rounds)  # plain text: loadable with weights_only=True
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LoopState":
        values = dict(values)
        values["train_positions"] = values["train_positions"].numpy().astype(np.int64)
        values["best_scores"] = np.array(values["best_scores"], dtype=np.float64)
        values["rounds"] = json.loads(values["rounds"])
        return cls(**values)

    @property
    def starts_outer_round(self) -> bool:
        return self.inner == 0 and self.epoch == 0


@dataclass
class Session:
    """What stays fixed during a run: config, processes, data, files."""

    config: ClothingConfig
    context: DistContext
    files: RunFiles
    splits: ClothingSplits
    loader: ClothingLoader
    transform: DeviceBatchTransform
    imagenet_state: StateDict | None
    val_counts: np.ndarray
    should_stop: Callable[[], bool]
    show_progress: bool
    bad_in_prediction: int = 0  # unreadable images met by this rank in prediction passes

    @property
    def device(self) -> torch.device:
        return self.context.device

    def log(self, message: str) -> None:
        if self.context.is_main:
            print(message, flush=True)

    def epoch_in_outer(self, state: LoopState) -> int:
        return state.inner * self.config.n_epoch + state.epoch

    def stop_requested(self) -> bool:
        """The same answer on every rank (collective when distributed)."""
        return any_rank(self.should_stop(), self.device)


@dataclass
class Trainer:
    """The network of the current outer round and what updates it."""

    model: nn.Module  # DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: MultiStepLR

    @property
    def module(self) -> nn.Module:
        return unwrap_model(self.model)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def run_clothing(config: ClothingConfig, context: DistContext, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """Run (or continue) Me-Momentum on Clothing1M; returns the result dict (also written to result.json)."""
    torch.manual_seed(config.seed)  # the new last layer of each outer round draws from it (METHOD.md §4)
    session = open_session(config, context, should_stop)
    state, saved = start_or_resume(session)
    clock_start = time.time() - state.wall_time_s
    # The ranges start where a resumed run stopped; `state` advances with the loops.
    for _outer in range(state.outer, config.max_outer_loop):
        trainer = outer_round_trainer(session, state, saved)
        saved = None
        for _inner in range(state.inner, config.max_inner_loop):
            loss_fn = ClassWeightedLoss(training_class_weights(session, state), context.world_size)
            for _epoch in range(state.epoch, config.n_epoch):
                run_epoch(session, state, trainer, loss_fn, clock_start)
            if not is_last_round(config, state):
                rebuild_after_round(session, state)
            advance_round(config, state)
            save_state(session, state, trainer, clock_start)
    return finish(session, state, clock_start)


def is_last_round(config: ClothingConfig, state: LoopState) -> bool:
    # The official code also rebuilds after the very last round; nothing uses that set, so we skip it.
    return state.outer == config.max_outer_loop - 1 and state.inner == config.max_inner_loop - 1


def advance_round(config: ClothingConfig, state: LoopState) -> None:
    state.inner, state.epoch = state.inner + 1, 0
    if state.inner == config.max_inner_loop:
        # The next outer round starts from the pretrained network on the last training set ("momentum").
        state.outer, state.inner = state.outer + 1, 0
        state.reset_class_bests()


def run_epoch(session: Session, state: LoopState, trainer: Trainer, loss_fn: "ClassWeightedLoss",
              clock_start: float) -> None:
    """Train one epoch on S, validate, score the classes, save the weights, test if validation improved."""
    stop_if_requested(session, f"before outer {state.outer} inner {state.inner} epoch {state.epoch + 1}")
    started = time.time()
    lr = trainer.optimizer.param_groups[0]["lr"]
    train_loss, train_acc = train_epoch(session, state, trainer, loss_fn)
    require_finite(session, state, train_loss)
    validation = validate(session, trainer)
    trainer.scheduler.step()
    weights_file = save_epoch_weights(session, state, trainer, validation.accuracy)
    state.best_scores, state.best_files = update_best_checkpoints(state.best_scores, state.best_files,
                                                                  validation.scores, weights_file)
    state.latest_file = weights_file
    test_acc = evaluate_test_if_best(session, state, trainer, validation.accuracy, weights_file)
    log_epoch(session, state, {
        "kind": "epoch", "phase": "inner", "outer": state.outer, "inner": state.inner, "epoch": state.epoch + 1,
        "train_loss": train_loss, "train_acc": train_acc, "val_acc": validation.accuracy, "test_acc": test_acc,
        "lr": lr, "train_size": int(len(state.train_positions)), "seconds": round(time.time() - started, 3),
        "val_class_acc": json_floats(validation.per_class_acc),
        "val_class_precision": json_floats(validation.per_class_precision),
        "val_class_score": json_floats(validation.scores), "bad_images": state.bad_images,
        "weights_file": weights_file})
    state.epoch += 1
    save_state(session, state, trainer, clock_start)


@dataclass(frozen=True)
class Validation:
    accuracy: float                  # overall accuracy on the clean validation set, % (compared unrounded)
    per_class_acc: np.ndarray
    per_class_precision: np.ndarray
    scores: np.ndarray


def validate(session: Session, trainer: Trainer) -> Validation:
    """Clean validation set, eval transform (METHOD.md §4): overall accuracy and the per-class scores."""
    broadcast_buffers(trainer.model)
    predictions = predict_positions(session, trainer.module, session.splits.val)
    labels = session.splits.labels[session.splits.val]
    per_class_acc, per_class_precision = per_class_accuracy_precision(predictions, labels,
                                                                      session.config.num_classes)
    return Validation(accuracy_percent(predictions, labels), per_class_acc, per_class_precision,
                      per_class_scores(per_class_acc, per_class_precision, session.config.beta))


def evaluate_test_if_best(session: Session, state: LoopState, trainer: Trainer, val_acc: float,
                        weights_file: str) -> float | None:
    """The test set is evaluated only when validation accuracy beats the best so far (it is then reported)."""
    if not val_acc > state.best_val_acc:
        return None
    predictions = predict_positions(session, trainer.module, session.splits.test)
    test_acc = accuracy_percent(predictions, session.splits.labels[session.splits.test])
    state.best_val_acc, state.test_acc, state.best_model_name = val_acc, test_acc, weights_file
    if session.context.is_main:
        atomic_torch_save(session.files.best, trainer.module.state_dict())
    return test_acc


def require_finite(session: Session, state: LoopState, train_loss: float) -> None:
    if not math.isfinite(train_loss):
        raise NonFiniteLoss(f"the training loss became {train_loss} in outer round {state.outer}, inner "
                            f"round {state.inner}, epoch {state.epoch + 1}; the last good checkpoint is "
                            f"{session.files.checkpoint} (lower --lr, or resume from it)")


def log_epoch(session: Session, state: LoopState, record: dict[str, Any]) -> None:
    append_metrics(session, record)
    test = f" | test acc {record['test_acc']:.2f}" if record["test_acc"] is not None else ""
    session.log(f"outer {state.outer} inner {state.inner} epoch {state.epoch + 1}/{session.config.n_epoch} | "
                f"lr {record['lr']:g} | train loss {record['train_loss']:.4f} acc {record['train_acc']:.2f} "
                f"(n={record['train_size']}) | val acc {record['val_acc']:.2f}{test} | {record['seconds']:.0f}s")


def rebuild_after_round(session: Session, state: LoopState) -> None:
    """S := per class, the examples of the original noisy list its best checkpoint agrees with."""
    config, splits = session.config, session.splits
    stop_if_requested(session, f"before rebuilding the training set after outer {state.outer} inner {state.inner}")
    files, fallback = checkpoint_for_each_class(state.best_files, state.latest_file)
    if fallback:
        session.log(f"WARNING: class(es) {fallback} never scored above 0 in outer round {state.outer}; their "
                    f"examples are selected with the latest checkpoint {state.latest_file} (METHOD.md §5)")
    noisy_labels = splits.labels[splits.train]
    predictions = predict_by_class_checkpoints(session, noisy_labels, files)
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
    append_metrics(session, record)
    session.log(f"rebuilt the training set after outer {state.outer} inner {state.inner}: "
                f"{len(state.train_positions)} examples, per class {sizes.tolist()}")


def predict_by_class_checkpoints(session: Session, noisy_labels: np.ndarray, files: list[str]) -> np.ndarray:
    """For every training example, the prediction of its noisy class's checkpoint (eval transform)."""
    barrier()  # rank 0 must have finished writing the weight files the other ranks now read
    model = network_without_drawing(session, None)
    predictions = np.full(len(noisy_labels), -1, dtype=np.int64)
    for weights_file, positions in examples_by_checkpoint(noisy_labels, files).items():
        if len(positions) == 0:  # the same on every rank: no collective is skipped by only some
            continue
        model.load_state_dict(load_weights(weights_file, session.device))
        predictions[positions] = predict_positions(session, model, session.splits.train[positions])
    return predictions


# ---------------------------------------------------------------------------------------------
# Training and prediction passes
# ---------------------------------------------------------------------------------------------

class ClassWeightedLoss:
    """Class-weighted cross-entropy, normalised over the GLOBAL batch, ignoring skipped images.

    With one process this is nn.CrossEntropyLoss(weight=w). Under DDP (which averages gradients
    over the W ranks) each rank returns W · Σ_rank w_y·ce / Σ_all w_y, so the update equals the
    single-process update on the whole batch, as the official batch of 32 on one GPU.
    It also sums the weighted loss over the epoch for the log.
    """

    def __init__(self, weights: torch.Tensor, world_size: int) -> None:
        self.weights = weights
        self.world_size = world_size
        self.weighted_sum = torch.zeros((), dtype=torch.float64, device=weights.device)
        self.weight_total = torch.zeros((), dtype=torch.float64, device=weights.device)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        valid = labels != IGNORED_LABEL
        safe_labels = labels.clamp_min(0)
        example_weights = self.weights[safe_labels] * valid
        weighted = F.cross_entropy(logits, safe_labels, reduction="none") * example_weights
        denominator = example_weights.sum().detach()
        if self.world_size > 1:
            denominator = all_reduce_sum(denominator.clone())
        self.weighted_sum += weighted.sum().detach().double()
        self.weight_total += example_weights.sum().detach().double()
        return weighted.sum() * self.world_size / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)

    def epoch_loss(self) -> float:
        totals = all_reduce_sum(torch.stack([self.weighted_sum, self.weight_total]))
        self.weighted_sum.zero_()
        self.weight_total.zero_()
        return float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")


def training_class_weights(session: Session, state: LoopState) -> torch.Tensor:
    noisy_labels = session.splits.labels[session.splits.train[state.train_positions]]
    weights = class_weights(class_counts(noisy_labels, session.config.num_classes), session.val_counts)
    return torch.tensor(weights, dtype=torch.float32, device=session.device)


def train_epoch(session: Session, state: LoopState, trainer: Trainer,
                loss_fn: ClassWeightedLoss) -> tuple[float, float]:
    """One epoch of SGD over this rank's shard of a fresh permutation of S; (loss, accuracy) over all ranks."""
    config, context = session.config, session.context
    epoch = session.epoch_in_outer(state)
    shuffle = torch.Generator().manual_seed(epoch_seed(config.seed, SHUFFLE, state.outer, epoch))
    augment = torch.Generator().manual_seed(epoch_seed(config.seed, AUGMENT, state.outer, epoch, context.rank))
    order = state.train_positions[torch.randperm(len(state.train_positions), generator=shuffle).numpy()]
    mine = session.splits.train[shard_for_training(order, context.rank, context.world_size)]
    per_rank_batch = max(1, config.batch_size // context.world_size)
    bad = torch.zeros((), dtype=torch.int64)
    batches = training_batches(session, mine, per_rank_batch, augment, bad)
    batches = with_progress(batches, -(-len(mine) // per_rank_batch),
                            f"outer {state.outer} inner {state.inner} epoch {state.epoch + 1}", session.show_progress)
    try:
        stats = train_one_epoch(trainer.model, trainer.optimizer, batches, loss_fn, amp=config.amp,
                                should_stop=StopPoll(session))
    except StopRequested:
        raise Preempted(f"stopped during outer {state.outer} inner {state.inner} epoch {state.epoch + 1}") from None
    counts = all_reduce_sum(torch.tensor([stats.correct, stats.count, int(bad)], dtype=torch.int64,
                                         device=session.device))
    state.bad_images += int(counts[2])
    return loss_fn.epoch_loss(), 100.0 * float(counts[0]) / max(int(counts[1]), 1)


def training_batches(session: Session, positions: np.ndarray, batch_size: int, generator: torch.Generator,
                     bad: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(augmented normalised images, labels) on the device; unreadable images get the ignored label."""
    for batch in session.loader.batches(positions, batch_size):
        bad += raise_or_count_bad(batch, session.config.skip_bad_images)
        images, labels, ok = session.transform.to_device(batch)
        yield session.transform.train(images, generator), labels.masked_fill(~ok, IGNORED_LABEL)


def stop_if_requested(session: Session, where: str) -> None:
    """At an epoch boundary the checkpoint on disk is current: stop at once if asked to."""
    if session.stop_requested():
        raise Preempted(f"stopped {where}")


class StopPoll:
    """`should_stop` for the engine: asks all ranks together every STOP_POLL_EVERY batches."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls % STOP_POLL_EVERY == 0 and self.session.stop_requested()


def predict_positions(session: Session, model: nn.Module, positions: np.ndarray) -> np.ndarray:
    """Predicted class of every dataset position (−1: unreadable image), each predicted by exactly one rank."""
    context, config = session.context, session.config
    mine = positions[shard_indices(len(positions), context.rank, context.world_size)]
    ok_masks: list[torch.Tensor] = []
    # Batches every rank has: only there may the collective stop check run.
    common_batches = -(-(len(positions) // context.world_size) // config.eval_batch_size)

    def images() -> Iterator[torch.Tensor]:
        for step, batch in enumerate(session.loader.batches(mine, config.eval_batch_size)):
            if step < common_batches and step % STOP_POLL_EVERY == STOP_POLL_EVERY - 1 and session.stop_requested():
                raise Preempted("stopped during a prediction pass")
            session.bad_in_prediction += raise_or_count_bad(batch, config.skip_bad_images)
            images_u8, _, ok = session.transform.to_device(batch)
            ok_masks.append(ok)
            yield session.transform.eval(images_u8)

    total = -(-len(mine) // config.eval_batch_size)
    logits = predict_logits(model, with_progress(images(), total, "predicting", session.show_progress), config.amp)
    local = torch.full((len(mine),), -1, dtype=torch.int64, device=session.device)
    if len(mine):
        local = logits.argmax(1).masked_fill(~torch.cat(ok_masks), -1)
    return gather_sharded(local, len(positions)).cpu().numpy()


def accuracy_percent(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over the readable images, in percent, exact (not a mean of per-batch accuracies)."""
    valid = predictions >= 0
    return accuracy(torch.from_numpy(predictions[valid]), torch.from_numpy(labels[valid]))


# ---------------------------------------------------------------------------------------------
# Setting up, saving, resuming, finishing
# ---------------------------------------------------------------------------------------------

def open_session(config: ClothingConfig, context: DistContext, should_stop: Callable[[], bool]) -> Session:
    index = load_index(Path(config.data_root) / INDEX_FILE_NAME)
    splits = build_splits(index, config.data_root, config.image_size, config.seed)
    workers = config.num_workers if config.num_workers >= 0 else default_num_workers(context.local_world_size)
    loader = ClothingLoader(splits.dataset, workers, pin_memory=context.device.type == "cuda")
    imagenet_state = None
    if config.use_pretrained:
        with main_process_first():  # a download into the shared hub cache happens once
            imagenet_state = load_imagenet_state(config.arch, config.weights)
    files = RunFiles(config.run_dir)
    session = Session(config, context, files, splits, loader,
                      DeviceBatchTransform(context.device, config.image_size,
                                           uses_channels_last(config.channels_last, context.device)),
                      imagenet_state, class_counts(splits.labels[splits.val], config.num_classes),
                      should_stop, context.is_main and progress_enabled(config.no_progress))
    session.log(f"Clothing1M: {len(splits.train)} noisy training, {len(splits.val)} clean validation, "
                f"{len(splits.test)} clean test images; {context.world_size} process(es) on "
                f"{describe_device(context.device)}; {workers} decoding worker(s) per process")
    if config.batch_size % context.world_size:
        session.log(f"WARNING: --batch_size {config.batch_size} is not a multiple of the {context.world_size} "
                    f"processes: the global batch is {config.batch_size // context.world_size * context.world_size}")
    return session


def network(session: Session, imagenet_state: StateDict | None) -> nn.Module:
    config = session.config
    model = build_classifier(config.arch, config.num_classes, imagenet_state).to(session.device)
    channels_last = uses_channels_last(config.channels_last, session.device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def network_without_drawing(session: Session, imagenet_state: StateDict | None) -> nn.Module:
    """A network whose weights will be overwritten: built without consuming torch's global RNG, so a
    resumed run draws the next outer round's last layer exactly as an uninterrupted one."""
    with torch.random.fork_rng(devices=[]):
        return network(session, imagenet_state)


def new_trainer(session: Session, saved: dict[str, Any] | None = None) -> Trainer:
    """SGD and the outer round's scheduler around a fresh pretrained network (new last layer), or
    around the network, optimizer and scheduler of a checkpoint."""
    config = session.config
    if saved is None:
        model = network(session, session.imagenet_state)
    else:
        model = network_without_drawing(session, None)
        model.load_state_dict(saved["model"])
    model = wrap_model(model, session.context, sync_batchnorm=not config.no_sync_bn)
    optimizer = make_sgd(model.parameters(), config.lr, config.weight_decay, config.sgd)
    return Trainer(model, optimizer, MultiStepLR(optimizer, milestones=list(MILESTONES), gamma=GAMMA))


def outer_round_trainer(session: Session, state: LoopState, saved: dict[str, Any] | None) -> Trainer:
    """Fresh at the start of an outer round; otherwise the network, optimizer and scheduler saved mid-round."""
    if saved is None or state.starts_outer_round:
        return new_trainer(session)
    trainer = new_trainer(session, saved)
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    return trainer


def save_epoch_weights(session: Session, state: LoopState, trainer: Trainer, val_acc: float) -> str:
    """The official per-epoch file {outer}-{inner}-{epoch}-{val_acc}.hdf5 (a torch state dict)."""
    name = f"{state.outer}-{state.inner}-{state.epoch}-{round(val_acc, 2)}.hdf5"
    path = session.config.epoch_weights_dir / name
    if session.context.is_main:
        atomic_torch_save(path, trainer.module.state_dict())
    state.epoch_files.append(str(path))
    return str(path)


def load_weights(path: str, device: torch.device) -> StateDict:
    return load_checkpoint(path, map_location=device)


def save_state(session: Session, state: LoopState, trainer: Trainer, clock_start: float) -> None:
    """The full checkpoint (rank 0, atomic), then delete weight files no class needs any more."""
    state.wall_time_s = time.time() - clock_start
    doomed = [] if session.config.keep_all_checkpoints else unneeded_weight_files(state)
    state.epoch_files = [name for name in state.epoch_files if name not in doomed]
    if not session.context.is_main:
        return
    mid_round = not state.starts_outer_round
    save_checkpoint(session.files.checkpoint, {
        "config": config_to_dict(session.config),
        "world_size": session.context.world_size,
        "state": state.to_dict(),
        "model": trainer.module.state_dict() if mid_round else None,
        "optimizer": trainer.optimizer.state_dict() if mid_round else None,
        "scheduler": trainer.scheduler.state_dict() if mid_round else None,
        "rng": capture_rng_states(),
        "metrics_size": session.files.metrics_size(),
    })
    for name in doomed:
        Path(name).unlink(missing_ok=True)


def unneeded_weight_files(state: LoopState) -> list[str]:
    """Files no class points to, that are not the latest, nor the best-validation model's (reported)."""
    needed = {name for name in [*state.best_files, state.latest_file, state.best_model_name] if name}
    return [name for name in state.epoch_files if name not in needed]


def start_or_resume(session: Session) -> tuple[LoopState, dict[str, Any] | None]:
    """A fresh state, or the state of the checkpoint --resume names (after checking it fits)."""
    config, files = session.config, session.files
    checkpoint_path = clothing_resume_path(config, files)
    if checkpoint_path is None:
        if session.context.is_main:
            files.create()
            files.write_config(config_to_dict(config))
            files.truncate_metrics(0)
        return LoopState(config.num_classes, np.arange(len(session.splits.train), dtype=np.int64)), None
    saved = load_compatible_checkpoint(checkpoint_path, config_to_dict(config), RESUME_NEUTRAL_FIELDS)
    if "state" not in saved:
        raise CheckpointError(f"{checkpoint_path} is not a Clothing.py checkpoint")
    if saved["world_size"] != session.context.world_size:
        session.log(f"WARNING: the checkpoint was written by {saved['world_size']} process(es), this run has "
                    f"{session.context.world_size}: batches and augmentation will differ from an uninterrupted run")
    state = LoopState.from_dict(saved["state"])
    missing = [name for name in [*state.best_files, state.latest_file] if name and not Path(name).is_file()]
    if missing:
        raise CheckpointError(f"{checkpoint_path} needs weight files that are gone: {', '.join(missing[:3])}")
    restore_rng_states(saved["rng"])
    if session.context.is_main:
        files.create()
        files.truncate_metrics(saved["metrics_size"])
    session.log(f"resuming from {checkpoint_path}: outer {state.outer} inner {state.inner} epoch {state.epoch}")
    return state, saved


def clothing_resume_path(config: ClothingConfig, files: RunFiles) -> Path | None:
    """The checkpoint --resume names; without --resume a run folder is never overwritten."""
    if not config.resume and files.checkpoint.is_file():
        raise CheckpointError(f"{files.run_dir} already holds a run (checkpoint.pt); pass --resume auto to "
                              f"continue it, or choose another --output_dir")
    return resume_path(config.resume, files.checkpoint)


def append_metrics(session: Session, record: dict[str, Any]) -> None:
    if session.context.is_main:
        session.files.append_metrics(record)


def finish(session: Session, state: LoopState, clock_start: float) -> dict[str, Any]:
    config = session.config
    state.wall_time_s = time.time() - clock_start
    bad = all_reduce_sum(torch.tensor([session.bad_in_prediction], device=session.device))
    result = {
        "method": "memomentum", "dataset": "clothing1m", "noise_type": "real", "noise_rate": None,
        "seed": config.seed, "best_val_acc": state.best_val_acc, "test_acc": state.test_acc,
        "best_model_name": state.best_model_name, "rounds": state.rounds,
        "final_train_size": int(len(state.train_positions)),
        "bad_images_in_training": state.bad_images, "bad_images_in_prediction": int(bad[0]),
        "wall_time_s": round(state.wall_time_s, 3), "device": describe_device(session.device),
        "world_size": session.context.world_size, "git_commit": git_commit(), "versions": versions(),
        "config": config_to_dict(config),
    }
    if session.context.is_main:
        session.files.write_result(result)
        append_results_log("Clothing1M Me-Momentum", repr(config), config.seed, state.test_acc)
    session.log(f"Best validation accuracy {state.best_val_acc:.2f}; test accuracy of that model "
                f"{state.test_acc:.2f} ({state.best_model_name})")
    return result


def json_floats(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: undefined per-class values become null."""
    return [None if not math.isfinite(float(x)) else float(x) for x in values]
