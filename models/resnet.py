"""CIFAR-style ResNet-18/34 as in the official code (docs/method.md, "Data"), and as in PES's.

Differs from the ImageNet ResNet: a 3×3 stride-1 stem with **no padding** (32×32 → 30×30),
no max-pool, and BasicBlocks throughout. PES's authors' ResNets are the same with a padded stem
(32×32 stays 32×32), and can renew their last stages and classifier (`renew_last_layers`). Their
PreAct ResNet-18 (PES-semi's) is that network with pre-activation blocks: the stem keeps its
BatchNorm and ReLU, and nothing follows the last block but the pooling and the classifier.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BatchNorm and ReLU before each convolution; the shortcut (a bare 1×1 convolution where the shape
    changes) takes the activated input. Weights are drawn in their order: conv1, conv2, shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


STAGE_CHANNELS, STAGE_STRIDES = (64, 128, 256, 512), (1, 2, 2, 2)


def make_stage(channels_in: int, channels: int, blocks: int, stride: int,
               block: type[nn.Module] = BasicBlock) -> nn.Sequential:
    return nn.Sequential(*[block(channels_in if i == 0 else channels, channels, stride if i == 0 else 1)
                           for i in range(blocks)])


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: tuple[int, int, int, int], num_classes: int,
                 in_channels: int = 3, stem_padding: int = 0, block: type[nn.Module] = BasicBlock) -> None:
        super().__init__()
        self.blocks_per_stage, self.block = blocks_per_stage, block
        # padding=0 is the official stem: it shrinks 32×32 to 30×30 (kept for faithfulness); PES pads it.
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=stem_padding, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages = [make_stage(channels_in, channels, blocks, stride, block)
                  for channels_in, channels, blocks, stride
                  in zip((64, *STAGE_CHANNELS[:-1]), STAGE_CHANNELS, blocks_per_stage, STAGE_STRIDES)]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512, num_classes)

    def renew_last_layers(self, stages: int) -> list[str]:
        """PES's `renew_layers`: new (freshly initialised) last `stages` stages (at most 3: layer2 to
        layer4) and a new classifier, drawn from torch's generator in its order; returns the names of
        the modules renewed."""
        renewed = []
        for index in range(4 - min(stages, 3), 4):  # layer2 .. layer4, the last `stages` of them
            setattr(self, f"layer{index + 1}", make_stage(STAGE_CHANNELS[index - 1], STAGE_CHANNELS[index],
                                                          self.blocks_per_stage[index], STAGE_STRIDES[index],
                                                          self.block))
            renewed.append(f"layer{index + 1}")
        self.linear = nn.Linear(512, self.linear.out_features)
        return [*renewed, "linear"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels)


def pes_resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels, stem_padding=1)


def pes_resnet34(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels, stem_padding=1)


def preact_resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels, stem_padding=1, block=PreActBlock)
