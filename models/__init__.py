"""Networks by name: `build_model(name, num_classes, in_channels)`, for `--network` and the datasets' presets."""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from models.cnn9 import CNN9
from models.lenet import LeNet
from models.resnet import pes_resnet18, pes_resnet34, preact_resnet18, resnet18, resnet34

MODEL_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "lenet": LeNet,
    "resnet18": resnet18,     # the CIFAR-style ResNets of the official code
    "resnet34": resnet34,
    "cnn9": CNN9,             # Co-teaching's 9-layer CNN
    "pes_resnet18": pes_resnet18,  # PES's ResNets: the same with a padded stem
    "pes_resnet34": pes_resnet34,
    "preact_resnet18": preact_resnet18,  # PES-semi's PreAct ResNet-18
}


def build_model(name: str, num_classes: int, in_channels: int | None = None, cnn9_dropout: str = "never") -> nn.Module:
    """A freshly initialised network (draws from torch's global generator, like the official code);
    `in_channels`: the images' channels (None: the network's own default, 1 for LeNet, else 3);
    `cnn9_dropout`: when CNN9's dropout runs (models/cnn9.py)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    builder = MODEL_BUILDERS[name]
    if name == "cnn9":
        builder = functools.partial(CNN9, dropout_mode=cnn9_dropout)
    return builder(num_classes) if in_channels is None else builder(num_classes, in_channels)


def takes_images(name: str, num_classes: int, image_shape: tuple[int, int, int]) -> bool:
    """Whether network `name` runs on images of `image_shape` (C, H, W): LeNet's classifier, for one,
    is sized for 28×28. Tried on two blank images; torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model = build_model(name, num_classes, image_shape[0]).eval()
        try:
            model(torch.zeros(2, *image_shape))
        except RuntimeError:
            return False
    return True


def network_renews_layers(name: str) -> bool:
    """Whether network `name` can renew its last layers; torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        return renews_layers(build_model(name, 10))


def renews_layers(model: nn.Module) -> bool:
    """Whether the network can renew its last layers (PES): LeNet and the CIFAR ResNets."""
    return callable(getattr(model, "renew_last_layers", None))
