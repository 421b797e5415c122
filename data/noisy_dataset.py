"""The noisy training data of one run: the dataset read from disk, its noisy labels and the
official train/validation split (docs/method.md, "Data"; docs/noise.md), and their export for
other methods.

Noise is applied to every training example, then the split is drawn with the same seed;
validation labels stay noisy.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np

from data.datasets import is_human_noise, load_vision_data
from data.noise import make_noisy_labels, realised_noise_rate
from data.split import train_val_split
from data.vision import VisionData


@dataclass(frozen=True, eq=False)
class NoisyDataset:
    vision: VisionData
    noisy_labels: np.ndarray         # every training example, before the split
    transition: np.ndarray | None    # for symmetric, pairflip and symmetric_all noise
    actual_rate: float               # fraction of training labels that differ from the clean ones
    train_index: np.ndarray          # official order
    val_index: np.ndarray            # increasing

    @property
    def clean_labels(self) -> np.ndarray:
        return self.vision.train_labels


def build_noisy_dataset(dataset: str, data_path: str, noise_type: str, noise_rate: float, seed: int,
                        data_percent: float, download: bool = False,
                        cifarn_path: str = "./data/cifar-10-100n") -> NoisyDataset:
    """Read `dataset` from `data_path`, corrupt every training label, then draw the official split."""
    vision = load_vision_data(dataset, data_path, download)
    if is_human_noise(dataset, noise_type):
        from data.cifarn import load_human_labels  # only CIFAR-N runs need the label files
        noisy = load_human_labels(cifarn_path, dataset, noise_type, vision.train_labels)
        transition = None
    else:
        made = make_noisy_labels(vision.train_labels, vision.train_images, noise_type,
                                 noise_rate, vision.num_classes, seed)
        noisy, transition = made.labels, made.transition
    train_index, val_index = train_val_split(len(noisy), data_percent, seed)
    return NoisyDataset(vision, noisy, transition, realised_noise_rate(vision.train_labels, noisy),
                        train_index, val_index)


def noisy_labels_npz(dataset: NoisyDataset, dataset_name: str, noise_type: str, noise_rate: float,
                     seed: int, data_percent: float) -> bytes:
    """The noisy labels, clean labels, split and transition matrix as the bytes of one .npz file."""
    arrays = {
        "noisy_labels": dataset.noisy_labels.astype(np.int64),
        "clean_labels": dataset.clean_labels.astype(np.int64),
        "train_index": dataset.train_index.astype(np.int64),
        "val_index": dataset.val_index.astype(np.int64),
        "actual_noise_rate": np.float64(dataset.actual_rate),
        "dataset": np.str_(dataset_name), "noise_type": np.str_(noise_type),
        "noise_rate": np.float64(noise_rate), "seed": np.int64(seed),
        "data_percent": np.float64(data_percent),
        "num_classes": np.int64(dataset.vision.num_classes),
    }
    if dataset.transition is not None:
        arrays["transition_matrix"] = dataset.transition
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def same_npz_arrays(first: bytes, second: bytes) -> bool:
    """Whether two .npz files hold the same arrays under the same names, whatever their bytes (the
    order of the arrays, the numpy release that wrote them). Anything that is not an .npz compares
    unequal."""
    try:
        a, b = np.load(io.BytesIO(first)), np.load(io.BytesIO(second))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
    if not isinstance(a, np.lib.npyio.NpzFile) or not isinstance(b, np.lib.npyio.NpzFile):
        return False  # a plain .npy array
    try:
        with a, b:
            return sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
