"""Tests for data/vision.py (readers) and tests/formats.py (writers): round trips, malformed files, real MNIST."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets

import data.vision as vision

from tests.data.permissions import deny_reading
from tests.formats import random_vision_arrays, write_cifar, write_idx, write_mnist
from data.datasets import DATASETS, load_vision_data
from data.vision import (
    VisionData,
    load_digits_data,
    read_cifar,
    read_idx,
    read_mnist,
)
from utils.errors import DatasetError, UserError

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def assert_same(data: VisionData, arrays: tuple, name: str, num_classes: int) -> None:
    train_images, train_labels, test_images, test_labels = arrays
    assert data.name == name and data.num_classes == num_classes
    for got, want in zip(
        (data.train_images, data.train_labels, data.test_images, data.test_labels),
        (train_images, train_labels, test_images, test_labels),
    ):
        np.testing.assert_array_equal(got, want)
    assert data.train_images.dtype == np.uint8 and data.test_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64


@contextmanager
def raises_naming(path: Path, match: str | None = None) -> Iterator[pytest.ExceptionInfo]:
    """Expect a DatasetError whose message matches `match` and names `path`."""
    with pytest.raises(DatasetError, match=match) as info:
        yield info
    assert str(path) in str(info.value), f"{path} not named in: {info.value}"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = random_vision_arrays("mnist", 37, 11, seed=0)
    raw = write_mnist(tmp_path, *arrays, gzip=gz)
    assert all(p.suffix == (".gz" if gz else "") for p in raw.iterdir())
    assert_same(read_mnist(tmp_path), arrays, "mnist", 10)
    assert_same(load_vision_data("mnist", tmp_path), arrays, "mnist", 10)


def test_idx_header_layout(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = write_idx(tmp_path / "x", images, gzip=False).read_bytes()
    assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28])
    assert raw[16:] == images.tobytes()
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), images)


def test_cifar10_round_trip(tmp_path: Path) -> None:
    arrays = random_vision_arrays("cifar10", 23, 7, seed=1)  # 23 → uneven batches of 5,5,5,4,4
    folder = write_cifar(tmp_path, "cifar10", *arrays)
    assert sorted(p.name for p in folder.iterdir()) == [
        "batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"
    ]
    assert_same(read_cifar(tmp_path, "cifar10", 10), arrays, "cifar10", 10)
    assert_same(load_vision_data("cifar10", tmp_path), arrays, "cifar10", 10)


def test_cifar10_empty_batch_is_refused(tmp_path: Path) -> None:
    # No real CIFAR-10 batch is empty: one that is means an incomplete or substituted copy.
    folder = write_cifar(tmp_path, "cifar10", *random_vision_arrays("cifar10", 3, 1, seed=2))
    with raises_naming(folder / "data_batch_4", "holds 0 examples"):  # batches 4 and 5 are empty
        read_cifar(tmp_path, "cifar10", 10)


def test_cifar100_round_trip(tmp_path: Path) -> None:
    arrays = random_vision_arrays("cifar100", 31, 9, seed=3)
    folder = write_cifar(tmp_path, "cifar100", *arrays)
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    assert_same(load_vision_data("cifar100", tmp_path), arrays, "cifar100", 100)


def test_cifar_rows_are_channel_first(tmp_path: Path) -> None:
    """Checked against a hand-made pickle, so a writer/reader bug cannot cancel itself out."""
    plane = np.arange(1024, dtype=np.uint8).reshape(32, 32)  # pixel (h, w) holds (32h + w) mod 256
    row = np.concatenate([plane.ravel(), plane.ravel() + 1, plane.ravel() + 2])
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        # str keys here (the writer uses bytes keys): the reader must accept both
        batch = {"data": row[None, :], "fine_labels": [42]}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    data = read_cifar(tmp_path, "cifar100", 100)
    assert data.train_images.shape == (1, 32, 32, 3) and data.train_images.flags.c_contiguous
    for channel in range(3):
        np.testing.assert_array_equal(data.train_images[0, :, :, channel], plane + channel)
    assert data.train_labels.tolist() == [42]


def test_random_vision_arrays_shapes() -> None:
    train_images, train_labels, test_images, test_labels = random_vision_arrays("cifar100", 5, 4, seed=0)
    assert train_images.shape == (5, 32, 32, 3) and test_images.shape == (4, 32, 32, 3)
    assert train_labels.dtype == np.int64 and train_labels.max() < 100
    again = random_vision_arrays("cifar100", 5, 4, seed=0)
    np.testing.assert_array_equal(again[0], train_images)


# --------------------------------------------------------------------------- malformed MNIST


def mnist_raw(tmp_path: Path, gz: bool = False) -> Path:
    return write_mnist(tmp_path, *random_vision_arrays("mnist", 6, 4, seed=0), gzip=gz)


def test_mnist_bad_magic(tmp_path: Path) -> None:
    raw = mnist_raw(tmp_path)
    target = raw / "train-images-idx3-ubyte"
    # a labels file where images belong: magic 0x00000801 instead of 0x00000803
    write_idx(target, np.zeros(6, dtype=np.uint8), gzip=False)
    with raises_naming(target, "magic"):
        read_mnist(tmp_path)
    target.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with raises_naming(target, "magic"):
        read_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated(tmp_path: Path, gz: bool) -> None:
    raw = mnist_raw(tmp_path, gz)
    target = raw / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    target.write_bytes(target.read_bytes()[:-10])
    with raises_naming(target, "truncated"):
        read_mnist(tmp_path)


def test_mnist_trailing_bytes(tmp_path: Path) -> None:
    target = mnist_raw(tmp_path) / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes() + b"\x00")
    with raises_naming(target, "trailing"):
        read_mnist(tmp_path)


def test_mnist_truncated_header(tmp_path: Path) -> None:
    target = mnist_raw(tmp_path) / "t10k-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:9])
    with raises_naming(target, "header"):
        read_mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    raw = mnist_raw(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8), gzip=False)
    with raises_naming(raw / "train-labels-idx1-ubyte", "6 images but .* 5 labels"):
        read_mnist(tmp_path)


def test_mnist_wrong_image_size(tmp_path: Path) -> None:
    raw = mnist_raw(tmp_path)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((4, 32, 32), dtype=np.uint8), gzip=False)
    with raises_naming(raw / "t10k-images-idx3-ubyte", "28x28"):
        read_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path: Path) -> None:
    raw = mnist_raw(tmp_path)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 10], dtype=np.uint8), gzip=False)
    with raises_naming(raw / "t10k-labels-idx1-ubyte", "0..9"):
        read_mnist(tmp_path)


def test_mnist_missing_file(tmp_path: Path) -> None:
    raw = mnist_raw(tmp_path, gz=True)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with raises_naming(raw / "t10k-labels-idx1-ubyte", "--download") as info:
        load_vision_data("mnist", tmp_path, download_if_reachable=False)
    assert "--data_path" in str(info.value) and "train-images" not in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "t10k"])
def test_mnist_zero_examples_refused_naming_the_file(tmp_path: Path, gz: bool, split: str) -> None:
    # A valid header whose count is 0: the whole split is empty. Refused when read, not met
    # later as an IndexError in the training loop.
    raw = mnist_raw(tmp_path, gz)
    suffix = ".gz" if gz else ""
    target = write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", np.zeros((0, 28, 28), dtype=np.uint8), gz)
    write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", np.zeros(0, dtype=np.uint8), gz)
    with raises_naming(target, "holds 0 examples") as info:
        load_vision_data("mnist", tmp_path, download_if_reachable=False)
    assert "needs at least one" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_directory_in_place_of_a_file(tmp_path: Path, gz: bool) -> None:
    raw = mnist_raw(tmp_path, gz)
    suffix = ".gz" if gz else ""
    (raw / f"train-labels-idx1-ubyte{suffix}").unlink()
    target = raw / f"train-labels-idx1-ubyte{suffix}"
    target.mkdir()
    with raises_naming(target, "is a directory, expected a file"):
        load_vision_data("mnist", tmp_path, download_if_reachable=False)
    with raises_naming(target, "is a directory, expected a file"):
        read_mnist(tmp_path)
    with raises_naming(target, "is a directory, expected a file"):
        read_idx(target)


def test_mnist_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = mnist_raw(tmp_path) / "t10k-images-idx3-ubyte"
    deny_reading(monkeypatch, target)
    with raises_naming(target, "permission denied"):
        load_vision_data("mnist", tmp_path, download_if_reachable=False)


# --------------------------------------------------------------------------- malformed CIFAR


def test_cifar_directory_in_place_of_a_batch(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path, "cifar100", *random_vision_arrays("cifar100", 4, 2, seed=0))
    target = folder / "test"
    target.unlink()
    target.mkdir()
    with raises_naming(target, "is a directory, expected a file"):
        load_vision_data("cifar100", tmp_path, download_if_reachable=False)
    with raises_naming(target, "is a directory, expected a file"):
        read_cifar(tmp_path, "cifar100", 100)


def test_cifar_unreadable_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = cifar10_folder(tmp_path) / "data_batch_2"
    deny_reading(monkeypatch, target)
    with raises_naming(target, "permission denied"):
        load_vision_data("cifar10", tmp_path, download_if_reachable=False)


@pytest.mark.parametrize("rows", [np.zeros((0, 3072), dtype=np.uint8), np.zeros(0, dtype=np.uint8)])
def test_cifar_batch_without_rows(tmp_path: Path, rows: np.ndarray) -> None:
    folder = write_cifar(tmp_path, "cifar100", *random_vision_arrays("cifar100", 4, 2, seed=0))
    target = folder / "test"
    with target.open("wb") as handle:
        pickle.dump({b"data": rows, b"fine_labels": [], b"coarse_labels": []}, handle, protocol=2)
    with raises_naming(target, "holds 0 examples"):
        load_vision_data("cifar100", tmp_path, download_if_reachable=False)


def cifar10_folder(tmp_path: Path) -> Path:
    return write_cifar(tmp_path, "cifar10", *random_vision_arrays("cifar10", 10, 3, seed=0))


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    target = cifar10_folder(tmp_path) / "data_batch_3"
    target.write_bytes(b"this is not a pickle at all")
    with raises_naming(target, "corrupt"):
        read_cifar(tmp_path, "cifar10", 10)


def test_cifar_truncated_pickle(tmp_path: Path) -> None:
    target = cifar10_folder(tmp_path) / "test_batch"
    target.write_bytes(target.read_bytes()[:200])
    with raises_naming(target, "truncated"):
        load_vision_data("cifar10", tmp_path)


def test_cifar_missing_key(tmp_path: Path) -> None:
    target = cifar10_folder(tmp_path) / "data_batch_1"
    batch = pickle.loads(target.read_bytes())
    del batch[b"labels"]
    target.write_bytes(pickle.dumps(batch))
    with raises_naming(target, "missing key"):
        read_cifar(tmp_path, "cifar10", 10)


def test_cifar100_needs_fine_labels(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path, "cifar100", *random_vision_arrays("cifar100", 4, 2, seed=0))
    batch = pickle.loads((folder / "train").read_bytes())
    batch[b"labels"] = batch.pop(b"fine_labels")  # a CIFAR-10-style batch in a CIFAR-100 folder
    (folder / "train").write_bytes(pickle.dumps(batch))
    with raises_naming(folder / "train", "fine_labels"):
        read_cifar(tmp_path, "cifar100", 100)


def test_cifar_data_length_not_multiple(tmp_path: Path) -> None:
    target = cifar10_folder(tmp_path) / "data_batch_2"
    batch = pickle.loads(target.read_bytes())
    batch[b"data"] = batch[b"data"].ravel()[:-1]
    target.write_bytes(pickle.dumps(batch))
    with raises_naming(target, "3072"):
        read_cifar(tmp_path, "cifar10", 10)


def test_cifar_label_count_mismatch(tmp_path: Path) -> None:
    target = cifar10_folder(tmp_path) / "data_batch_2"
    batch = pickle.loads(target.read_bytes())
    batch[b"labels"] = batch[b"labels"] + [0]
    target.write_bytes(pickle.dumps(batch))
    with raises_naming(target, "2 images but 3"):
        read_cifar(tmp_path, "cifar10", 10)


def test_cifar_missing_file(tmp_path: Path) -> None:
    folder = cifar10_folder(tmp_path)
    (folder / "data_batch_5").unlink()
    with raises_naming(folder / "data_batch_5", "--download"):
        load_vision_data("cifar10", tmp_path, download_if_reachable=False)


def test_missing_dataset_lists_every_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--data_path") as info:
        load_vision_data("cifar100", tmp_path, download_if_reachable=False)
    for name in ("train", "test"):
        assert str(tmp_path / "cifar-100-python" / name) in str(info.value)


# --------------------------------------------------------------------------- download path (no network)


def test_download_failure_is_a_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DatasetError, match="could not download mnist") as info:
        load_vision_data("mnist", tmp_path, download=True)
    assert "--data_path" in str(info.value) and "\n" not in str(info.value)


def test_download_then_read_with_own_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = random_vision_arrays("cifar10", 12, 4, seed=5)
    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_cifar(root, "cifar10", *arrays)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    assert_same(load_vision_data("cifar10", tmp_path, download=True), arrays, "cifar10", 10)
    assert calls and all(download for _, _, download in calls)
    calls.clear()
    load_vision_data("cifar10", tmp_path, download=True)  # present now: no second download
    assert calls == []


def test_missing_files_are_fetched_when_the_server_answers(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = random_vision_arrays("cifar10", 12, 4, seed=6)
    probed = []
    monkeypatch.setattr(vision, "server_reachable", lambda host: probed.append(host) or True)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10",
                        lambda root, train, download: write_cifar(root, "cifar10", *arrays))
    assert_same(load_vision_data("cifar10", tmp_path), arrays, "cifar10", 10)
    assert probed == ["www.cs.toronto.edu"]


def test_missing_files_without_network_say_the_server_is_unreachable(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision, "server_reachable", lambda host: False)
    with pytest.raises(DatasetError, match="unreachable"):
        load_vision_data("mnist", tmp_path)


def test_unknown_dataset_name() -> None:
    with pytest.raises(UserError, match="mnist, cifar10, cifar100, digits") as info:
        load_vision_data("svhn", ".")
    assert not isinstance(info.value, DatasetError)
    assert tuple(DATASETS) == ("mnist", "cifar10", "cifar100", "digits")


# --------------------------------------------------------------------------- real data


def test_real_mnist() -> None:
    if not (REAL_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found at {REAL_DATA / 'MNIST' / 'raw'}")
    data = load_vision_data("mnist", REAL_DATA)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert len(data.train_labels) == 60000 and len(data.test_labels) == 10000
    assert np.bincount(data.train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert data.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert abs(data.train_images.mean() / 255 - 0.1307) < 5e-4


def test_digits() -> None:
    from sklearn.datasets import load_digits

    data = load_digits_data()
    assert data.name == "digits" and data.num_classes == 10
    assert data.train_images.shape == (1438, 28, 28) and data.test_images.shape == (359, 28, 28)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    target = load_digits().target
    np.testing.assert_array_equal(data.test_labels, target[4::5])  # test = index % 5 == 4
    assert set(np.unique(data.train_labels)) == set(range(10)) == set(np.unique(data.test_labels))
    assert data.train_images.max() == 255
    border = np.ones((28, 28), dtype=bool)
    border[4:24, 4:24] = False
    assert not data.train_images[:, border].any()  # digits sit in a 20x20 box, like MNIST's
    again = load_digits_data()
    np.testing.assert_array_equal(again.train_images, data.train_images)
    np.testing.assert_array_equal(again.test_images, data.test_images)
    assert load_vision_data("digits", "/nonexistent").test_images.shape == (359, 28, 28)
