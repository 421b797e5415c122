"""Networks by name: `build_model("lenet" | "resnet18" | "resnet34", num_classes)`."""
from __future__ import annotations

from typing import Callable

from torch import nn

from models.lenet import LeNet
from models.resnet import resnet18, resnet34

MODEL_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "lenet": lambda num_classes: LeNet(num_classes),
    "resnet18": resnet18,
    "resnet34": resnet34,
}


def build_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised network (draws from torch's global generator, like the official code)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](num_classes)
