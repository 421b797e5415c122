"""Tests for data/cifarn.py: CIFAR-N labels on generated CIFAR files, refusals, and the real files if present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.cifarn import CIFARN_FILES, load_human_labels
from tests.data.permissions import deny_reading
from tests.formats import random_vision_arrays, write_cifar
from data.datasets import DATASETS
from data.vision import read_cifar
from utils.errors import DatasetError, UserError

REAL_CIFARN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar-10-100n"
N_TRAIN = 60
CIFAR10_KEYS = {"aggre": "aggre_label", "random1": "random_label1", "random2": "random_label2",
                "random3": "random_label3", "worst": "worse_label"}


def cifar_labels(tmp_path: Path, name: str) -> np.ndarray:
    """Write a small CIFAR in the real format and read its training labels back, as main.py does."""
    write_cifar(tmp_path / "data", name, *random_vision_arrays(name, N_TRAIN, 10, seed=3))
    return read_cifar(tmp_path / "data", name, DATASETS[name].num_classes).train_labels


def human_file(folder: Path, name: str, clean: np.ndarray, **overrides: object) -> dict:
    """A CIFAR-N style file: numpy int64 arrays pickled in torch's format, each noisy set distinct."""
    classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(7)
    keys = list(CIFAR10_KEYS.values()) if name == "cifar10" else ["noisy_label"]
    contents: dict = {"clean_label": clean.astype(np.int64)}
    for key in keys:
        contents[key] = rng.integers(0, classes, size=len(clean)).astype(np.int64)
    contents.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(contents, folder / CIFARN_FILES[name])
    return contents


@pytest.mark.parametrize("noise_type", list(CIFAR10_KEYS))
def test_cifar10_human_labels(tmp_path: Path, noise_type: str) -> None:
    clean = cifar_labels(tmp_path, "cifar10")
    contents = human_file(tmp_path / "cifarn", "cifar10", clean)
    labels = load_human_labels(tmp_path / "cifarn", "cifar10", noise_type, clean)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, contents[CIFAR10_KEYS[noise_type]])


def test_cifar100_human_labels_from_a_file_path(tmp_path: Path) -> None:
    clean = cifar_labels(tmp_path, "cifar100")
    contents = human_file(tmp_path / "cifarn", "cifar100", clean)
    labels = load_human_labels(tmp_path / "cifarn" / "CIFAR-100_human.pt", "cifar100", "noisy", clean)
    np.testing.assert_array_equal(labels, contents["noisy_label"])


def test_refuses_clean_labels_in_another_order(tmp_path: Path) -> None:
    clean = cifar_labels(tmp_path, "cifar10")
    shuffled = clean[np.random.default_rng(0).permutation(len(clean))]
    human_file(tmp_path / "cifarn", "cifar10", shuffled)
    differ = int(np.count_nonzero(shuffled != clean))
    with pytest.raises(DatasetError, match=f"at {differ} of {N_TRAIN} positions"):
        load_human_labels(tmp_path / "cifarn", "cifar10", "worst", clean)


def test_refuses_a_file_of_another_size(tmp_path: Path) -> None:
    clean = cifar_labels(tmp_path, "cifar10")
    human_file(tmp_path / "cifarn", "cifar10", clean[:-1])
    with pytest.raises(DatasetError, match=f"{N_TRAIN - 1} clean labels.*{N_TRAIN} examples"):
        load_human_labels(tmp_path / "cifarn", "cifar10", "aggre", clean)


def test_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found.*github.com/UCSC-REAL/cifar-10-100n"):
        load_human_labels(tmp_path, "cifar10", "aggre", np.zeros(3, dtype=np.int64))


def test_directory_in_place_of_the_label_file(tmp_path: Path) -> None:
    target = tmp_path / "cifarn" / "CIFAR-10_human.pt"
    target.mkdir(parents=True)
    for given in (tmp_path / "cifarn", target):  # the folder, or the file's path itself
        with pytest.raises(DatasetError, match="is a directory, expected a file") as info:
            load_human_labels(given, "cifar10", "aggre", np.zeros(3, dtype=np.int64))
        assert str(target) in str(info.value)


def test_unreadable_label_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = cifar_labels(tmp_path, "cifar10")
    human_file(tmp_path / "cifarn", "cifar10", clean)
    target = tmp_path / "cifarn" / "CIFAR-10_human.pt"
    deny_reading(monkeypatch, target)
    with pytest.raises(DatasetError, match="permission denied") as info:
        load_human_labels(tmp_path / "cifarn", "cifar10", "aggre", clean)
    assert str(target) in str(info.value)


@pytest.mark.parametrize("contents, message", [
    (b"not a torch file", "not a readable CIFAR-N label file"),
    ([1, 2, 3], "expected a dict"),
])
def test_malformed_files(tmp_path: Path, contents: object, message: str) -> None:
    path = tmp_path / "CIFAR-10_human.pt"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        torch.save(contents, path)
    with pytest.raises(DatasetError, match=message):
        load_human_labels(tmp_path, "cifar10", "aggre", np.zeros(3, dtype=np.int64))


def test_malformed_label_arrays(tmp_path: Path) -> None:
    clean = cifar_labels(tmp_path, "cifar10")
    human_file(tmp_path / "a", "cifar10", clean, worse_label=np.full(N_TRAIN, 10))
    with pytest.raises(DatasetError, match="outside 0..9"):
        load_human_labels(tmp_path / "a", "cifar10", "worst", clean)
    contents = human_file(tmp_path / "b", "cifar10", clean)
    del contents["aggre_label"]
    torch.save(contents, tmp_path / "b" / "CIFAR-10_human.pt")
    with pytest.raises(DatasetError, match="no 'aggre_label'"):
        load_human_labels(tmp_path / "b", "cifar10", "aggre", clean)
    human_file(tmp_path / "c", "cifar10", clean, random_label1=np.full(N_TRAIN, 0.5))
    with pytest.raises(DatasetError, match="1-D array of integer labels"):
        load_human_labels(tmp_path / "c", "cifar10", "random1", clean)
    human_file(tmp_path / "d", "cifar10", clean, random_label2=np.zeros(N_TRAIN - 2, dtype=np.int64))
    with pytest.raises(DatasetError, match="'random_label2' has 58 labels"):
        load_human_labels(tmp_path / "d", "cifar10", "random2", clean)


def test_unknown_dataset_or_noise_type(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar10 and cifar100 only"):
        load_human_labels(tmp_path, "mnist", "aggre", np.zeros(3))
    with pytest.raises(UserError, match="does not exist for cifar100; choose one of noisy"):
        load_human_labels(tmp_path, "cifar100", "worst", np.zeros(3))


# --------------------------------------------------------------------------- the real CIFAR-N files

REAL_RATES = {"cifar10": {"aggre": 9.01, "random1": 17.23, "random2": 18.12, "random3": 17.64, "worst": 40.21},
              "cifar100": {"noisy": 40.20}}


@pytest.mark.skipif(not REAL_CIFARN.is_dir(), reason=f"real CIFAR-N files not found at {REAL_CIFARN}")
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_real_cifarn_files(dataset: str) -> None:
    contents = torch.load(REAL_CIFARN / CIFARN_FILES[dataset], weights_only=False)
    clean = np.asarray(contents["clean_label"])
    assert clean.shape == (50000,)
    for noise_type, rate in REAL_RATES[dataset].items():
        # No CIFAR images here: the file's own clean labels stand in for the training labels.
        labels = load_human_labels(REAL_CIFARN, dataset, noise_type, clean)
        assert labels.shape == (50000,) and labels.dtype == np.int64
        assert round(100 * float(np.mean(labels != clean)), 2) == rate


def test_a_cifarn_run_prints_no_noise_rate_it_does_not_have(tmp_path: Path, capsys, monkeypatch) -> None:
    import main as main_module

    clean = cifar_labels(tmp_path, "cifar10")
    human_file(tmp_path / "cifarn", "cifar10", clean)
    monkeypatch.chdir(tmp_path)
    assert main_module.main(["--dataset", "cifar10", "--data_path", "data", "--noise_type", "worst",
                             "--cifarn_path", "cifarn", "--noise_only"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if "realised rate" in row)
    assert "worst noise: realised rate" in line and "0.2" not in line.split("noise")[1].split(":")[0]
