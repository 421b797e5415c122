"""The 9-layer CNN of Co-teaching's authors' code (Han et al., NeurIPS 2018; docs/method.md, "Co-teaching").

    3 x [conv 3x3 (pad 1) → BatchNorm → LeakyReLU(0.01)] 128 channels → max-pool 2 → dropout2d 0.25
    3 x [the same] 256 channels → max-pool 2 → dropout2d 0.25
    conv 3x3 (no pad) 512 → 256 → 128 channels, each BatchNorm → LeakyReLU → global average pool → linear

For 28x28 (MNIST) and 32x32 (CIFAR) images alike. Dropout, `dropout_mode`:
- "never" (default): as the authors ran it. Their code calls `F.dropout2d(h, p)` without `training=`,
  and in the PyTorch 0.3 it was written for that argument defaulted to False: dropout never ran.
- "train": the usual behaviour, dropout in training only.
- "always": their code on today's PyTorch, where `training` defaults to True: in evaluation too.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WIDTHS = ((128, 128, 128), (256, 256, 256))
HEAD = ((512, 256, 128))
LEAKY_SLOPE = 0.01


def conv_block(in_channels: int, out_channels: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding), nn.BatchNorm2d(out_channels),
                         nn.LeakyReLU(LEAKY_SLOPE))


DROPOUT_MODES = ("never", "train", "always")


class CNN9(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.25,
                 dropout_mode: str = "never") -> None:
        super().__init__()
        if dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"unknown dropout mode {dropout_mode!r}; choose one of {DROPOUT_MODES}")
        self.dropout, self.dropout_mode = dropout, dropout_mode
        stages, channels = [], in_channels
        for widths in WIDTHS:
            blocks = []
            for width in widths:
                blocks.append(conv_block(channels, width, padding=1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2 = stages
        head = []
        for width in HEAD:
            head.append(conv_block(channels, width, padding=0))
            channels = width
        self.head = nn.Sequential(*head)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        drop = self.dropout_mode == "always" or (self.dropout_mode == "train" and self.training)
        h = F.dropout2d(F.max_pool2d(self.stage1(images), 2), self.dropout, training=drop)
        h = F.dropout2d(F.max_pool2d(self.stage2(h), 2), self.dropout, training=drop)
        h = self.head(h)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
