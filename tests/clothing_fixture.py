"""A tiny Clothing1M in the real layout, for tests: small JPEGs under images/a/b/N.jpg + the five annotation files.

Each class has its own colour (plus noise), so a network can learn something in one epoch.
The training list contains one key that has no label in noisy_label_kv.txt, and one labelled
key whose image file does not exist: the two official-data problems the tools must report.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 14


@dataclass
class TinyClothing:
    root: Path
    train_keys: list[str]
    train_labels: list[int]  # noisy
    val_keys: list[str]
    val_labels: list[int]
    test_keys: list[str]
    test_labels: list[int]
    unlabelled_key: str
    missing_image_key: str
    clean_train_labels: list[int] = field(default_factory=list)


def class_colour(label: int) -> np.ndarray:
    red, green, blue = colorsys.hsv_to_rgb(label / NUM_CLASSES, 0.9, 0.9)
    return np.array([red, green, blue]) * 255


def write_image(path: Path, label: int, size: int, rng: np.random.RandomState) -> None:
    pixels = class_colour(label)[None, None, :] + rng.normal(0, 20, (size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_tiny_clothing1m(root: str | Path, train_per_class: int = 4, val_per_class: int = 2,
                         test_per_class: int = 2, image_size: int = 24, noise_rate: float = 0.25,
                         seed: int = 0) -> TinyClothing:
    """Write the tiny dataset under `root` and describe it."""
    root = Path(root)
    rng = np.random.RandomState(seed)
    counter = iter(range(10**6))

    def new_key() -> str:
        number = next(counter)
        return f"images/{number % 3}/{number % 7}/{number}.jpg"

    def make_split(per_class: int) -> tuple[list[str], list[int]]:
        keys, labels = [], []
        for label in range(NUM_CLASSES):
            # the last class gets a single example: classes of very different sizes, like Clothing1M
            for _ in range(1 if label == NUM_CLASSES - 1 else per_class):
                key = new_key()
                write_image(root / key, label, image_size, rng)
                keys.append(key)
                labels.append(label)
        return keys, labels

    train_keys, clean_train = make_split(train_per_class)
    flip = rng.rand(len(clean_train)) < noise_rate
    offsets = rng.randint(1, NUM_CLASSES, len(clean_train))
    noisy_train = [int((y + o) % NUM_CLASSES) if f else y for y, f, o in zip(clean_train, flip, offsets)]
    val_keys, val_labels = make_split(val_per_class)
    test_keys, test_labels = make_split(test_per_class)

    unlabelled_key = new_key()
    write_image(root / unlabelled_key, 0, image_size, rng)
    missing_image_key = new_key()  # labelled, listed, but never written
    train_keys_listed = train_keys[:5] + [unlabelled_key] + train_keys[5:] + [missing_image_key]
    noisy_kv = list(zip(train_keys, noisy_train)) + [(missing_image_key, 3)]

    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    write_lines(annotations / "noisy_train_key_list.txt", train_keys_listed)
    write_lines(annotations / "clean_val_key_list.txt", val_keys)
    write_lines(annotations / "clean_test_key_list.txt", test_keys)
    write_lines(annotations / "noisy_label_kv.txt", [f"{k} {v}" for k, v in noisy_kv])
    write_lines(annotations / "clean_label_kv.txt",
                [f"{k} {v}" for k, v in zip(val_keys + test_keys, val_labels + test_labels)])
    return TinyClothing(root, train_keys + [missing_image_key], noisy_train + [3], val_keys, val_labels,
                        test_keys, test_labels, unlabelled_key, missing_image_key, clean_train + [3])


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def tiny_with_index(folder: Path) -> TinyClothing:
    """The tiny set under `folder` with its index built (unlabelled key dropped; the missing image
    stays listed), as Clothing1m-data.py would build it."""
    from data.clothing_index import INDEX_FILE_NAME, build_index, index_to_bytes, read_all_splits

    data = make_tiny_clothing1m(folder / "Clothing1M")
    (data.root / INDEX_FILE_NAME).write_bytes(index_to_bytes(build_index(read_all_splits(data.root, drop_unlabelled=True))))
    return data
