"""Per-dataset settings as data (METHOD.md §1): classes, network, normalisation, augmentation, noise types."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    num_classes: int
    network: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_and_flip: bool  # random crop 32 with zero padding 4 + horizontal flip while training


PRESETS: dict[str, DatasetPreset] = {
    "mnist": DatasetPreset("mnist", 10, "lenet", (0.1307,), (0.3081,), False),
    "cifar10": DatasetPreset("cifar10", 10, "resnet18",
                             (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True),
    "cifar100": DatasetPreset("cifar100", 100, "resnet34",
                              (0.507, 0.487, 0.441), (0.267, 0.256, 0.276), True),
    # Our bundled stand-in for MNIST (scikit-learn's digits upscaled to 28×28): same network and
    # the MNIST normalisation, so it exercises exactly the MNIST code path.
    "digits": DatasetPreset("digits", 10, "lenet", (0.1307,), (0.3081,), False),
}

# symmetric_all: DivideMix's convention of "symmetric" (replace with probability r by any of the C
# classes); see data/noise.py.
SYNTHETIC_NOISE_TYPES = ("symmetric", "pairflip", "instance", "symmetric_all")
# CIFAR-N (Wei et al., ICLR 2022): real human labels, read from the CIFAR-N label files.
HUMAN_NOISE_TYPES: dict[str, tuple[str, ...]] = {
    "cifar10": ("aggre", "random1", "random2", "random3", "worst"),
    "cifar100": ("noisy",),
}


def noise_types_for(dataset: str) -> tuple[str, ...]:
    return SYNTHETIC_NOISE_TYPES + HUMAN_NOISE_TYPES.get(dataset, ())


def is_human_noise(dataset: str, noise_type: str) -> bool:
    """Whether the labels of this setting are people's (CIFAR-N), so that no noise rate applies."""
    return noise_type in HUMAN_NOISE_TYPES.get(dataset, ())
