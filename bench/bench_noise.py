"""Time label-noise generation for 60,000 MNIST-sized examples against naive per-example references.

Run from the repository root: ``python bench/bench_noise.py``. The references below follow the
official code's structure (one example at a time, docs/noise.md) and run in this process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.noise import (  # noqa: E402
    make_noisy_labels,
    pairflip_transition,
    symmetric_all_transition,
    symmetric_transition,
)

NUM_EXAMPLES, NUM_CLASSES, RATE, SEED = 60_000, 10, 0.45, 1


def naive_instance_labels(
    labels: np.ndarray, images: np.ndarray, rate: float, num_classes: int, seed: int
) -> np.ndarray:
    """Per-example loop in the official order: flip rates, W, then a product and a choice per example."""
    rng = np.random.RandomState(seed)
    flip_distribution = stats.truncnorm(-rate / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1)
    flip_rates = flip_distribution.rvs(len(labels), random_state=rng)
    weights = rng.randn(num_classes, images[0].size, num_classes).astype(np.float32)
    probs = []
    for x, y, q in zip(images, labels, flip_rates):
        logits = x.reshape(-1).astype(np.float32) @ weights[y]
        logits[y] = -np.inf
        p = np.exp(logits - logits.max())
        p = np.float32(q) * (p / p.sum())
        p[y] += np.float32(1 - q)
        probs.append(p)
    return np.array([rng.choice(num_classes, p=p) for p in probs])


def naive_transition_labels(labels: np.ndarray, transition: np.ndarray, seed: int) -> np.ndarray:
    """The official loop: one multinomial draw per example, label read back with np.where."""
    rng = np.random.RandomState(seed)
    return np.array([np.where(rng.multinomial(1, transition[y], 1)[0] == 1)[0][0] for y in labels])


def best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Smallest wall time over `repeats` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def report(name: str, ours: Callable[[], np.ndarray], naive: Callable[[], np.ndarray]) -> None:
    ours_s, ours_labels = best_time(ours, repeats=5)
    naive_s, naive_labels = best_time(naive, repeats=1)
    mismatches = int(np.sum(ours_labels != naive_labels))
    print(
        f"{name:<13} ours {ours_s * 1e3:8.1f} ms   naive {naive_s * 1e3:8.1f} ms   "
        f"speed-up {naive_s / ours_s:6.1f}x   labels differing {mismatches}"
    )


def main() -> None:
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(NUM_EXAMPLES, 28, 28)).astype(np.uint8)
    labels = rng.randint(0, NUM_CLASSES, size=NUM_EXAMPLES)
    print(f"{NUM_EXAMPLES} examples, 28x28 uint8, {NUM_CLASSES} classes, rate {RATE}, seed {SEED}")
    report(
        "instance",
        lambda: make_noisy_labels(labels, images, "instance", RATE, NUM_CLASSES, SEED).labels,
        lambda: naive_instance_labels(labels, images, RATE, NUM_CLASSES, SEED),
    )
    for name, transition in (
        ("symmetric", symmetric_transition(NUM_CLASSES, RATE)),
        ("pairflip", pairflip_transition(NUM_CLASSES, RATE)),
        ("symmetric_all", symmetric_all_transition(NUM_CLASSES, RATE)),
    ):
        report(
            name,
            lambda name=name: make_noisy_labels(labels, None, name, RATE, NUM_CLASSES, SEED).labels,
            lambda transition=transition: naive_transition_labels(labels, transition, SEED),
        )


if __name__ == "__main__":
    main()
