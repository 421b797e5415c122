"""ImageNet-pretrained torchvision ResNets with a new last layer, for Clothing1M (docs/clothing1m.md).

The official code builds `resnet50(pretrained=True)` (the IMAGENET1K_V1 weights) and replaces
`fc` by a fresh `Linear(2048, num_classes)`. Here the ImageNet weights are read once
(`load_imagenet_state`: --weights file, else the torch hub cache, else a download) and every
outer round builds a fresh network from them (`build_classifier`), so no round re-reads the disk.
"""
from __future__ import annotations

import pickle
import urllib.error
import zipfile
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet, ResNet18_Weights, ResNet34_Weights, ResNet50_Weights, WeightsEnum

from utils.errors import UserError

# The weights `pretrained=True` meant in the torchvision of the official code.
ARCHITECTURES: dict[str, tuple[Callable[..., ResNet], WeightsEnum]] = {
    "resnet18": (torchvision.models.resnet18, ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, ResNet50_Weights.IMAGENET1K_V1),
}

StateDict = dict[str, torch.Tensor]
TOTAL_STRIDE = 32  # a torchvision ResNet's last feature map is ceil(size / 32) pixels on a side


def batch_of_one_trains(image_size: int) -> bool:
    """Whether a training batch of ONE image passes the last BatchNorm: it needs more than one value
    per channel, so a last feature map larger than 1x1 (images over 32 pixels)."""
    return -(-image_size // TOTAL_STRIDE) > 1


def hub_cache_file(arch: str) -> Path:
    """Where torchvision keeps (or would download) the ImageNet weights of `arch`."""
    _, weights = ARCHITECTURES[arch]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def load_imagenet_state(arch: str, weights_path: str = "") -> StateDict:
    """The ImageNet state dict: from `weights_path` if given, else the hub cache or a download."""
    if weights_path:
        return read_state_dict_file(weights_path)
    _, weights = ARCHITECTURES[arch]
    try:
        return weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise UserError(_no_weights_message(arch, f"the download failed ({error})")) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise UserError(_no_weights_message(
            arch, f"the cached file is unreadable ({type(error).__name__}); delete it and retry")) from None


def read_state_dict_file(path: str | Path) -> StateDict:
    """A state dict saved with torch.save (plain, or under 'state_dict'/'model'; 'module.' prefixes removed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise UserError(f"--weights {path} is not a readable torch state dict ({type(error).__name__})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--weights {path} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def build_classifier(arch: str, num_classes: int, imagenet_state: StateDict | None) -> ResNet:
    """A fresh network: ImageNet weights (if given) and a new `num_classes`-way last layer.

    A state dict whose last layer already has `num_classes` outputs (e.g. a Clothing1M model)
    is loaded whole instead.
    """
    constructor, _ = ARCHITECTURES[arch]
    model = constructor(weights=None)
    in_features = model.fc.in_features
    if imagenet_state is not None and _fc_outputs(imagenet_state) != num_classes:
        _load(model, imagenet_state, arch)
        imagenet_state = None
    # Replaced after loading, as officially: the new layer draws its initialisation from torch's RNG.
    model.fc = nn.Linear(in_features, num_classes)
    if imagenet_state is not None:
        _load(model, imagenet_state, arch)
    return model


def _fc_outputs(state: StateDict) -> int | None:
    weight = state.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else None


def _load(model: nn.Module, state: StateDict, arch: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UserError(f"the weights do not fit a torchvision {arch} ({first}); check --arch and --weights") from None


def _no_weights_message(arch: str, why: str) -> str:
    return (f"no ImageNet weights for {arch}: {why}. Put the torchvision file at "
            f"{hub_cache_file(arch)} (from {ARCHITECTURES[arch][1].url}; TORCH_HOME moves the cache), "
            f"or pass --weights PATH to a local state dict, or --no_pretrain to start from random weights")
