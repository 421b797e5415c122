"""Write small datasets in MNIST's IDX and CIFAR's pickle formats, so tests read real formats (docs/data.md).

The files match what `data/vision.py` reads and what the official downloads contain: IDX with
big-endian headers (optionally gzipped, as torchvision ships MNIST), and CIFAR pickles of dicts
with bytes keys and `data` as uint8 [n, 3072] rows in channel-first order. Any number of
examples works, so tests can write a few dozen images instead of 60,000.
"""

from __future__ import annotations

import gzip as gzip_module
import pickle
from pathlib import Path

import numpy as np

MNIST_SHAPE = (28, 28)
CIFAR_SHAPE = (32, 32, 3)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VISION_SHAPES = {"mnist": (MNIST_SHAPE, 10), "cifar10": (CIFAR_SHAPE, 10), "cifar100": (CIFAR_SHAPE, 100)}
PICKLE_PROTOCOL = 2  # the original CIFAR files are Python 2 pickles; protocol 2 is the closest


def write_idx(path: str | Path, array: np.ndarray, gzip: bool) -> Path:
    """Write a uint8 array as an IDX file (magic 0x000008NN, big-endian dims); returns the path."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes unsigned bytes only, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip_module.compress(payload) if gzip else payload)
    return path


def write_mnist(
    root: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    gzip: bool = True,
) -> Path:
    """Write the four MNIST IDX files into `<root>/MNIST/raw/` (with `.gz` when gzip); returns that folder."""
    raw = Path(root) / "MNIST" / "raw"
    suffix = ".gz" if gzip else ""
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", train_images, gzip)
    write_idx(raw / f"train-labels-idx1-ubyte{suffix}", np.asarray(train_labels).astype(np.uint8), gzip)
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", test_images, gzip)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", np.asarray(test_labels).astype(np.uint8), gzip)
    return raw


def write_cifar(
    root: str | Path,
    name: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> Path:
    """Write CIFAR-10 (5 train batches, test_batch, batches.meta) or CIFAR-100 (train, test, meta).

    Images are [n, 32, 32, 3] uint8 (HWC); returns the dataset folder under `root`.
    """
    if name == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        # np.array_split gives 5 batches of any sizes; with fewer than 5 images some are empty, which
        # the reader refuses (tests of that refusal use exactly this)
        for i, part in enumerate(np.array_split(np.arange(len(train_images)), 5), start=1):
            batch = _cifar10_batch(train_images[part], np.asarray(train_labels)[part], f"training batch {i} of 5")
            _write_pickle(folder / f"data_batch_{i}", batch)
        _write_pickle(folder / "test_batch", _cifar10_batch(test_images, test_labels, "testing batch 1 of 1"))
        meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10000, b"num_vis": 3072}
        _write_pickle(folder / "batches.meta", meta)
    elif name == "cifar100":
        folder = Path(root) / "cifar-100-python"
        _write_pickle(folder / "train", _cifar100_batch(train_images, train_labels, "training batch 1 of 1"))
        _write_pickle(folder / "test", _cifar100_batch(test_images, test_labels, "testing batch 1 of 1"))
        meta = {
            b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
        }
        _write_pickle(folder / "meta", meta)
    else:
        raise ValueError(f"write_cifar: name must be 'cifar10' or 'cifar100', got {name!r}")
    return folder


def random_vision_arrays(
    name: str, n_train: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random (train_images, train_labels, test_images, test_labels) shaped like dataset `name`."""
    if name not in VISION_SHAPES:
        raise ValueError(f"random_vision_arrays: name must be one of {sorted(VISION_SHAPES)}, got {name!r}")
    shape, num_classes = VISION_SHAPES[name]
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        rng.integers(0, num_classes, size=n_train).astype(np.int64),
        rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        rng.integers(0, num_classes, size=n_test).astype(np.int64),
    )


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """[n, 32, 32, 3] HWC → [n, 3072] rows, channel-first as in the original files."""
    images = np.asarray(images, dtype=np.uint8)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3 * 32 * 32)


def _filenames(n: int) -> list[bytes]:
    return [f"generated_{i:06d}.png".encode() for i in range(n)]


def _cifar10_batch(images: np.ndarray, labels: np.ndarray, batch_label: str) -> dict:
    return {
        b"batch_label": batch_label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": _cifar_rows(images),
        b"filenames": _filenames(len(images)),
    }


def _cifar100_batch(images: np.ndarray, labels: np.ndarray, batch_label: str) -> dict:
    fine = [int(v) for v in labels]
    return {
        b"filenames": _filenames(len(images)),
        b"batch_label": batch_label.encode(),
        b"fine_labels": fine,
        b"coarse_labels": [v // 5 for v in fine],  # placeholder grouping, not CIFAR-100's real superclasses
        b"data": _cifar_rows(images),
    }


def _write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=PICKLE_PROTOCOL)
