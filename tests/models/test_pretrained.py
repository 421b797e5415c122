"""models/pretrained.py: ImageNet weights from the hub cache or a file, and one clear error offline."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from models.pretrained import build_classifier, hub_cache_file, load_imagenet_state, read_state_dict_file
from tests.clothing_fixture import NUM_CLASSES
from utils.errors import UserError


def test_pretrained_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = hub_cache_file("resnet18")
    assert cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    imagenet = torchvision.models.resnet18(weights=None)
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)
    state = load_imagenet_state("resnet18")
    model = build_classifier("resnet18", NUM_CLASSES, state)
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight) and model.fc.out_features == NUM_CLASSES

def test_missing_weights_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        load_imagenet_state("resnet50")
    message = str(error.value)
    assert str(hub_cache_file("resnet50")) in message and "--weights" in message and "--no_pretrain" in message

def test_weights_file_loads_with_module_prefix_and_wrapper(tmp_path):
    imagenet = build_classifier("resnet18", 1000, None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in imagenet.state_dict().items()}}, tmp_path / "w.pt")
    model = build_classifier("resnet18", NUM_CLASSES, read_state_dict_file(tmp_path / "w.pt"))
    assert torch.equal(model.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)
    with pytest.raises(UserError, match="do not fit a torchvision resnet34"):
        build_classifier("resnet34", NUM_CLASSES, read_state_dict_file(tmp_path / "w.pt"))
