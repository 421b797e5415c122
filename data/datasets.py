"""The datasets main.py trains on, one entry each (docs/CONTRIBUTING.md, "Adding a dataset").

An entry says how many classes the dataset has, its default network, its normalisation and
augmentation (docs/method.md, "Data"), how papers name it, how it is read, and which real
human-noise label sets exist for it (CIFAR-N). Flag choices, presets, table labels and help texts
derive from this table; the noise models are data/noise.py's NOISE_TYPES.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data.cifarn import CIFARN_KEYS
from data.noise import NOISE_TYPES
from data.vision import VisionData, load_digits_data, load_files
from utils.errors import UserError


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str                         # how papers name it: "CIFAR-10"
    num_classes: int
    network: str                       # its default network (models/)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_and_flip: bool                # random crop 32 with zero padding 4 + horizontal flip while training
    # (data_path, download, num_classes, download_if_reachable) -> the data
    read: Callable[[str | Path, bool, int, bool], VisionData]
    human_noise: tuple[str, ...] = field(default=())     # CIFAR-N label sets (data/cifarn.py)


def _files(layout: str) -> Callable[[str | Path, bool, int, bool], VisionData]:
    """A reader of files in torchvision's layout `layout` (data/vision.py)."""
    return lambda data_path, download, num_classes, if_reachable: load_files(layout, data_path, num_classes,
                                                                             download, if_reachable)


DATASETS: dict[str, Dataset] = {dataset.name: dataset for dataset in (
    Dataset("mnist", "MNIST", 10, "lenet", (0.1307,), (0.3081,), False, _files("mnist")),
    Dataset("cifar10", "CIFAR-10", 10, "resnet18", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True,
            _files("cifar10"), tuple(CIFARN_KEYS["cifar10"])),
    Dataset("cifar100", "CIFAR-100", 100, "resnet34", (0.507, 0.487, 0.441), (0.267, 0.256, 0.276), True,
            _files("cifar100"), tuple(CIFARN_KEYS["cifar100"])),
    # scikit-learn's digits upscaled to 28x28: MNIST's network and normalisation, so it exercises
    # exactly the MNIST code path with no download.
    Dataset("digits", "Digits", 10, "lenet", (0.1307,), (0.3081,), False,
            lambda data_path, download, num_classes, if_reachable: load_digits_data(num_classes)),
)}


def load_vision_data(name: str, data_path: str | Path, download: bool = False,
                     download_if_reachable: bool = True) -> VisionData:
    """The dataset `name`, read from under `data_path` (fetched with torchvision when `download`, or
    when its download server answers unless `download_if_reachable` is off; the digits need nothing)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    return dataset.read(data_path, download, dataset.num_classes, download_if_reachable)


def noise_types_for(dataset: str) -> tuple[str, ...]:
    """The synthetic noise models, then the dataset's human label sets."""
    return tuple(NOISE_TYPES) + DATASETS[dataset].human_noise


def is_human_noise(dataset: str, noise_type: str) -> bool:
    """Whether the labels of this setting are people's (CIFAR-N), so that no noise rate applies."""
    return dataset in DATASETS and noise_type in DATASETS[dataset].human_noise
