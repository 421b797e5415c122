"""Tests for data/noisy_dataset.py: noise on every training label, the split, and the .npz export."""
from __future__ import annotations

import io

import numpy as np

from data.noise import symmetric_all_transition
from data.noisy_dataset import build_noisy_dataset, noisy_labels_npz, same_npz_arrays
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


def test_same_npz_arrays_compares_contents_not_zip_headers(tmp_path):
    def npz(**arrays) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    first = npz(a=np.arange(3), b=np.str_("x"))
    again = npz(b=np.str_("x"), a=np.arange(3))  # the same arrays, written in another order
    assert first != again and same_npz_arrays(first, again)
    assert not same_npz_arrays(first, npz(a=np.arange(4), b=np.str_("x")))
    assert not same_npz_arrays(first, npz(a=np.arange(3)))
    npy = io.BytesIO()
    np.save(npy, np.arange(3))
    for other in (npy.getvalue(), b"", b"text", npz(a=np.array([{}], dtype=object))):
        assert not same_npz_arrays(first, other) and not same_npz_arrays(other, first)
