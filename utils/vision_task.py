"""One MNIST/CIFAR/digits run's data, network and passes (METHOD.md §1, §3): what the loop of
utils/memomentum.py calls to train, validate, test and extract (utils/clothing_task.py is the same
for Clothing1M).

The whole split lives on the device as uint8 tensors; every random draw of the input pipeline
comes from one seeded `torch.Generator`, whose state goes into every checkpoint.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from data.device_pipeline import DevicePipeline, images_to_device
from data.noisy_dataset import NoisyDataset, build_noisy_dataset, noisy_labels_npz
from models import build_model
from utils.engine import (EpochStats, compile_network, images_only, make_sgd, predict_logits,
                          train_one_epoch, uses_channels_last)
from utils.metrics import accuracy, batch_mean_accuracy, class_balanced_accuracy
from utils.run.progress import with_progress
from utils.run.atomic import atomic_write_bytes
from utils.train_config import TrainConfig


def load_dataset(config: TrainConfig) -> NoisyDataset:
    """The dataset of `config` with its noisy labels and the official split (METHOD.md §1-2)."""
    return build_noisy_dataset(config.dataset, config.data_path, config.noise_type, config.noise_rate,
                               config.seed, config.data_percent, config.download, config.cifarn_path)


def save_noisy_labels(path: str, dataset: NoisyDataset, config: TrainConfig) -> str:
    """--save_noisy_labels: the labels, split and transition matrix as one .npz, written atomically."""
    payload = noisy_labels_npz(dataset, config.dataset, config.noise_type, config.noise_rate,
                               config.seed, config.data_percent)
    return str(atomic_write_bytes(path, payload))


class TestAccuracy(NamedTuple):
    exact: float        # over all test images (what we report)
    batch_mean: float   # the official printout: mean of per-batch accuracies (METHOD.md §5)


class VisionTask:
    def __init__(self, config: TrainConfig, dataset: NoisyDataset, device: torch.device,
                 should_stop=None, show_progress: bool = False) -> None:
        self.config = config
        self.device = device
        self.num_classes = dataset.vision.num_classes
        self.should_stop = should_stop
        self.show_progress = show_progress
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
        self.test_labels = torch.from_numpy(dataset.vision.test_labels).long().to(device)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    def new_model(self) -> nn.Module:
        """A fresh network (initialised from torch's global generator, seeded once per run)."""
        model = build_model(self.config.preset.network, self.num_classes).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return compile_network(model, self.config.compile)

    def new_optimizer(self, model: nn.Module) -> torch.optim.SGD:
        return make_sgd(model.parameters(), self.config.lr, self.config.weight_decay, self.config.sgd)

    def train_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                    subset: torch.Tensor | None, description: str) -> EpochStats:
        """One shuffled, augmented pass over the training examples at positions `subset` (None: all)."""
        images = self.train_images if subset is None else self.train_images.index_select(0, subset)
        labels = self.train_labels if subset is None else self.train_labels.index_select(0, subset)
        draws = self.pipeline.draw_epoch(len(labels), self.generator, shuffle=True, augment=True)
        # A last batch of one example is trained as officially: LeNet has no BatchNorm, and the CIFAR
        # ResNets' last BatchNorm still sees 4x4 values per channel (tests/test_models.py).
        batches = ((x, y) for x, y, _ in self.pipeline.batches(images, labels, self.config.batch_size, draws))
        total = -(-len(labels) // self.config.batch_size)
        batches = with_progress(batches, total, description, self.show_progress)
        return train_one_epoch(model, optimizer, batches, self.training_loss, amp=self.config.amp,
                               should_stop=self.should_stop)

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
        unless --predict_clean (METHOD.md §5)."""
        logits = self.logits(model, self.val_images, augment=not self.config.predict_clean)
        return class_balanced_accuracy(logits.argmax(1), self.val_labels, self.num_classes)

    def test(self, model: nn.Module) -> TestAccuracy:
        predictions = self.logits(model, self.test_images, augment=False).argmax(1)
        return TestAccuracy(accuracy(predictions, self.test_labels),
                            batch_mean_accuracy(predictions, self.test_labels, self.config.eval_batch_size))

    def training_set_logits(self, model: nn.Module) -> torch.Tensor:
        """Predictions over the whole noisy training split, for extraction (augmented by default)."""
        return self.logits(model, self.train_images, augment=not self.config.predict_clean)
