"""Tests for data/split.py: the official train/validation split, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.split import train_val_split
from utils.errors import UserError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official_noise"
CASES = sorted(p.stem for p in FIXTURES.glob("*-seed*.npz") if not p.stem.startswith("inputs"))


@pytest.mark.parametrize("name", CASES)
def test_matches_official_split(name):
    with np.load(FIXTURES / f"{name}.npz") as case:
        case = dict(case)
    train_index, val_index = train_val_split(len(case["noisy_labels"]), float(case["split_per"]), int(case["seed"]))
    np.testing.assert_array_equal(train_index, case["train_index"])
    np.testing.assert_array_equal(val_index, case["val_index"])


def test_partition_of_all_examples():
    train_index, val_index = train_val_split(1_001, 0.9, seed=3)
    assert len(train_index) == int(1_001 * 0.9)
    assert np.all(np.diff(val_index) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_index, val_index])), np.arange(1_001))


def test_full_fraction_leaves_validation_empty():
    train_index, val_index = train_val_split(50, 1.0, seed=1)
    assert sorted(train_index) == list(range(50))
    assert val_index.shape == (0,)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_bad_fraction_raises_user_error(fraction):
    with pytest.raises(UserError, match="train fraction"):
        train_val_split(100, fraction, seed=1)


def test_pure_and_leaves_global_rng_alone():
    np.random.seed(5)
    state_before = np.random.get_state()
    first = train_val_split(500, 0.9, seed=2)
    second = train_val_split(500, 0.9, seed=2)
    state_after = np.random.get_state()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(state_before[1], state_after[1])
    assert state_before[2:] == state_after[2:]
