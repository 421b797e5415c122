"""One MNIST/CIFAR/digits run's data, network and passes (docs/method.md, "Data"): what the loops of
utils/methods/ call to train, validate, test and extract (utils/clothing_task.py is the same for
Clothing1M).

The whole split lives on the device as uint8 tensors; every random draw of the input pipeline
comes from one seeded `torch.Generator`, whose state goes into every checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from data.device_pipeline import DevicePipeline, images_to_device
from data.noisy_dataset import NoisyDataset, build_noisy_dataset, noisy_labels_npz, same_npz_arrays
from models import build_model, takes_images
from utils.engine import Trainer, images_only, place_network, predict_logits, sgd_trainer, uses_channels_last
from utils.errors import UserError
from utils.metrics import TestAccuracy, accuracy, batch_mean_accuracy, class_balanced_accuracy
from utils.run.progress import with_progress
from utils.run.atomic import atomic_write_bytes
from utils.task import CLEAN_TRAINING_LABELS, TRAINING_SET_OUTPUTS, TWO_VIEW_STREAMS
from utils.train_config import TrainConfig


def load_dataset(config: TrainConfig) -> NoisyDataset:
    """The dataset of `config` with its noisy labels and the official split (docs/method.md, "Data"; docs/noise.md)."""
    return build_noisy_dataset(config.dataset, config.data_path, config.drawn_noise_type, config.noise_rate,
                               config.seed, config.data_percent, config.download, config.cifarn_path)


def save_noisy_labels(path: str, dataset: NoisyDataset, config: TrainConfig) -> str:
    """--save_noisy_labels: the labels, split and transition matrix as one .npz, written atomically;
    returns what was done. A file already there is kept when it holds the same arrays (a resumed or
    repeated run), and refused otherwise: a file we did not make is never replaced."""
    payload = noisy_labels_npz(dataset, config.dataset, config.drawn_noise_type, config.noise_rate,
                               config.seed, config.data_percent)
    if Path(path).exists():
        if not same_npz_arrays(Path(path).read_bytes(), payload):
            raise UserError(f"--save_noisy_labels {path} exists already and holds something else; choose "
                            f"another --save_noisy_labels, or delete the file")
        return f"noisy labels already in {path} (the same arrays)"
    return f"noisy labels written to {atomic_write_bytes(path, payload)}"


def describe_noise(dataset: NoisyDataset, config: TrainConfig) -> str:
    # CIFAR-N labels are people's: --noise_rate plays no part, so it is not printed
    rate = "" if config.human_noise else f" {config.noise_rate}"
    return (f"{config.dataset}: {len(dataset.noisy_labels)} training examples "
            f"({len(dataset.train_index)} train / {len(dataset.val_index)} validation), "
            f"{len(dataset.vision.test_labels)} test; {config.drawn_noise_type} noise{rate}: "
            f"realised rate {dataset.actual_rate:.4f}")


# The official main.py's optimizer and schedule: SGD (momentum 0.9) with MultiStepLR(40, 80), 0.1
MILESTONES = (40, 80)


class VisionTask:
    """The task interface (utils/task.py) on MNIST, CIFAR-10/100, CIFAR-N and digits."""

    provides = frozenset({CLEAN_TRAINING_LABELS, TRAINING_SET_OUTPUTS, TWO_VIEW_STREAMS})

    def __init__(self, config: TrainConfig, dataset: NoisyDataset, device: torch.device,
                 show_progress: bool = False) -> None:
        self.config = config
        self.name = config.dataset
        self.device = device
        self.num_classes = dataset.vision.num_classes
        self.actual_noise_rate = dataset.actual_rate
        # CIFAR-N's people fixed the rate: a method that assumes one takes the realised rate
        self.assumed_noise_rate = dataset.actual_rate if config.human_noise else config.noise_rate
        self.show_progress = show_progress
        # differs from the official code: drawn from one `torch.Generator` seeded with `--seed`
        self.generator = torch.Generator().manual_seed(config.seed)
        preset = config.preset
        self.channels_last = uses_channels_last(config.channels_last, device)
        self.pipeline = DevicePipeline(preset.mean, preset.std, preset.crop_and_flip, device,
                                       self.channels_last)
        all_images = images_to_device(dataset.vision.train_images, device)
        noisy = torch.from_numpy(dataset.noisy_labels).long().to(device)
        clean = torch.from_numpy(dataset.clean_labels).long().to(device)
        self.train_index = np.asarray(dataset.train_index, dtype=np.int64)  # into the full training set
        train_index = torch.from_numpy(dataset.train_index).long().to(device)
        val_index = torch.from_numpy(dataset.val_index).long().to(device)
        self.train_images, self.val_images = all_images[train_index], all_images[val_index]
        self.train_labels, self.val_labels = noisy[train_index], noisy[val_index]
        self.train_clean_labels = clean[train_index]
        self.test_images = images_to_device(dataset.vision.test_images, device)
        self.check_network()
        self.test_labels = torch.from_numpy(dataset.vision.test_labels).long().to(device)

    def check_network(self) -> None:
        """--network must take this dataset's images; the dataset's own network always does."""
        config, shape = self.config, tuple(self.train_images.shape[1:])
        if config.network_name != config.preset.network and not takes_images(config.network_name,
                                                                             self.num_classes, shape):
            raise UserError(f"--network {config.network_name} cannot take {config.dataset}'s "
                            f"{'×'.join(map(str, shape))} images (LeNet is sized for 28×28); leave --network out "
                            f"for {config.dataset}'s own ({config.preset.network}) or choose another")

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    def describe(self) -> dict[str, Any]:
        """The keys of result.json that say what was trained on."""
        # CIFAR-N labels are people's: --noise_rate played no part, so none is recorded
        rate = None if self.config.human_noise else self.config.noise_rate
        drawn = self.config.drawn_noise_type  # PES-semi draws symmetric noise as its authors' code does
        return {"dataset": self.config.dataset, "noise_type": self.config.noise_type,
                "noise_rate": rate, "actual_noise_rate": self.actual_noise_rate,
                **({"drawn_noise_type": drawn} if drawn != self.config.noise_type else {})}

    def new_model(self, name: str | None = None) -> nn.Module:
        """A fresh network, `--network` or the dataset's unless `name` names another (initialised from
        torch's global generator, seeded once per run)."""
        model = build_model(name or self.config.network_name, self.num_classes, self.train_images.shape[1],
                            self.config.cnn9_dropout)
        return place_network(model, self.device, self.channels_last, self.config.compile)

    def place(self, model: nn.Module) -> nn.Module:
        """`model` (or the layers just added to it) on the device, in the task's memory format."""
        return place_network(model, self.device, self.channels_last, "off")

    def new_trainer(self, milestones: Sequence[int] | None) -> Trainer:
        """A fresh network with SGD (momentum 0.9) and MultiStepLR(milestones) unless None."""
        config = self.config
        return sgd_trainer(self.new_model(), config.lr, config.weight_decay, config.sgd, milestones)

    def default_trainer(self) -> Trainer:
        """A fresh network with the official optimizer and schedule (SGD, MultiStepLR(40, 80))."""
        return self.new_trainer(milestones=MILESTONES)

    def sum_over_processes(self, sums: dict[str, float]) -> dict[str, float]:
        return sums  # main.py runs one process

    def fingerprint(self) -> str:
        """What the run trains and is tested on, hashed: images, clean and noisy labels, the split. A
        resumed run must find the same (any --data_path), or it would go on with other data."""
        digest = hashlib.sha256()
        for array in (self.train_images, self.val_images, self.train_labels, self.val_labels,
                      self.train_clean_labels, self.test_images, self.test_labels):
            digest.update(np.ascontiguousarray(array.cpu().numpy()).tobytes())
        return digest.hexdigest()

    @property
    def weights_owner_file(self) -> Path:
        """Beside the official weight files under --model_dir: which run writes them."""
        return Path(self.config.model_dir) / f"{self.config.official_checkpoint_stem}.owner.json"

    def official_weights_path(self, which: str) -> Path:
        """The official weight file name under --model_dir: {dataset}-{noise_type}-{noise_rate}-{seed}_{which}.hdf5."""
        return Path(self.config.model_dir) / f"{self.config.official_checkpoint_stem}_{which}.hdf5"

    def generator_states(self) -> dict[str, torch.Tensor]:
        return {"pipeline": self.generator.get_state()}

    def restore_generators(self, states: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(states["pipeline"])

    def training_batches(self, subset: torch.Tensor | None, description: str,
                         drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images, labels, their positions in the training split) of one shuffled, augmented pass over
        the examples at `subset` (None: all), the last batch smaller unless `drop_last`; a progress bar
        on a terminal."""
        count = len(self.train_labels) if subset is None else len(subset)
        draws = self.pipeline.draw_epoch(count, self.generator, shuffle=True, augment=True)
        if subset is not None:  # the shuffled order, as positions in the whole split: no copy of the subset
            draws = dataclasses.replace(draws, order=subset.index_select(0, draws.order))
        # A last batch of one example is trained as officially: LeNet has no BatchNorm, and the CIFAR
        # ResNets' last BatchNorm still sees 4x4 values per channel (tests/models/test_models.py).
        batch_size = self.config.batch_size
        batches = (batch for batch in self.pipeline.batches(self.train_images, self.train_labels, batch_size, draws)
                   if not drop_last or len(batch[1]) == batch_size)
        total = count // batch_size if drop_last else -(-count // batch_size)
        return with_progress(batches, total, description, self.show_progress)

    def two_view_stream(self, subset: torch.Tensor, batch_size: int
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Endless (first view, second view, noisy labels) batches of `batch_size` examples at `subset`:
        each pass a new shuffle, each view its own crops and flips, full batches only, a new pass where
        one ends (as a re-iterated DataLoader(shuffle=True, drop_last=True) of two-view items). A pass
        is drawn when it starts, so that streams drawn in turn stay reproducible."""
        count = len(subset)
        if count < batch_size:
            raise UserError(f"a stream of batches of {batch_size} over {count} examples has no full batch")
        while True:
            first = self.pipeline.draw_epoch(count, self.generator, shuffle=True, augment=True)
            second = self.pipeline.draw_epoch(count, self.generator, shuffle=False, augment=True)
            order = subset.index_select(0, first.order)
            first, second = dataclasses.replace(first, order=order), dataclasses.replace(second, order=order)
            views = zip(self.pipeline.batches(self.train_images, self.train_labels, batch_size, first),
                        self.pipeline.batches(self.train_images, None, batch_size, second))
            for (view1, labels, _), (view2, _, _) in views:
                if len(labels) < batch_size:
                    break
                yield view1, view2, labels

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy against the (noisy or confident) labels, as in the official code."""
        return nn.functional.cross_entropy(logits, labels)

    def logits(self, model: nn.Module, images: torch.Tensor, augment: bool) -> torch.Tensor:
        """Logits in the order of `images`; `augment` applies the training augmentation."""
        draws = self.pipeline.draw_epoch(len(images), self.generator, shuffle=False, augment=augment)
        batches = self.pipeline.batches(images, None, self.config.eval_batch_size, draws)
        return predict_logits(model, images_only(batches), amp=self.config.amp)

    def validate(self, model: nn.Module) -> float:
        """Class-balanced accuracy on the noisy validation set; augmented like the official code
        unless --predict_clean (docs/method.md, "Where we differ from the official code")."""
        logits = self.logits(model, self.val_images, augment=not self.config.predict_clean)
        return class_balanced_accuracy(logits.argmax(1), self.val_labels, self.num_classes)

    def validation_predictions(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, noisy label) of every validation example, augmented as `validate` does."""
        logits = self.logits(model, self.val_images, augment=not self.config.predict_clean)
        return logits.argmax(1), self.val_labels

    def test_predictions(self, model: nn.Module) -> torch.Tensor:
        return self.logits(model, self.test_images, augment=False).argmax(1)

    def test(self, model: nn.Module) -> TestAccuracy:
        """Exact accuracy over every test image, and the official printout's figure: the mean of the
        accuracies of test batches of 2 x --batch_size, the last one smaller (docs/outputs.md)."""
        predictions = self.test_predictions(model)
        return TestAccuracy(accuracy(predictions, self.test_labels),
                            batch_mean_accuracy(predictions, self.test_labels, 2 * self.config.batch_size))

    def training_set_logits(self, model: nn.Module) -> torch.Tensor:
        """Predictions over the whole noisy training split, for extraction (augmented by default)."""
        return self.logits(model, self.train_images, augment=not self.config.predict_clean)

    def round_arrays(self, logits: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
        """--save_rounds: the examples an extraction looked at, its model's probabilities, its choice."""
        return {"index": self.train_index,
                "noisy_labels": self.train_labels.cpu().numpy().astype("int64"),
                "clean_labels": self.train_clean_labels.cpu().numpy().astype("int64"),
                "pred_probs": torch.softmax(logits.float(), dim=1).cpu().numpy().astype("float32"),
                "confident": mask.cpu().numpy().astype(bool)}
