"""The 9-layer CNN of Co-teaching's authors' code (Han et al., NeurIPS 2018; docs/method.md, "Co-teaching").

    3 x [conv 3x3 (pad 1) → BatchNorm → LeakyReLU(0.01)] 128 channels → max-pool 2 → dropout2d 0.25
    3 x [the same] 256 channels → max-pool 2 → dropout2d 0.25
    conv 3x3 (no pad) 512 → 256 → 128 channels, each BatchNorm → LeakyReLU → global average pool → linear

For 28x28 (MNIST) and 32x32 (CIFAR) images alike. As in the authors' code, dropout is applied in
evaluation too (their functional dropout2d is always in training mode); `dropout_in_eval=False`
gives the usual behaviour.
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


class CNN9(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.25,
                 dropout_in_eval: bool = True) -> None:
        super().__init__()
        self.dropout, self.dropout_in_eval = dropout, dropout_in_eval
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
        drop = self.training or self.dropout_in_eval
        h = F.dropout2d(F.max_pool2d(self.stage1(images), 2), self.dropout, training=drop)
        h = F.dropout2d(F.max_pool2d(self.stage2(h), 2), self.dropout, training=drop)
        h = self.head(h)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
