"""The networks of docs/method.md ("Data") and the SGD they are trained with."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from models import build_model
from models.lenet import LeNet
from utils.engine import make_sgd


def official_order_forward(model: LeNet, images: torch.Tensor) -> torch.Tensor:
    """LeNet as the official code writes it: conv → ReLU → max-pool in each block."""
    conv1, conv2 = model.features[0], model.features[3]
    hidden = F.max_pool2d(F.relu(conv1(images)), 2)
    hidden = F.max_pool2d(F.relu(conv2(hidden)), 2)
    return model.classifier(hidden)


def mnist_like_batch(count: int, seed: int) -> torch.Tensor:
    """Strokes on a black background, normalised like MNIST: large flat regions give tied maxima."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(count, 1, 28, 28)
    strokes = torch.rand(count, 1, 28, 28, generator=generator) < 0.15
    pixels[strokes] = torch.randint(1, 256, (int(strokes.sum()),), generator=generator).float()
    return (pixels / 255.0 - 0.1307) / 0.3081


def gradients(model: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(logits, labels).backward()
    return [parameter.grad.clone() for parameter in model.parameters()]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lenet_pooling_before_relu_is_bitwise_the_official_order(seed):
    torch.manual_seed(seed)
    model = LeNet(10)
    images, labels = mnist_like_batch(64, seed), torch.arange(64) % 10

    ours = model(images)
    our_gradients = gradients(model, ours, labels)
    official = official_order_forward(model, images)
    official_gradients = gradients(model, official, labels)

    assert torch.equal(ours, official)
    for ours_grad, official_grad in zip(our_gradients, official_gradients):
        assert torch.equal(ours_grad, official_grad)
    # The batch does exercise the cases the argument rests on: windows whose maximum is tied
    # (flat background) and windows whose maximum is negative (ReLU blocks the gradient).
    conv_out = model.features[0](images).detach()
    windows = conv_out.unfold(2, 2, 2).unfold(3, 2, 2).reshape(*conv_out.shape[:2], 14, 14, 4)
    maxima = windows.amax(-1, keepdim=True)
    assert bool(((windows == maxima).sum(-1) > 1).any())
    assert bool((maxima < 0).any()) and bool((maxima > 0).any())


@pytest.mark.parametrize("name, num_classes, channels, size", [
    ("lenet", 10, 1, 28), ("lenet", 3, 1, 28), ("resnet18", 10, 3, 32), ("resnet34", 100, 3, 32)])
def test_networks_have_one_output_per_class(name, num_classes, channels, size):
    model = build_model(name, num_classes).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, num_classes)


def test_build_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown network"):
        build_model("vgg", 10)


def train_steps(kernels: str, steps: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = LeNet(10)
    optimizer = make_sgd(model.parameters(), lr=0.05, weight_decay=5e-4, kernels=kernels)
    images, labels = mnist_like_batch(32, 0), torch.arange(32) % 10
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return [parameter.detach() for parameter in model.parameters()]


def test_fused_and_plain_sgd_make_the_same_update():
    for fused, plain in zip(train_steps("fused", 20), train_steps("plain", 20)):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_make_sgd_settings():
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    fused = make_sgd(parameters, lr=0.1, weight_decay=1e-4)
    assert fused.defaults["fused"] and fused.defaults["momentum"] == 0.9
    assert fused.defaults["weight_decay"] == 1e-4 and fused.defaults["lr"] == 0.1
    assert not make_sgd(parameters, lr=0.1, weight_decay=0.0, kernels="plain").defaults["fused"]
    with pytest.raises(ValueError, match="unknown SGD kernels"):
        make_sgd(parameters, lr=0.1, weight_decay=0.0, kernels="adam")


def test_cifar_resnets_train_on_a_batch_of_one_and_small_imagenet_resnets_would_not():
    """A training set whose size is 1 modulo the batch size leaves a last batch of one: the CIFAR
    ResNets' last BatchNorm still sees 4x4 values per channel; a torchvision ResNet at 32 pixels sees
    one, which is why Clothing.py folds such a batch into the one before (batch_of_one_trains)."""
    from models.pretrained import batch_of_one_trains, build_classifier

    for name in ("resnet18", "resnet34"):
        model = build_model(name, 10).train()
        model(torch.randn(1, 3, 32, 32)).sum().backward()
    small = build_classifier("resnet18", 14, None).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        small(torch.randn(1, 3, 32, 32))
    small(torch.randn(1, 3, 40, 40))
    assert not batch_of_one_trains(32) and batch_of_one_trains(40) and batch_of_one_trains(256)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_coteaching_cnn_takes_mnist_and_cifar_images_and_drops_out_only_when_asked(size, channels):
    torch.manual_seed(0)
    images = torch.randn(4, channels, size, size)
    model = build_model("cnn9", 10, channels)  # as its authors ran it (PyTorch 0.3): no dropout at all
    assert torch.equal(model.train()(images), model.train()(images)) and model.eval()(images).shape == (4, 10)
    assert torch.equal(model.eval()(images), model.eval()(images))
    usual = build_model("cnn9", 10, channels, cnn9_dropout="train")
    assert not torch.equal(usual.train()(images), usual.train()(images))
    assert torch.equal(usual.eval()(images), usual.eval()(images))
    always = build_model("cnn9", 10, channels, cnn9_dropout="always").eval()
    assert not torch.equal(always(images), always(images))  # their code on today's PyTorch
    assert sum(p.numel() for p in model.parameters()) > 4_000_000  # 9 conv layers of 128-512 channels
