"""Tests for data/noise.py: exact agreement with the official labels, statistics, validation, purity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.noise import (
    NOISE_TYPES,
    NoisyLabels,
    _legacy_choice_rows,
    flip_with_transition,
    instance_dependent_labels,
    make_noisy_labels,
    pairflip_transition,
    realised_noise_rate,
    symmetric_all_transition,
    symmetric_transition,
)
from data.split import train_val_split
from data.datasets import DATASETS, noise_types_for
from utils.errors import UserError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official_noise"
CASES = sorted(p.stem for p in FIXTURES.glob("*-seed*.npz") if not p.stem.startswith("inputs"))


def load_case(name: str) -> tuple[dict, dict]:
    """The official output for one case, and the inputs it was made from."""
    with np.load(FIXTURES / f"{name}.npz") as case:
        case = dict(case)
    with np.load(FIXTURES / str(case["inputs"])) as inputs:
        inputs = dict(inputs)
    return case, inputs


def random_mnist(num_examples: int, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images in MNIST layout and random labels."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(num_examples, 28, 28)).astype(np.uint8)
    return rng.randint(0, num_classes, size=num_examples), images


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean, noisy), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def test_fixture_cases_cover_every_type_rate_and_seed():
    assert len(CASES) == 36


@pytest.mark.parametrize("name", CASES)
def test_matches_official_labels(name):
    case, inputs = load_case(name)
    result = make_noisy_labels(
        inputs["clean_labels"],
        inputs["images"],
        str(case["noise_type"]),
        float(case["noise_rate"]),
        int(case["num_classes"]),
        int(case["seed"]),
    )
    expected = case["noisy_labels"]
    if str(case["noise_type"]) == "instance":
        # Float32 products summed in a CPU-dependent order (the BLAS picks its kernel by CPU) can
        # move a cdf boundary by ~3e-4 here: only labels whose uniform lies that close to one may
        # differ from the official ones (none does on the CPUs tried; tests/reference_code.py).
        unsure = instance_draws_near_a_boundary(case, inputs, tolerance=1e-3)
        assert unsure.sum() <= 0.02 * len(expected)
        np.testing.assert_array_equal(result.labels[~unsure], expected[~unsure])
    else:
        np.testing.assert_array_equal(result.labels, expected)
        assert result.actual_rate == realised_noise_rate(inputs["clean_labels"], expected)
    assert result.labels.dtype == np.int64


def instance_draws_near_a_boundary(case: dict, inputs: dict, tolerance: float) -> np.ndarray:
    """Examples whose uniform lies within `tolerance` of a boundary of their label cdf, computed in
    float64 (independent of summation order); the draws replayed in the official order
    (docs/noise.md; data/noise.py's instance_dependent_labels)."""
    from scipy import stats

    labels, images = inputs["clean_labels"].astype(np.int64), inputs["images"]
    rate, classes, n = float(case["noise_rate"]), int(case["num_classes"]), len(inputs["clean_labels"])
    rng = np.random.RandomState(int(case["seed"]))
    flip = stats.truncnorm(-rate / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1).rvs(n, random_state=rng)
    weights = rng.randn(classes, int(np.prod(images.shape[1:])), classes).astype(np.float32)
    uniforms = rng.random_sample(n)
    logits = np.einsum("nd,ndc->nc", images.reshape(n, -1).astype(np.float64), weights[labels].astype(np.float64))
    logits[np.arange(n), labels] = -np.inf
    spread = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = flip[:, None] * spread / spread.sum(axis=1, keepdims=True)
    probs[np.arange(n), labels] += 1 - flip
    cdf = np.cumsum(probs, axis=1)
    return np.abs(cdf / cdf[:, -1:] - uniforms[:, None]).min(axis=1) < tolerance


def test_transition_matrices():
    sym = symmetric_transition(4, 0.3)
    np.testing.assert_allclose(sym, np.full((4, 4), 0.1) + np.eye(4) * 0.6)
    pair = pairflip_transition(3, 0.2)
    np.testing.assert_allclose(pair, [[0.8, 0.2, 0.0], [0.0, 0.8, 0.2], [0.2, 0.0, 0.8]])
    np.testing.assert_allclose(pairflip_transition(2, 0.4), [[0.6, 0.4], [0.4, 0.6]])
    for matrix in (sym, pair):
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_symmetric_all_transition_by_hand():
    # C = 4, r = 0.5: r / C = 0.125 off the diagonal, 1 - r + r / C = 0.625 on it (exact in binary).
    expected = np.array([[0.625, 0.125, 0.125, 0.125],
                         [0.125, 0.625, 0.125, 0.125],
                         [0.125, 0.125, 0.625, 0.125],
                         [0.125, 0.125, 0.125, 0.625]])
    np.testing.assert_array_equal(symmetric_all_transition(4, 0.5), expected)
    np.testing.assert_array_equal(symmetric_all_transition(2, 0.5), [[0.75, 0.25], [0.25, 0.75]])
    np.testing.assert_array_equal(symmetric_all_transition(3, 0.0), np.eye(3))
    for num_classes, rate in ((4, 0.5), (10, 0.4), (100, 0.8), (2, 0.99)):
        np.testing.assert_allclose(symmetric_all_transition(num_classes, rate).sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_symmetric_all_realised_rate_is_r_times_c_minus_1_over_c():
    labels = np.random.RandomState(3).randint(0, 10, size=50_000)
    result = make_noisy_labels(labels, None, "symmetric_all", 0.4, 10, seed=5)
    np.testing.assert_array_equal(result.transition, symmetric_all_transition(10, 0.4))
    expected = 0.4 * 9 / 10  # 0.36, not 0.4
    standard_error = np.sqrt(expected * (1 - expected) / len(labels))  # about 0.002
    assert abs(result.actual_rate - expected) < 4 * standard_error
    assert result.actual_rate == realised_noise_rate(labels, result.labels)


def test_symmetric_all_draws_like_symmetric_from_its_own_matrix():
    labels = np.random.RandomState(1).randint(0, 10, size=2_000)
    result = make_noisy_labels(labels, None, "symmetric_all", 0.4, 10, seed=7)
    np.testing.assert_array_equal(result.labels,
                                  flip_with_transition(labels, symmetric_all_transition(10, 0.4), seed=7))
    again = make_noisy_labels(labels, None, "symmetric_all", 0.4, 10, seed=7)
    np.testing.assert_array_equal(result.labels, again.labels)


def test_symmetric_all_is_a_valid_noise_type_for_the_synthetic_datasets():
    for dataset in DATASETS:
        assert "symmetric_all" in noise_types_for(dataset)


@pytest.mark.parametrize("noise_type", ["symmetric", "pairflip", "symmetric_all"])
def test_empirical_transition_matches_matrix(noise_type):
    labels = np.random.RandomState(3).randint(0, 10, size=50_000)
    result = make_noisy_labels(labels, None, noise_type, 0.45, 10, seed=5)
    # About 5,000 examples a row: the standard error of an entry is at most 0.007.
    np.testing.assert_allclose(empirical_transition(labels, result.labels, 10), result.transition, atol=0.035)
    expected_rate = 0.45 * 9 / 10 if noise_type == "symmetric_all" else 0.45
    assert abs(result.actual_rate - expected_rate) < 0.01


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_instance_noise_rate_near_requested(rate):
    labels, images = random_mnist(50_000, seed=4)
    result = make_noisy_labels(labels, images, "instance", rate, 10, seed=1)
    assert result.transition is None
    # Flip rates are N(rate, 0.1) truncated to [0, 1]: the mean moves by under 0.01.
    assert abs(result.actual_rate - rate) < 0.02


def test_legacy_choice_rows_matches_randomstate_choice():
    rng = np.random.RandomState(0)
    probs = rng.dirichlet(np.full(7, 0.3), size=2_000).astype(np.float32)
    probs[::3, 2] = 0.0  # zero-probability categories must never be chosen
    probs /= probs.sum(axis=1, keepdims=True)
    stream = np.random.RandomState(9)
    expected = np.array([stream.choice(7, p=p) for p in probs])
    uniforms = np.random.RandomState(9).random_sample(len(probs))
    np.testing.assert_array_equal(_legacy_choice_rows(probs, uniforms), expected)


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_rate_zero_returns_clean_labels(noise_type):
    labels, images = random_mnist(200)
    result = make_noisy_labels(labels, images, noise_type, 0.0, 10, seed=1)
    np.testing.assert_array_equal(result.labels, labels)
    assert result.actual_rate == 0.0
    assert result.labels is not labels


@pytest.mark.parametrize(
    "noise_type, rate, num_classes, labels, message",
    [
        ("symmetric", -0.1, 10, [0, 1], "noise rate"),
        ("symmetric", 1.0, 10, [0, 1], "noise rate"),
        ("symmetric_all", 1.0, 10, [0, 1], "noise rate"),
        ("symmetric_all", -0.2, 10, [0, 1], "noise rate"),
        ("symmetric_all", float("nan"), 10, [0, 1], "noise rate"),
        ("symmetric_all", 0.2, 1, [0, 0], "at least 2 classes"),
        ("uniform", 0.2, 10, [0, 1], "symmetric, pairflip, instance"),
        ("symmetric", 0.2, 1, [0, 0], "at least 2 classes"),
        ("pairflip", 0.2, 1, [0, 0], "at least 2 classes"),
        ("pairflip", 0.2, 10, [0, 10], "labels must lie in"),
        ("instance", 0.2, 10, [-1, 3], "labels must lie in"),
    ],
)
def test_bad_inputs_raise_user_error(noise_type, rate, num_classes, labels, message):
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    with pytest.raises(UserError, match=message) as raised:
        make_noisy_labels(np.array(labels), images, noise_type, rate, num_classes, seed=1)
    assert "\n" not in str(raised.value)  # one line


def test_instance_noise_needs_one_image_per_label():
    labels, images = random_mnist(10)
    with pytest.raises(UserError, match="one image per label"):
        make_noisy_labels(labels, images[:5], "instance", 0.2, 10, seed=1)
    with pytest.raises(UserError, match="one image per label"):
        make_noisy_labels(labels, None, "instance", 0.2, 10, seed=1)


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_pure_and_leaves_global_rng_alone(noise_type):
    labels, images = random_mnist(500, seed=2)
    labels_before, images_before = labels.copy(), images.copy()
    np.random.seed(123)
    state_before = np.random.get_state()
    first = make_noisy_labels(labels, images, noise_type, 0.4, 10, seed=7)
    second = make_noisy_labels(labels, images, noise_type, 0.4, 10, seed=7)
    state_after = np.random.get_state()
    assert isinstance(first, NoisyLabels)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert state_before[0] == state_after[0] and state_before[2:] == state_after[2:]
    np.testing.assert_array_equal(state_before[1], state_after[1])
    np.testing.assert_array_equal(labels, labels_before)
    np.testing.assert_array_equal(images, images_before)


def test_different_seeds_give_different_labels():
    labels, images = random_mnist(500)
    for noise_type in NOISE_TYPES:
        a = make_noisy_labels(labels, images, noise_type, 0.4, 10, seed=1).labels
        b = make_noisy_labels(labels, images, noise_type, 0.4, 10, seed=2).labels
        assert not np.array_equal(a, b)


def test_low_level_generators_accept_plain_lists():
    transition = symmetric_transition(3, 0.5)
    assert flip_with_transition([0, 1, 2], transition, seed=1).shape == (3,)
    labels, images = random_mnist(20, num_classes=3)
    noisy = instance_dependent_labels(labels, images, 0.3, 3, seed=1)
    assert noisy.shape == (20,) and noisy.min() >= 0 and noisy.max() < 3


def test_realised_noise_rate():
    assert realised_noise_rate(np.array([0, 1, 2, 3]), np.array([0, 2, 2, 0])) == 0.5
    assert realised_noise_rate(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


PES_FIXTURES = FIXTURES.parent / "pes_noise"


@pytest.mark.parametrize("name", sorted(path.name for path in PES_FIXTURES.glob("*.npz")))
def test_symmetric_include_matches_the_pes_authors_labels_and_split(name):
    """PES's `dataset_split(..., include_noise=True)` (tests/fixtures/pes_noise/README.md), label for label."""
    with np.load(PES_FIXTURES / name) as case, np.load(FIXTURES / str(case["inputs"])) as inputs:
        clean, num_classes = inputs["clean_labels"], int(case["num_classes"])
        rate, seed, split = float(case["noise_rate"]), int(case["seed"]), float(case["split_per"])
        noisy = make_noisy_labels(clean, None, "symmetric_include", rate, num_classes, seed).labels
        train_index, val_index = train_val_split(len(clean), split, seed)
        np.testing.assert_array_equal(train_index, case["train_index"])
        np.testing.assert_array_equal(noisy[train_index], case["train_noisy_labels"])
        np.testing.assert_array_equal(noisy[val_index], case["val_noisy_labels"])
        np.testing.assert_array_equal(clean[train_index], case["train_clean_labels"])


def test_symmetric_include_is_not_symmetric_all_to_the_last_draw():
    """The two conventions' matrices differ in the last bits, and on the fixtures in some draws: which is
    why PES's noise is its own type."""
    differ = 0
    for path in sorted(PES_FIXTURES.glob("*.npz")):
        with np.load(path) as case, np.load(FIXTURES / str(case["inputs"])) as inputs:
            args = (inputs["clean_labels"], None)
            rest = (float(case["noise_rate"]), int(case["num_classes"]), int(case["seed"]))
            differ += not np.array_equal(make_noisy_labels(*args, "symmetric_include", *rest).labels,
                                         make_noisy_labels(*args, "symmetric_all", *rest).labels)
    assert differ > 0
