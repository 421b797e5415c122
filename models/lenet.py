"""LeNet for 28×28 grey images (METHOD.md §1), with as many outputs as the dataset has classes."""
from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """conv 1→6 (5×5, pad 2) → pool → conv 6→16 (5×5) → pool → fc 400→120→84→classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),
        )
        # The official LeNet always has 10 outputs; ours follows the dataset (METHOD.md §5).
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))
