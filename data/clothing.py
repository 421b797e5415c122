"""Clothing1M images for training (docs/clothing1m.md): JPEG decoding in DataLoader workers, the rest on the device.

Workers only read, decode and resize each image to image_size × image_size uint8 (the fixed
`Resize((256, 256))` both official transforms start with). Batches travel as uint8; the random
crop (zero padding image_size // 8, i.e. 32 at 256 as officially) with horizontal flip, the
conversion to float and the ImageNet normalisation run per batch on the device.

All three splits live in one dataset, and the batches of each pass are planned by the caller,
so a single pool of persistent workers serves training, validation, test and extraction.
An unreadable image never raises inside a worker: the sample comes back marked as bad with
the reason, and the main process either stops with a DatasetError naming it or, with
--skip_bad_images, leaves it out (training: ignored by the loss; evaluation: not counted).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as TF

from data.clothing_index import check_splits_not_empty
from data.device_pipeline import DevicePipeline, batch_bounds, crop_and_flip
from utils.errors import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    """How a Clothing1M program turns its S×S images into network inputs: `crop` None is the official
    Clothing.py's (training: RandomCrop(S, padding=S//8) + flip; evaluation: the whole image), else
    PES_Clothing1M.py's with crops of `crop` × S (training: RandomCrop, no padding, + flip; evaluation:
    CenterCrop): theirs are 224 of 256."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: float | None = None


IMAGE_TRANSFORMS = {
    "official": ImageTransform(),
    "pes": ImageTransform((0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214), crop=224 / 256),  # PES_Clothing1M.py
}
IGNORED_LABEL = -1  # label of a skipped (unreadable) training image: the loss ignores it


# differs from the official code: decoded and resized with torchvision
def decode_rgb(path: str | Path) -> torch.Tensor:
    """Read and decode one image file as uint8 RGB [3, H, W] (grey and CMYK JPEGs are converted)."""
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec, with one warning per call;
        # they still work, and a million warnings would drown the log.
        warnings.simplefilter("ignore", DeprecationWarning)
        data = torchvision.io.read_file(str(path))
        return torchvision.io.decode_image(data, mode=ImageReadMode.RGB)


def unreadable_reason(path: str | Path) -> str | None:
    """None when the image decodes, else a one-line reason (used by Clothing1m-data.py --verify_images)."""
    try:
        image = decode_rgb(path)
    except (RuntimeError, OSError, ValueError) as error:
        return _describe_failure(path, error)
    if image.ndim != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        return f"decoded to an empty image of shape {tuple(image.shape)}"
    return None


def unreadable_in(root: str | Path, keys: list[str]) -> list[tuple[str, str]]:
    """(key, reason) for every key under `root` whose image does not decode (one worker task)."""
    found = []
    for key in keys:
        reason = unreadable_reason(Path(root) / key)
        if reason is not None:
            found.append((key, reason))
    return found


class ClothingSample(NamedTuple):
    image: torch.Tensor  # uint8 [3, S, S]; zeros when the file could not be read
    label: int
    position: int        # index in the dataset
    error: str           # "" when the image was read


class ClothingBatch(NamedTuple):
    images: torch.Tensor     # uint8 [B, 3, S, S]
    labels: torch.Tensor     # int64 [B]
    positions: torch.Tensor  # int64 [B]
    ok: torch.Tensor         # bool [B]: False where the image could not be read
    errors: tuple[str, ...]  # the reasons, one per bad image


class ClothingImages(Dataset):
    """Images under `root` named by relative `keys`, decoded and resized to a square uint8 tensor."""

    def __init__(self, root: str | Path, keys: np.ndarray, labels: np.ndarray, image_size: int) -> None:
        self.root = Path(root)
        # Fixed-width bytes: a million paths cost tens of MB, shared copy-on-write with forked workers.
        self.keys = np.char.encode(np.asarray(keys, dtype=str), "utf-8")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, position: int) -> Path:
        return self.root / self.keys[position].decode("utf-8")

    def __getitem__(self, position: int) -> ClothingSample:
        path = self.path(position)
        label = int(self.labels[position])
        try:
            image = decode_rgb(path)
            image = TF.resize(image, [self.image_size, self.image_size], antialias=True)
        except (RuntimeError, OSError, ValueError) as error:
            blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
            return ClothingSample(blank, label, position,
                                  f"cannot read image {path}: {_describe_failure(path, error)}")
        return ClothingSample(image, label, position, "")


def collate_uint8(samples: list[ClothingSample]) -> ClothingBatch:
    """Stack uint8 images (no float conversion on the CPU) and keep the bad-image reasons."""
    return ClothingBatch(
        images=torch.stack([s.image for s in samples]),
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        positions=torch.tensor([s.position for s in samples], dtype=torch.int64),
        ok=torch.tensor([not s.error for s in samples], dtype=torch.bool),
        errors=tuple(s.error for s in samples if s.error),
    )


@dataclass(frozen=True)
class ClothingSplits:
    """The dataset of all splits, and where each split sits in it."""

    dataset: ClothingImages
    train: np.ndarray  # positions of the noisy training list, in its (once shuffled) official order
    val: np.ndarray
    test: np.ndarray
    train_order: np.ndarray  # train_order[p]: the line of the index's training list at shuffled position p

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels


def build_splits(index: dict[str, np.ndarray], root: str | Path, image_size: int, seed: int) -> ClothingSplits:
    """One dataset of train + val + test, with the training list shuffled once (docs/method.md,
    "Me-Momentum on Clothing1M").

    The official code shuffles the list with numpy's global generator seeded with --seed, first
    draw; a private RandomState(seed).permutation gives the same order without global state.
    An empty split is refused (`check_splits_not_empty`): nothing could be trained, scored or reported.
    """
    check_splits_not_empty(index, "the Clothing1M index")
    order = np.random.RandomState(seed).permutation(len(index["train_labels"]))
    keys = np.concatenate([np.asarray(index["train_data"])[order], np.asarray(index["clean_val_data"]),
                           np.asarray(index["test_data"])])
    labels = np.concatenate([np.asarray(index["train_labels"], dtype=np.int64)[order],
                             np.asarray(index["clean_val_labels"], dtype=np.int64),
                             np.asarray(index["test_labels"], dtype=np.int64)])
    n_train, n_val = len(order), len(index["clean_val_labels"])
    positions = np.arange(len(labels), dtype=np.int64)
    return ClothingSplits(ClothingImages(root, keys, labels, image_size), positions[:n_train],
                          positions[n_train:n_train + n_val], positions[n_train + n_val:], order.astype(np.int64))


class PlannedBatches(Sampler[list[int]]):
    """A batch sampler whose batches are set before each pass (so persistent workers are reused)."""

    def __init__(self) -> None:
        self._batches: list[list[int]] = []

    def plan(self, positions: np.ndarray, batch_size: int, fold_single_last: bool = False) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        self._batches = [positions[start:stop].tolist()
                         for start, stop in batch_bounds(len(positions), batch_size, fold_single_last)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


class ClothingLoader:
    """One DataLoader over every split; `batches(positions, batch_size)` runs one planned pass."""

    def __init__(self, dataset: ClothingImages, num_workers: int, pin_memory: bool) -> None:
        self.plan = PlannedBatches()
        self.loader = DataLoader(dataset, batch_sampler=self.plan, num_workers=num_workers,
                                 collate_fn=collate_uint8, pin_memory=pin_memory,
                                 persistent_workers=num_workers > 0,
                                 # its own generator: iterating must not consume torch's global RNG
                                 generator=torch.Generator())

    def batches(self, positions: np.ndarray, batch_size: int, fold_single_last: bool = False
                ) -> Iterator[ClothingBatch]:
        """One pass in the order of `positions`; training folds a last batch of one (batch_bounds)."""
        self.plan.plan(positions, batch_size, fold_single_last)
        return iter(self.loader)


class DeviceBatchTransform:
    """uint8 batch → normalised float on the device; training adds a random crop and a flip (`transform`)."""

    def __init__(self, device: torch.device, image_size: int, channels_last: bool = False,
                 transform: ImageTransform = IMAGE_TRANSFORMS["official"]) -> None:
        self.device = device
        self.padding = image_size // 8
        self.image_size = image_size
        self.crop = None if transform.crop is None else round(transform.crop * image_size)
        self.pipeline = DevicePipeline(transform.mean, transform.std, crop_and_flip=False,
                                       device=device, channels_last=channels_last)

    def to_device(self, batch: ClothingBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return (batch.images.to(self.device, non_blocking=non_blocking),
                batch.labels.to(self.device, non_blocking=non_blocking),
                batch.ok.to(self.device, non_blocking=non_blocking))

    def train(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """RandomCrop(S, padding=S//8) (or RandomCrop(crop)) + RandomHorizontalFlip(), drawn per example
        from `generator`."""
        n = images.shape[0]
        positions = 2 * self.padding + 1 if self.crop is None else self.image_size - self.crop + 1
        offsets = torch.randint(0, positions, (n, 2), generator=generator).to(self.device)
        flips = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        if self.crop is None:
            return self.pipeline.normalise(crop_and_flip(images, offsets, flips, padding=self.padding))
        windows = images.unfold(2, self.crop, 1).unfold(3, self.crop, 1)  # [n, C, positions, positions, crop, crop]
        crops = windows[torch.arange(n, device=images.device), :, offsets[:, 0], offsets[:, 1]]
        return self.pipeline.normalise(torch.where(flips[:, None, None, None], crops.flip(3), crops))

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """The whole image (or CenterCrop(crop): torchvision's top-left corner, round((S − crop) / 2))."""
        if self.crop is None:
            return self.pipeline.normalise(images)
        start = int(round((self.image_size - self.crop) / 2.0))
        return self.pipeline.normalise(images[:, :, start:start + self.crop, start:start + self.crop])


def raise_or_count_bad(batch: ClothingBatch, skip_bad_images: bool) -> int:
    """Stop at the first unreadable image unless --skip_bad_images; returns how many were bad."""
    if batch.errors and not skip_bad_images:
        raise DatasetError(f"{batch.errors[0]}; fix or remove the file, or pass --skip_bad_images to "
                           f"leave unreadable images out (Clothing1m-data.py --verify_images lists them all)")
    return len(batch.errors)


def default_num_workers(local_world_size: int = 1, cap: int = 8) -> int:
    """Decoding workers per process: the CPUs this process may use, shared by the local ranks."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    # Leave one CPU per process for the training loop itself.
    return max(0, min(cap, cpus // max(1, local_world_size) - 1))


def _describe_failure(path: str | Path, error: BaseException) -> str:
    """A short reason: torchvision's messages start with C++ source locations, useless to a user."""
    if not Path(path).is_file():
        return "the file does not exist"
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return f"cannot decode it ({first[-200:]})"
