"""Train / validation split of the noisy training set, drawn as the official code does (docs/noise.md)."""

from __future__ import annotations

import numpy as np

from utils.errors import UserError


def train_val_split(num_examples: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices in the official draw order, validation indices in increasing order).

    The official code seeds numpy's global generator and calls
    ``choice(N, int(N * train_fraction), replace=False)``; a private RandomState replays that
    stream without touching global state. With train_fraction == 1 the validation set is empty.
    """
    if not 0.0 < train_fraction <= 1.0:
        raise UserError(f"train fraction must be in (0, 1], got {train_fraction}")
    if num_examples < 0:
        raise UserError(f"number of examples must be non-negative, got {num_examples}")
    rng = np.random.RandomState(seed)
    train_index = rng.choice(num_examples, int(num_examples * train_fraction), replace=False)
    in_train = np.zeros(num_examples, dtype=bool)
    in_train[train_index] = True
    return train_index.astype(np.int64), np.flatnonzero(~in_train).astype(np.int64)
