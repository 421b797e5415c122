"""Synthetic label noise: symmetric, pair-flip and instance-dependent (docs/noise.md).

Also ``symmetric_all``, the other convention peers call "symmetric r" (DivideMix and its
followers): with probability r the label is replaced by a class drawn from all C classes, so it
may stay the same and the realised rate is r (C - 1) / C. It uses the same sequential draws as
``symmetric``, only its transition matrix differs. (DivideMix picks exactly floor(r N) examples to
replace; here each label is replaced with probability r: same matrix, same expected rate.)

Every generator is a pure function of its inputs and a seed. The official code seeds numpy's
global generator; a private ``np.random.RandomState(seed)`` yields the same stream, so we
reproduce the official labels bit for bit without touching global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from utils.errors import UserError

# Instance noise: per-example flip rates are drawn from N(rate, 0.1^2) truncated to [0, 1]
# (Xia et al. 2020, as in the official code; docs/noise.md).
INSTANCE_FLIP_RATE_STD = 0.1


@dataclass(frozen=True)
class NoisyLabels:
    """Noisy labels with the transition matrix that made them (None for instance noise)."""

    labels: np.ndarray
    transition: np.ndarray | None
    actual_rate: float


def symmetric_transition(num_classes: int, rate: float) -> np.ndarray:
    """Row-stochastic T with 1 - rate on the diagonal and rate / (C - 1) elsewhere."""
    transition = np.full((num_classes, num_classes), rate / (num_classes - 1))
    np.fill_diagonal(transition, 1.0 - rate)
    return transition


def symmetric_all_transition(num_classes: int, rate: float) -> np.ndarray:
    """Row-stochastic T with 1 - rate + rate / C on the diagonal and rate / C elsewhere.

    DivideMix's "symmetric" noise: with probability rate, a class drawn uniformly from all C
    classes (the true one included), so only rate (C - 1) / C of the labels actually change.
    """
    transition = np.full((num_classes, num_classes), rate / num_classes)
    np.fill_diagonal(transition, 1.0 - rate + rate / num_classes)
    return transition


def symmetric_include_transition(num_classes: int, rate: float) -> np.ndarray:
    """PES's symmetric noise (`include_noise`, as PES-semi draws it): `symmetric_transition` at the rate
    scaled by 1 - 1/C, computed in that order. The same matrix as `symmetric_all` up to the last bits,
    which decide a few draws (tests/data/test_noise.py), so the authors' arithmetic is kept."""
    return symmetric_transition(num_classes, rate * (1 - 1 / num_classes))


def pairflip_transition(num_classes: int, rate: float) -> np.ndarray:
    """Row-stochastic T with 1 - rate on the diagonal and rate at (i, (i + 1) mod C)."""
    transition = np.eye(num_classes) * (1.0 - rate)
    rows = np.arange(num_classes)
    transition[rows, (rows + 1) % num_classes] += rate
    return transition


@dataclass(frozen=True)
class NoiseType:
    """A synthetic noise model (docs/noise.md): drawn row by row from a transition matrix, or, without
    one, instance-dependent."""

    name: str
    title: str   # how tables name it: "CIFAR-10 Sym-20%"
    transition: Callable[[int, float], np.ndarray] | None = None


NOISE_TYPES: dict[str, NoiseType] = {noise.name: noise for noise in (
    NoiseType("symmetric", "Sym", symmetric_transition),
    NoiseType("pairflip", "Pair", pairflip_transition),
    NoiseType("instance", "IDN"),
    NoiseType("symmetric_all", "Sym-all", symmetric_all_transition),
    NoiseType("symmetric_include", "Sym-incl", symmetric_include_transition),
)}


def flip_with_transition(clean_labels: np.ndarray, transition: np.ndarray, seed: int) -> np.ndarray:
    """Draw each noisy label from row T[y_i], replaying the official sequence of draws exactly.

    A per-example loop on purpose (docs/noise.md): legacy ``multinomial`` consumes a
    data-dependent number of uniforms (one binomial per category tried, stopping at the first
    hit), so example i's draws start where example i-1's stopped and cannot be batched exactly.
    """
    rng = np.random.RandomState(seed)
    noisy = np.empty(len(clean_labels), dtype=np.int64)
    for i, label in enumerate(np.asarray(clean_labels, dtype=np.int64)):
        noisy[i] = rng.multinomial(1, transition[label]).argmax()
    return noisy


def _instance_flip_probabilities(
    clean_labels: np.ndarray, images: np.ndarray, flip_rates: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Per-example label distribution p_i = q_i * softmax(x_i W[y_i], a[y_i] = -inf) + (1 - q_i) e_{y_i}.

    Computed in float32 like the official (torch, float32) code, grouped by clean label so each
    class is one matrix product X_c @ W[c] instead of N vector-matrix products. The products can
    differ from torch's in the last bits (summation order; torch itself varies with backend and
    device), which moves a label only if its uniform lands within ~1e-3 of a cdf boundary:
    measured, 0.6 to 3 labels per million, none in the official fixtures.
    """
    num_examples, num_classes = len(clean_labels), weights.shape[0]
    features = images.reshape(num_examples, -1)
    logits = np.empty((num_examples, num_classes), dtype=np.float32)
    for c in np.unique(clean_labels):
        members = np.flatnonzero(clean_labels == c)
        logits[members] = features[members].astype(np.float32) @ weights[c]
    rows = np.arange(num_examples)
    logits[rows, clean_labels] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    # torch multiplies a float32 tensor by a float64 scalar in float32; the diagonal receives
    # float32(1 - q) (the softmax is exactly 0 there).
    probs = flip_rates.astype(np.float32)[:, None] * logits
    probs[rows, clean_labels] += (1.0 - flip_rates).astype(np.float32)
    return probs


def _legacy_choice_rows(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Vectorised ``RandomState.choice(C, p=probs[i])`` given the uniform each call draws.

    Legacy choice with p does: cdf = cumsum(float64(p)); cdf /= cdf[-1];
    searchsorted(cdf, u, side='right'). On a sorted cdf that index is the count of entries <= u.
    """
    cdf = np.cumsum(probs.astype(np.float64), axis=1)
    cdf /= cdf[:, -1:]
    return (cdf <= uniforms[:, None]).sum(axis=1).astype(np.int64)


def instance_dependent_labels(
    clean_labels: np.ndarray, images: np.ndarray, rate: float, num_classes: int, seed: int
) -> np.ndarray:
    """Instance-dependent noise of Xia et al. (2020), replaying the official draws exactly.

    Draw order on one stream seeded with ``seed``, as in the official code (docs/noise.md): N
    truncated-normal flip rates, then W = randn(C, D, C), then one uniform per example for its new
    label.
    ``images`` are in native layout (MNIST [N, 28, 28], CIFAR [N, 32, 32, 3]), raw 0-255.
    """
    clean_labels = np.asarray(clean_labels, dtype=np.int64)
    images = np.asarray(images)
    num_examples = len(clean_labels)
    num_features = int(np.prod(images.shape[1:]))
    from scipy import stats  # lazy: scipy.stats takes ~0.8 s to import and only instance noise needs it

    rng = np.random.RandomState(seed)
    low, high = (0.0 - rate) / INSTANCE_FLIP_RATE_STD, (1.0 - rate) / INSTANCE_FLIP_RATE_STD
    flip_rates = stats.truncnorm(low, high, loc=rate, scale=INSTANCE_FLIP_RATE_STD).rvs(
        num_examples, random_state=rng
    )
    weights = rng.randn(num_classes, num_features, num_classes).astype(np.float32)
    probs = _instance_flip_probabilities(clean_labels, images, flip_rates, weights)
    return _legacy_choice_rows(probs, rng.random_sample(num_examples))


def realised_noise_rate(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Fraction of examples whose noisy label differs from the clean one."""
    if len(clean) == 0:
        return 0.0
    return float(np.mean(np.asarray(clean) != np.asarray(noisy)))


def _validate(
    clean_labels: np.ndarray, images: np.ndarray | None, noise_type: str, noise_rate: float, num_classes: int
) -> None:
    """Raise UserError, in one line, for any input the generators cannot honour."""
    if noise_type not in NOISE_TYPES:
        raise UserError(f"unknown noise type {noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
    if not 0.0 <= noise_rate < 1.0:
        raise UserError(f"noise rate must be in [0, 1), got {noise_rate}")
    if num_classes < 2:
        raise UserError(f"{noise_type} noise needs at least 2 classes, got num_classes={num_classes}")
    if clean_labels.ndim != 1:
        raise UserError(f"clean labels must be a 1-D array, got shape {clean_labels.shape}")
    if len(clean_labels) and (clean_labels.min() < 0 or clean_labels.max() >= num_classes):
        raise UserError(
            f"labels must lie in [0, {num_classes}), "
            f"found values from {clean_labels.min()} to {clean_labels.max()}"
        )
    if noise_type == "instance" and (images is None or len(images) != len(clean_labels)):
        found = "no images" if images is None else f"{len(images)} images"
        raise UserError(f"instance noise needs one image per label: {len(clean_labels)} labels, {found}")


def make_noisy_labels(
    clean_labels: np.ndarray,
    images: np.ndarray | None,
    noise_type: str,
    noise_rate: float,
    num_classes: int,
    seed: int,
) -> NoisyLabels:
    """Corrupt all training labels as the official code does for (noise_type, noise_rate, seed).

    Rate 0 returns the clean labels (the official code crashes there; docs/method.md, "Where we differ
    from the official code").
    """
    clean_labels = np.asarray(clean_labels)
    _validate(clean_labels, images, noise_type, noise_rate, num_classes)
    clean_labels = clean_labels.astype(np.int64)
    make_transition = NOISE_TYPES[noise_type].transition
    transition = None if make_transition is None else make_transition(num_classes, noise_rate)
    # differs from the official code: rate 0 means clean labels
    if noise_rate == 0.0:
        labels = clean_labels.copy()
    elif transition is not None:
        labels = flip_with_transition(clean_labels, transition, seed)
    else:
        labels = instance_dependent_labels(clean_labels, np.asarray(images), noise_rate, num_classes, seed)
    return NoisyLabels(labels, transition, realised_noise_rate(clean_labels, labels))
