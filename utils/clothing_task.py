"""One Clothing1M run's data, network and passes (docs/clothing1m.md): the task interface
(utils/task.py) on Clothing1M, on one process or under torchrun, and what Me-Momentum's Clothing1M
algorithm asks beyond it (per-class scores, class-weighted loss, predictions by weight file).

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

from data.clothing import (IGNORED_LABEL, IMAGE_TRANSFORMS, ClothingLoader, ClothingSplits, DeviceBatchTransform,
                           build_splits, default_num_workers, raise_or_count_bad)
from data.clothing_index import INDEX_FILE_NAME, class_counts, load_index
from data.device_pipeline import batch_bounds
from models.pretrained import StateDict, batch_of_one_trains, build_classifier, load_imagenet_state
from utils.engine import Trainer, place_network, predict_logits, sgd_trainer, uses_channels_last
from utils.errors import StopRequested, UserError
from utils.metrics import TestAccuracy, batch_mean_accuracy, readable_accuracy
from utils.run.checkpoint import load_checkpoint
from utils.run.distributed import (STOP_POLL_EVERY, DistContext, all_reduce_sum, broadcast_buffers, gather_objects,
                                   gather_sharded, main_process_first, shard_for_training, shard_indices,
                                   unwrap_model, wrap_model)
from utils.run.progress import with_progress
from utils.methods import METHODS
from utils.run.provenance import describe_device
from utils.task import TRAINING_SET_OUTPUTS

if TYPE_CHECKING:
    from utils.clothing_config import ClothingConfig
    from utils.run.driver import Run


MILESTONES = (10, 20)   # epochs of an outer round (the scheduler is created once per outer round)
# Clothing1M's noisy labels are 61.54 % right (Xiao et al., CVPR 2015): the rate a method may assume
ESTIMATED_NOISE_RATE = 0.3846


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one process's augmentation generator: its own stream for every rank."""
    sequence = np.random.SeedSequence([seed, rank])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class ClothingTask:
    """What stays fixed during a run: config, the run (processes, log, stop requests), data."""

    config: "ClothingConfig"
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
    bad_in_training: int = 0    # ... and in training passes

    # the task interface (utils/task.py)
    name: str = "clothing1m"
    provides: frozenset[str] = frozenset({TRAINING_SET_OUTPUTS})  # no clean labels for the training list
    assumed_noise_rate: float = ESTIMATED_NOISE_RATE
    train_clean_labels: None = None

    def __post_init__(self) -> None:
        self.num_classes = self.config.num_classes
        labels = torch.from_numpy(self.splits.labels)
        self.train_labels = labels[self.splits.train].to(self.device)
        self.test_labels = labels[self.splits.test].to(self.device)
        self.val_labels = labels[self.splits.val].to(self.device)

    @property
    def num_train(self) -> int:
        return len(self.splits.train)

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
        return TestAccuracy(readable_accuracy(predictions, labels), official)

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

    # ------------------------------------------------------------------ training
    def training_batches(self, subset: torch.Tensor | np.ndarray | None, description: str, drop_last: bool = False
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(augmented images, labels, positions in the training list) of this process's share of one shuffled
        pass over the training examples at `subset` (None: all). Shuffling and augmentation are drawn from
        the task's generators, whose states every checkpoint holds, so a resumed epoch replays exactly;
        unreadable images get the ignored label (--skip_bad_images; counted in bad_in_training)."""
        config, context = self.config, self.context
        positions = np.arange(self.num_train, dtype=np.int64) if subset is None else np.asarray(
            subset.cpu() if isinstance(subset, torch.Tensor) else subset, dtype=np.int64)
        order = positions[torch.randperm(len(positions), generator=self.shuffle_generator).numpy()]
        mine = shard_for_training(order, context.rank, context.world_size)
        batch_size = max(1, config.batch_size // context.world_size)
        # A last batch of one image is a batch of its own, as officially, unless the images are so small
        # that BatchNorm would fail on it: then it joins the batch before it (docs/clothing1m.md).
        # differs from the official code: a last batch of one joins the batch before it
        fold = not drop_last and not batch_of_one_trains(config.image_size)
        bounds = batch_bounds(len(mine), batch_size, fold_single_last=fold)
        batches = self.training_pass(mine, bounds, batch_size, fold, drop_last)
        total = sum(1 for start, stop in bounds if not drop_last or stop - start == batch_size)
        return with_progress(batches, total, description, self.run.show_progress)

    def training_pass(self, mine: np.ndarray, bounds: list[tuple[int, int]], batch_size: int, fold: bool,
                      drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        bad = torch.zeros((), dtype=torch.int64)
        try:
            for (start, stop), batch in zip(bounds, self.loader.batches(self.splits.train[mine], batch_size,
                                                                         fold_single_last=fold)):
                if drop_last and stop - start < batch_size:
                    continue
                bad += raise_or_count_bad(batch, self.config.skip_bad_images)
                images, labels, ok = self.transform.to_device(batch)
                positions = torch.from_numpy(mine[start:stop]).to(self.device)
                yield (self.transform.train(images, self.augment_generator),
                       labels.masked_fill(~ok, IGNORED_LABEL), positions)
        finally:
            self.bad_in_training += int(bad)

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the batch's readable images (this process's share: DDP averages the
        gradients of the processes)."""
        valid = labels != IGNORED_LABEL
        losses = F.cross_entropy(logits, labels.clamp_min(0), reduction="none") * valid
        return losses.sum() / valid.sum().clamp_min(1)

    def class_weighted_loss(self, weights: np.ndarray) -> "ClassWeightedLoss":
        """The official Clothing.py's loss: cross-entropy weighted per class, over the global batch."""
        return ClassWeightedLoss(torch.tensor(weights, dtype=torch.float32, device=self.device),
                                 self.context.world_size)

    def new_model(self, name: str | None = None) -> nn.Module:
        """A fresh network: ImageNet weights (unless --no_pretrain) with a new last layer; under torchrun
        wrapped in DistributedDataParallel. Its architecture is --arch's (`name` must be None)."""
        if name is not None:
            raise UserError(f"Clothing.py trains --arch {self.config.arch}, not {name}")
        return wrap_model(network(self, self.imagenet_state), self.context, sync_batchnorm=not self.config.no_sync_bn)

    def default_trainer(self) -> Trainer:
        return self.new_trainer()

    def new_trainer(self, saved: dict[str, Any] | None = None) -> Trainer:
        """The official Clothing.py's SGD and MultiStepLR(10, 20) around a fresh network, or around the
        network, optimizer and scheduler of a checkpoint."""
        return new_trainer(self, saved)

    def sum_over_processes(self, sums: dict[str, float]) -> dict[str, float]:
        if self.context.world_size == 1 or not sums:
            return sums
        keys = sorted(sums)
        totals = all_reduce_sum(torch.tensor([float(sums[key]) for key in keys], dtype=torch.float64,
                                             device=self.device))
        return dict(zip(keys, totals.tolist()))

    def unreadable_in_training(self) -> int:
        """Unreadable training images met since the last call, over all processes."""
        count = all_reduce_sum(torch.tensor([self.bad_in_training], dtype=torch.int64, device=self.device))
        self.bad_in_training = 0
        return int(count[0])

    # ------------------------------------------------------------------ measuring
    def validate(self, model: nn.Module) -> float:
        """Accuracy on the clean validation set (eval transform)."""
        return readable_accuracy(*self.validation_predictions(model))

    def validation_predictions(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, label) of every clean validation image (prediction −1: unreadable), with rank 0's
        BatchNorm statistics on every process."""
        broadcast_buffers(model)
        return predict_positions(self, unwrap_model(model), self.splits.val), self.splits.labels[self.splits.val]

    def test_predictions(self, model: nn.Module) -> torch.Tensor:
        return torch.from_numpy(predict_positions(self, unwrap_model(model), self.splits.test)).to(self.device)

    def train_predictions(self, model: nn.Module, positions: np.ndarray) -> np.ndarray:
        """The prediction of every training example at `positions` (eval transform; −1: unreadable)."""
        return predict_positions(self, model, self.splits.train[positions])

    def training_set_logits(self, model: nn.Module) -> torch.Tensor:
        """Logits of every training example, augmented as in training (NaN rows: unreadable images)."""
        return logits_at(self, unwrap_model(model), self.splits.train, augment=True)[0]

    def test_logits(self, model: nn.Module) -> torch.Tensor:
        """Logits of every test image, eval transform (NaN rows: unreadable images)."""
        return logits_at(self, unwrap_model(model), self.splits.test)[0]

    def validation_logits(self, model: nn.Module) -> torch.Tensor:
        """Logits of every clean validation image, eval transform (NaN rows: unreadable images)."""
        return logits_at(self, unwrap_model(model), self.splits.val)[0]

    def place(self, model: nn.Module) -> nn.Module:
        """`model` (or the layers just added to it) on the device, in the task's memory format."""
        return place_network(model, self.device, uses_channels_last(self.config.channels_last, self.device), "off")

    @property
    def generator(self) -> torch.Generator:
        """The seeded generator (the same on every rank, checkpointed) a method's own draws come from."""
        return self.shuffle_generator

    def network_for_weights(self) -> nn.Module:
        """A network whose weights will be loaded (built without drawing from torch's generator)."""
        return network_without_drawing(self, None)

    def load_weights(self, path: str) -> StateDict:
        return load_checkpoint(path, map_location=self.device)


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


def predict_positions(task: ClothingTask, model: nn.Module, positions: np.ndarray) -> np.ndarray:
    """Predicted class of every dataset position (−1: unreadable image), each predicted by exactly one rank."""
    logits, readable = logits_at(task, model, positions)
    if not len(logits):
        return np.full(len(positions), -1, dtype=np.int64)
    return logits.argmax(1).masked_fill(~readable, -1).cpu().numpy()


def logits_at(task: ClothingTask, model: nn.Module, positions: np.ndarray, augment: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, readable) of every dataset position, each predicted by exactly one rank and gathered on
    all: the eval transform, or with `augment` the training one (drawn from this rank's generator);
    an unreadable image's row is NaN."""
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
            yield task.transform.train(images_u8, task.augment_generator) if augment else task.transform.eval(images_u8)

    total = -(-len(mine) // config.eval_batch_size)
    logits = predict_logits(model, with_progress(images(), total, "predicting", task.run.show_progress), config.amp)
    local = torch.full((len(mine), task.num_classes), float("nan"), device=task.device)
    readable = torch.zeros(len(mine), dtype=torch.bool, device=task.device)
    if len(mine):
        readable = torch.cat(ok_masks)
        local = logits.masked_fill(~readable[:, None], float("nan"))
    return gather_sharded(local, len(positions)), gather_sharded(readable.to(torch.uint8), len(positions)).bool()


def open_task(config: "ClothingConfig", run: "Run") -> ClothingTask:
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
                                             uses_channels_last(config.channels_last, context.device),
                                             IMAGE_TRANSFORMS[METHODS[config.method].clothing_images]),
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
