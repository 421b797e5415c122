"""Tests for data/noisy_dataset.py: noise on every training label, the split, and the .npz export."""
from __future__ import annotations

import io

import numpy as np

from data.noise import symmetric_all_transition
from data.noisy_dataset import build_noisy_dataset, noisy_labels_npz
from data.split import train_val_split


def test_symmetric_all_is_exported_with_its_transition_matrix(tmp_path):
    dataset = build_noisy_dataset("digits", str(tmp_path), "symmetric_all", 0.4, seed=2, data_percent=0.9)
    np.testing.assert_array_equal(dataset.transition, symmetric_all_transition(10, 0.4))
    saved = np.load(io.BytesIO(noisy_labels_npz(dataset, "digits", "symmetric_all", 0.4, 2, 0.9)))
    np.testing.assert_array_equal(saved["transition_matrix"], symmetric_all_transition(10, 0.4))
    np.testing.assert_array_equal(saved["noisy_labels"], dataset.noisy_labels)
    assert str(saved["noise_type"]) == "symmetric_all"
    train_index, val_index = train_val_split(len(dataset.noisy_labels), 0.9, 2)
    np.testing.assert_array_equal(saved["train_index"], train_index)
    np.testing.assert_array_equal(saved["val_index"], val_index)
    # 1,438 labels: the realised rate is r (C - 1) / C = 0.36 within about 4 standard errors.
    assert abs(float(saved["actual_noise_rate"]) - 0.36) < 0.05
