"""One Clothing1M run's data, network and passes (docs/clothing1m.md): what the loop of
utils/methods/memomentum_clothing1m.py calls to train, validate, test and predict, on one process or
under torchrun (utils/vision_task.py is the same for MNIST/CIFAR).

Training draws its shuffling and augmentation from per-epoch seeds; evaluation and extraction are
sharded so that every image is predicted exactly once and gathered back in order on every rank.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.clothing import (ClothingLoader, ClothingSplits, DeviceBatchTransform, IGNORED_LABEL, build_splits,
                           default_num_workers, raise_or_count_bad)
from data.clothing_index import INDEX_FILE_NAME, class_counts, load_index
from models.pretrained import StateDict, batch_of_one_trains, build_classifier, load_imagenet_state
from utils.engine import Trainer, place_network, predict_logits, sgd_trainer, train_one_epoch, uses_channels_last
from utils.errors import StopRequested
from utils.metrics import TestAccuracy, accuracy, batch_mean_accuracy, per_class_accuracy_precision, per_class_scores
from utils.run.checkpoint import load_checkpoint
from utils.run.distributed import (STOP_POLL_EVERY, DistContext, all_reduce_sum, broadcast_buffers, gather_objects,
                                   gather_sharded, main_process_first, shard_for_training, shard_indices,
                                   unwrap_model, wrap_model)
from utils.run.progress import with_progress
from utils.run.provenance import describe_device

if TYPE_CHECKING:
    from utils.run.driver import Run

# The task reads Clothing.py's configuration (utils/clothing_config.py, ClothingConfig) without
# importing it: the configuration names the methods, whose Clothing1M loop imports this module.
ClothingConfig = Any

MILESTONES = (10, 20)   # epochs of an outer round (the scheduler is created once per outer round)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one process's augmentation generator: its own stream for every rank."""
    sequence = np.random.SeedSequence([seed, rank])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)


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


@dataclass
class ClothingTask:
    """What stays fixed during a run: config, the run (processes, log, stop requests), data."""

    config: ClothingConfig
    run: "Run"
    splits: ClothingSplits
    loader: ClothingLoader
    transform: DeviceBatchTransform
    imagenet_state: StateDict | None
    val_counts: np.ndarray
    # Every draw of training comes from these two generators, whose states go into every checkpoint
    # (as main.py's pipeline generator does): the order of each epoch, the same on every rank, and
    # this rank's crops and flips.
    shuffle_generator: torch.Generator = field(default_factory=torch.Generator)
    augment_generator: torch.Generator = field(default_factory=torch.Generator)
    bad_in_prediction: int = 0  # unreadable images met by this rank in prediction passes

    @property
    def context(self) -> DistContext:
        return self.run.context

    @property
    def device(self) -> torch.device:
        return self.context.device

    def describe(self) -> dict[str, Any]:
        """The keys of result.json that say what was trained on."""
        return {"dataset": "clothing1m", "noise_type": "real", "noise_rate": None}

    def fingerprint(self) -> str:
        """The index the run trains on, hashed (keys and labels of every split): a resumed run must
        find the same, whatever --data_root says."""
        return hashlib.sha256((Path(self.config.data_root) / INDEX_FILE_NAME).read_bytes()).hexdigest()

    @property
    def weights_owner_file(self) -> Path:
        """Beside the per-epoch weight files: which run writes them."""
        return self.config.epoch_weights_dir / ".owner.json"

    def official_weights_path(self, which: str) -> None:
        """The official Clothing1M code keeps per-epoch files only (the loop writes them)."""
        return None

    def test(self, model: nn.Module) -> TestAccuracy:
        """The clean test set, eval transform: exact accuracy over the readable images, and the official
        printout's mean of per-batch accuracies over batches of --batch_size."""
        predictions = predict_positions(self, model, self.splits.test)
        labels = self.splits.labels[self.splits.test]
        valid = predictions >= 0
        official = batch_mean_accuracy(torch.from_numpy(predictions[valid]), torch.from_numpy(labels[valid]),
                                       self.config.batch_size)
        return TestAccuracy(accuracy_percent(predictions, labels), official)

    def generator_states(self) -> dict[str, torch.Tensor]:
        """The generators' states of every rank (collective under torchrun), for the checkpoint."""
        states = {"shuffle": self.shuffle_generator.get_state()}
        for rank, state in enumerate(gather_objects(self.augment_generator.get_state())):
            states[f"augment:{rank}"] = state
        return states

    def restore_generators(self, states: dict[str, torch.Tensor]) -> None:
        """Continue this rank's streams (a rank the checkpoint has none for starts afresh)."""
        self.shuffle_generator.set_state(states["shuffle"])
        mine = states.get(f"augment:{self.context.rank}")
        if mine is not None:
            self.augment_generator.set_state(mine)
        else:
            self.run.log(f"WARNING: the checkpoint has no augmentation stream for rank {self.context.rank}; "
                         f"it starts afresh")


@dataclass(frozen=True)
class Validation:
    accuracy: float                  # overall accuracy on the clean validation set, % (compared unrounded)
    per_class_acc: np.ndarray
    per_class_precision: np.ndarray
    scores: np.ndarray


def validate(task: ClothingTask, trainer: Trainer) -> Validation:
    """Clean validation set, eval transform (docs/method.md, "Me-Momentum on Clothing1M"): overall
    accuracy and the per-class scores."""
    broadcast_buffers(trainer.model)
    predictions = predict_positions(task, trainer.module, task.splits.val)
    labels = task.splits.labels[task.splits.val]
    per_class_acc, per_class_precision = per_class_accuracy_precision(predictions, labels,
                                                                      task.config.num_classes)
    return Validation(accuracy_percent(predictions, labels), per_class_acc, per_class_precision,
                      per_class_scores(per_class_acc, per_class_precision, task.config.beta))


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
        weighted = (F.cross_entropy(logits, safe_labels, reduction="none") * example_weights).sum()
        weight_sum = example_weights.sum().detach()
        denominator = all_reduce_sum(weight_sum.clone()) if self.world_size > 1 else weight_sum
        self.weighted_sum += weighted.detach().double()
        self.weight_total += weight_sum.double()
        return weighted * self.world_size / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)

    def epoch_loss(self) -> float:
        totals = all_reduce_sum(torch.stack([self.weighted_sum, self.weight_total]))
        self.weighted_sum.zero_()
        self.weight_total.zero_()
        return float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")


def train_epoch(task: ClothingTask, trainer: Trainer, loss_fn: ClassWeightedLoss, train_positions: np.ndarray,
                where: str) -> tuple[float, float, int]:
    """One epoch of SGD over this rank's shard of a fresh permutation of S (positions in the noisy list).

    Returns (loss, accuracy, unreadable images) over all ranks. Shuffling and augmentation are drawn
    from the task's generators, whose states every checkpoint holds, so a resumed epoch replays exactly.
    """
    config, context = task.config, task.context
    order = train_positions[torch.randperm(len(train_positions), generator=task.shuffle_generator).numpy()]
    mine = task.splits.train[shard_for_training(order, context.rank, context.world_size)]
    per_rank_batch = max(1, config.batch_size // context.world_size)
    bad = torch.zeros((), dtype=torch.int64)
    batches = with_progress(training_batches(task, mine, per_rank_batch, task.augment_generator, bad),
                            -(-len(mine) // per_rank_batch), where, task.run.show_progress)
    stats = train_one_epoch(trainer.model, trainer.optimizer, batches, loss_fn, amp=config.amp,
                            should_stop=task.run.should_stop)
    counts = all_reduce_sum(torch.tensor([stats.correct, stats.count, int(bad)], dtype=torch.int64,
                                         device=task.device))
    return loss_fn.epoch_loss(), 100.0 * float(counts[0]) / max(int(counts[1]), 1), int(counts[2])


def training_batches(task: ClothingTask, positions: np.ndarray, batch_size: int, generator: torch.Generator,
                     bad: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(augmented normalised images, labels) on the device; unreadable images get the ignored label."""
    # A last batch of one image is a batch of its own, as officially, unless the images are so small
    # that BatchNorm would fail on it: then it joins the batch before it (docs/clothing1m.md).
    # differs from the official code: a last batch of one joins the batch before it
    fold = not batch_of_one_trains(task.config.image_size)
    for batch in task.loader.batches(positions, batch_size, fold_single_last=fold):
        bad += raise_or_count_bad(batch, task.config.skip_bad_images)
        images, labels, ok = task.transform.to_device(batch)
        yield task.transform.train(images, generator), labels.masked_fill(~ok, IGNORED_LABEL)


def predict_positions(task: ClothingTask, model: nn.Module, positions: np.ndarray) -> np.ndarray:
    """Predicted class of every dataset position (−1: unreadable image), each predicted by exactly one rank."""
    context, config = task.context, task.config
    mine = positions[shard_indices(len(positions), context.rank, context.world_size)]
    ok_masks: list[torch.Tensor] = []
    # Batches every rank has: only there may the collective stop check run.
    common_batches = -(-(len(positions) // context.world_size) // config.eval_batch_size)

    def images() -> Iterator[torch.Tensor]:
        for step, batch in enumerate(task.loader.batches(mine, config.eval_batch_size)):
            if (step < common_batches and step % STOP_POLL_EVERY == STOP_POLL_EVERY - 1
                    and task.run.stop_requested()):
                raise StopRequested("stopped during a prediction pass", task.run.stop_flag.signal_name)
            task.bad_in_prediction += raise_or_count_bad(batch, config.skip_bad_images)
            images_u8, _, ok = task.transform.to_device(batch)
            ok_masks.append(ok)
            yield task.transform.eval(images_u8)

    total = -(-len(mine) // config.eval_batch_size)
    logits = predict_logits(model, with_progress(images(), total, "predicting", task.run.show_progress), config.amp)
    local = torch.full((len(mine),), -1, dtype=torch.int64, device=task.device)
    if len(mine):
        local = logits.argmax(1).masked_fill(~torch.cat(ok_masks), -1)
    return gather_sharded(local, len(positions)).cpu().numpy()


def accuracy_percent(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over the readable images, in percent, exact (not a mean of per-batch accuracies)."""
    valid = predictions >= 0
    return accuracy(torch.from_numpy(predictions[valid]), torch.from_numpy(labels[valid]))


def open_task(config: ClothingConfig, run: "Run") -> ClothingTask:
    context = run.context
    index = load_index(Path(config.data_root) / INDEX_FILE_NAME, num_classes=config.num_classes)
    splits = build_splits(index, config.data_root, config.image_size, config.seed)
    workers = config.num_workers if config.num_workers >= 0 else default_num_workers(context.local_world_size)
    loader = ClothingLoader(splits.dataset, workers, pin_memory=context.device.type == "cuda")
    imagenet_state = None
    if config.use_pretrained:
        with main_process_first():  # a download into the shared hub cache happens once
            imagenet_state = load_imagenet_state(config.arch, config.weights)
    task = ClothingTask(config, run, splits, loader,
                        DeviceBatchTransform(context.device, config.image_size,
                                             uses_channels_last(config.channels_last, context.device)),
                        imagenet_state, class_counts(splits.labels[splits.val], config.num_classes),
                        torch.Generator().manual_seed(config.seed),
                        torch.Generator().manual_seed(rank_seed(config.seed, context.rank)))
    run.log(f"Clothing1M: {len(splits.train)} noisy training, {len(splits.val)} clean validation, "
                f"{len(splits.test)} clean test images; {context.world_size} process(es) on "
                f"{describe_device(context.device)}; {workers} decoding worker(s) per process")
    if config.batch_size % context.world_size:
        run.log(f"WARNING: --batch_size {config.batch_size} is not a multiple of the {context.world_size} "
                    f"processes: the global batch is {config.batch_size // context.world_size * context.world_size}")
    return task


def network(task: ClothingTask, imagenet_state: StateDict | None) -> nn.Module:
    config = task.config
    model = build_classifier(config.arch, config.num_classes, imagenet_state)
    return place_network(model, task.device, uses_channels_last(config.channels_last, task.device), config.compile)


def network_without_drawing(task: ClothingTask, imagenet_state: StateDict | None) -> nn.Module:
    """A network whose weights will be overwritten: built without consuming torch's global RNG, so a
    resumed run draws the next outer round's last layer exactly as an uninterrupted one."""
    with torch.random.fork_rng(devices=[]):
        return network(task, imagenet_state)


def new_trainer(task: ClothingTask, saved: dict[str, Any] | None = None) -> Trainer:
    """SGD and the outer round's scheduler around a fresh pretrained network (new last layer), or
    around the network, optimizer and scheduler of a checkpoint."""
    config = task.config
    if saved is None:
        module = network(task, task.imagenet_state)
    else:
        module = network_without_drawing(task, None)
        module.load_state_dict(saved["model"])  # before DDP, which broadcasts rank 0's weights
    model = wrap_model(module, task.context, sync_batchnorm=not config.no_sync_bn)
    trainer = sgd_trainer(model, config.lr, config.weight_decay, config.sgd, MILESTONES, module=unwrap_model(model))
    if saved is not None:
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.scheduler.load_state_dict(saved["scheduler"])
    return trainer


def load_weights(path: str, device: torch.device) -> StateDict:
    return load_checkpoint(path, map_location=device)
