"""The device-resident input pipeline for MNIST, CIFAR and digits (docs/method.md, "Data").

Images live on the device as one uint8 tensor [N, C, H, W]. Each epoch draws one permutation
and, for CIFAR, one crop offset and one flip per example from a seeded `torch.Generator`; a
batch is then a single gather (crop and flip included), a conversion to float and a
normalisation, all on the device. No PIL, no DataLoader, no per-sample Python.

Random crop with zero padding 4 and horizontal flip follow torchvision's
RandomCrop(32, padding=4) + RandomHorizontalFlip(): the image is padded with zeros in pixel
space, the top-left corner is uniform over the 9×9 offsets, and the flip has probability 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

CROP_PADDING = 4


def batch_bounds(num_examples: int, batch_size: int, fold_single_last: bool = False) -> list[tuple[int, int]]:
    """(start, stop) of each batch of one pass, as a DataLoader without drop_last makes them.

    `fold_single_last`: a last batch of one example joins the batch before it. Training a network
    with BatchNorm on a batch of one fails ("Expected more than 1 value per channel"), which the
    official code would do whenever a training set size is 1 modulo the batch size; folding keeps
    every example in the epoch, once, and changes nothing else.
    """
    bounds = [(start, min(start + batch_size, num_examples)) for start in range(0, num_examples, batch_size)]
    if fold_single_last and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], num_examples)]
    return bounds


def images_to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Native-layout uint8 images ([N,H,W] or [N,H,W,C]) → uint8 [N,C,H,W] on `device`."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    return tensor.contiguous().to(device)


@dataclass(frozen=True)
class EpochDraws:
    """Everything random about one pass over a set: order, crop offsets and flips (on the device)."""

    order: torch.Tensor
    offsets: torch.Tensor | None  # [N, 2] (row, column) top-left corner in the padded image
    flips: torch.Tensor | None    # [N] bool


class DevicePipeline:
    """Turns device-resident uint8 images into normalised float batches, augmented on request."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], crop_and_flip: bool,
                 device: torch.device, channels_last: bool = False) -> None:
        self.device = device
        self.crop_and_flip = crop_and_flip
        self.channels_last = channels_last
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def draw_epoch(self, num_examples: int, generator: torch.Generator, shuffle: bool,
                   augment: bool) -> EpochDraws:
        """Draw one pass's randomness on the CPU generator (cheap, and its state is checkpointable)."""
        order = torch.randperm(num_examples, generator=generator) if shuffle else torch.arange(num_examples)
        offsets = flips = None
        if augment and self.crop_and_flip:
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (num_examples, 2), generator=generator)
            flips = torch.rand(num_examples, generator=generator) < 0.5
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        return EpochDraws(order.to(self.device), offsets, flips)

    def batches(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int,
                draws: EpochDraws, fold_single_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """Yield (normalised images, labels, positions in `images`) batch by batch (see batch_bounds)."""
        for start, stop in batch_bounds(len(draws.order), batch_size, fold_single_last):
            index = draws.order[start:stop]
            batch = images.index_select(0, index)  # ~8x faster than images[index] on the CPU
            if draws.offsets is not None:
                batch = crop_and_flip(batch, draws.offsets[start:stop], draws.flips[start:stop])
            yield self.normalise(batch), (labels.index_select(0, index) if labels is not None else None), index

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last:  # reorder the uint8 batch: a quarter of the bytes of the float one
            batch = batch.contiguous(memory_format=torch.channels_last)
        # as ToTensor + Normalize; float() and the in-place steps keep the memory format
        return batch.float().div_(255.0).sub_(self.mean).div_(self.std)


def crop_and_flip(batch: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  padding: int = CROP_PADDING) -> torch.Tensor:
    """Per-example crop of the zero-padded images at `offsets`, mirrored where `flips`.

    The padded batch is viewed (no copy) as every crop window at every offset; one indexing
    picks each example's window.
    """
    n, _, height, width = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # [n, C, 2p+1, 2p+1, H, W]
    examples = torch.arange(n, device=batch.device)
    crops = windows[examples, :, offsets[:, 0], offsets[:, 1]]  # [n, C, H, W]
    return torch.where(flips[:, None, None, None], crops.flip(3), crops)
