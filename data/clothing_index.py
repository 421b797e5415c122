"""The Clothing1M index: official annotation files in, the `Clothing1m-data.npy` dict out
(docs/clothing1m.md, "Build the index").

Pure functions over text and arrays; `Clothing1m-data.py` is the thin script around them.
Unlike the official builder, a key without a label is never dropped silently (that misaligns
every later label; docs/method.md, "Where we differ from the official code"): it is reported, and either
stops the build or is dropped together with its label.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from data.files import open_binary, refuse_directory
from utils.errors import DatasetError, UserError

ANNOTATIONS = "annotations"
INDEX_FILE_NAME = "Clothing1m-data.npy"
NUM_CLASSES = 14
CLASS_NAMES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
               "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear")

# split name in the index dict -> (key list file, label file, key of the paths, key of the labels)
SPLITS: dict[str, tuple[str, str, str, str]] = {
    "train": ("noisy_train_key_list.txt", "noisy_label_kv.txt", "train_data", "train_labels"),
    "val": ("clean_val_key_list.txt", "clean_label_kv.txt", "clean_val_data", "clean_val_labels"),
    "test": ("clean_test_key_list.txt", "clean_label_kv.txt", "test_data", "test_labels"),
}
INDEX_KEYS = tuple(key for _, _, data, labels in SPLITS.values() for key in (data, labels))
# What each split is for: an empty one cannot do it (docs/method.md, "Me-Momentum on Clothing1M").
SPLIT_PURPOSES = {"train": "to train on", "val": "to score and select checkpoints",
                  "test": "to report the test accuracy"}
REBUILD = "rebuild it with Clothing1m-data.py"


@dataclass
class SplitIndex:
    """One split: image keys (paths relative to the data root), their labels, and what was wrong."""

    keys: np.ndarray
    labels: np.ndarray
    unlabelled: list[str] = field(default_factory=list)


def parse_key_list(lines: Iterable[str], source: str) -> list[str]:
    """One relative image path a line; blank lines are ignored, anything else is an error (a path
    that leaves the data root, a path listed twice)."""
    keys, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise DatasetError(f"{source}, line {number}: expected one image path, got {text!r}")
        check_inside_root(text, f"{source}, line {number}")
        if text in first_line:
            raise DatasetError(f"{source}, line {number}: {text} is listed a second time (first on line "
                               f"{first_line[text]}); remove one of them")
        first_line[text] = number
        keys.append(text)
    return keys


def check_inside_root(key: str, where: str) -> None:
    """An image path must lie below the data root: relative, without '..'."""
    if ".." not in key and ":" not in key and not key.startswith(("/", "\\")):
        return  # the common case, decided without building a Path (index files hold a million lines)
    path = Path(key)
    if path.is_absolute() or key.startswith(("/", "\\")) or ".." in path.parts:
        raise DatasetError(f"{where}: the image path {key} leaves the data root; paths must be relative to "
                           f"it, like images/0/00/123.jpg")


def parse_label(value: str, where: str) -> int:
    """A label written as plain ASCII digits ('3', '03'); other digit forms ('٣', '+3', '3_0', '3.0')
    are refused rather than read as something the writer may not have meant."""
    if not (value.isascii() and value.isdigit()):
        raise DatasetError(f"{where}: label {value!r} is not a whole number written with the digits 0-9")
    return int(value)


def parse_label_kv(lines: Iterable[str], source: str, num_classes: int = NUM_CLASSES) -> dict[str, int]:
    """Lines `images/x/y/z.jpg LABEL` → {key: label}; malformed lines and conflicts are errors."""
    labels: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}, line {number}"
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected 'IMAGE_PATH LABEL', got {line.strip()!r}")
        key, value = fields
        check_inside_root(key, where)
        label = parse_label(value, where)
        if not 0 <= label < num_classes:
            raise DatasetError(f"{where}: label {label} is outside 0..{num_classes - 1}")
        if labels.get(key, label) != label:
            raise DatasetError(f"{where}: {key} was labelled {labels[key]} earlier in the file, now {label}")
        labels[key] = label
    return labels


def read_lines(path: Path) -> list[str]:
    """The lines of one annotation file; missing, a directory, unreadable or not UTF-8: a DatasetError naming it."""
    where = f"the official Clothing1M annotations under <data_root>/{ANNOTATIONS}/ (see the README's Clothing1M section)"
    refuse_directory(path, f"a Clothing1M annotation file, {path.name}", f"put {where} there")
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist; expected {where}")
    with open_binary(path, f"a Clothing1M annotation file, {path.name}", f"use {where}") as handle:
        raw = handle.read()
    try:
        return raw.decode("utf-8-sig").splitlines()  # -sig: a byte-order mark (Windows editors) is dropped
    except UnicodeDecodeError as err:
        raise DatasetError(f"annotation file {path} is not UTF-8 text ({err}); expected {where}") from None


def label_split(keys: Sequence[str], labels_by_key: dict[str, int], drop_unlabelled: bool) -> SplitIndex:
    """Pair every key with its label. Unlabelled keys are listed; dropped only on request."""
    unlabelled = [key for key in keys if key not in labels_by_key]
    if drop_unlabelled:
        keys = [key for key in keys if key in labels_by_key]
    labels = np.array([labels_by_key.get(key, -1) for key in keys], dtype=np.int64)
    return SplitIndex(np.array(keys, dtype=str), labels, unlabelled)


def read_split(data_root: Path, split: str, label_cache: dict[str, dict[str, int]],
               drop_unlabelled: bool, num_classes: int = NUM_CLASSES) -> SplitIndex:
    """Read one split's key list and label file (label files shared by splits are parsed once)."""
    key_file, label_file, _, _ = SPLITS[split]
    key_path = data_root / ANNOTATIONS / key_file
    keys = parse_key_list(read_lines(key_path), str(key_path))
    if label_file not in label_cache:
        label_path = data_root / ANNOTATIONS / label_file
        label_cache[label_file] = parse_label_kv(read_lines(label_path), str(label_path), num_classes)
    return label_split(keys, label_cache[label_file], drop_unlabelled)


def read_all_splits(data_root: str | Path, drop_unlabelled: bool,
                    num_classes: int = NUM_CLASSES) -> dict[str, SplitIndex]:
    label_cache: dict[str, dict[str, int]] = {}
    return {split: read_split(Path(data_root), split, label_cache, drop_unlabelled, num_classes)
            for split in SPLITS}


def shared_images_report(splits: dict[str, SplitIndex]) -> str:
    """One line per pair of splits that list the same image (a test image also listed for training
    flatters the reported accuracy); '' when they are disjoint. The official builder does not look."""
    lines, names = [], list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = np.intersect1d(splits[first].keys, splits[second].keys)
            if len(shared):
                lines.append(f"WARNING: {len(shared)} image(s) are listed both for {first} and for {second}, "
                             f"e.g. {shared[0]}")
    return "\n".join(lines)


def unlabelled_report(splits: dict[str, SplitIndex], limit: int = 10) -> str:
    """A message listing the keys without a label, split by split (first `limit` of each)."""
    lines = []
    for name, split in splits.items():
        if split.unlabelled:
            shown = ", ".join(split.unlabelled[:limit])
            more = f" (and {len(split.unlabelled) - limit} more)" if len(split.unlabelled) > limit else ""
            lines.append(f"  {name}: {len(split.unlabelled)} key(s) without a label: {shown}{more}")
    return "\n".join(lines)


def build_index(splits: dict[str, SplitIndex]) -> dict[str, np.ndarray]:
    """The official index dict. Refuses a split that still holds unlabelled keys (label -1)."""
    index: dict[str, np.ndarray] = {}
    for name, (key_file, _, data_key, labels_key) in SPLITS.items():
        split = splits[name]
        if split.unlabelled and (split.labels < 0).any():
            raise DatasetError(f"the {name} split has keys without a label:\n"
                               f"{unlabelled_report({name: split})}\n"
                               f"fix the annotation files, or pass --drop_unlabelled to drop those "
                               f"keys together with their (missing) labels")
        if len(split.keys) == 0:
            dropped = f" ({len(split.unlabelled)} dropped for lack of a label)" if split.unlabelled else ""
            raise DatasetError(f"the {name} split is empty: {ANNOTATIONS}/{key_file} lists no image{dropped}, "
                               f"and one is needed {SPLIT_PURPOSES[name]}; check the annotation files")
        index[data_key] = split.keys
        index[labels_key] = split.labels
    return index


def index_to_bytes(index: dict[str, np.ndarray]) -> bytes:
    """The .npy payload of the official format: a pickled dict, read with np.load(...).item()."""
    buffer = io.BytesIO()
    np.save(buffer, np.array(index, dtype=object), allow_pickle=True)
    return buffer.getvalue()


def load_index(path: str | Path, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Load and check an index file written by Clothing1m-data.py (or by the official builder).

    Refuses an empty split; with `num_classes` (the run's --num_classes), also labels outside
    0..num_classes-1 (see `check_labels_fit`).
    """
    path = Path(path)
    build = f"build it with `python Clothing1m-data.py --data_root {path.parent}`"
    refuse_directory(path, f"the Clothing1M index {INDEX_FILE_NAME}", build)
    if not path.is_file():
        raise DatasetError(f"index file {path} does not exist; {build}")
    try:
        with open_binary(path, f"the Clothing1M index {INDEX_FILE_NAME}", build) as handle:
            index = np.load(handle, allow_pickle=True).item()
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"index file {path} is unreadable ({error}); rebuild it with "
                           f"Clothing1m-data.py") from None
    if not isinstance(index, dict):
        raise DatasetError(f"index file {path} holds a {type(index).__name__}, not the index's dict; {build}")
    missing = [key for key in INDEX_KEYS if key not in index]
    if missing:
        raise DatasetError(f"index file {path} lacks {', '.join(missing)}; rebuild it with Clothing1m-data.py")
    for _, _, data_key, labels_key in SPLITS.values():
        keys, labels = np.asarray(index[data_key]), np.asarray(index[labels_key])
        if keys.ndim != 1 or labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise DatasetError(f"index file {path}: {data_key} and {labels_key} must be lists of image paths "
                               f"and of integer labels, found shapes {keys.shape}, {labels.shape} ({labels.dtype}); "
                               f"rebuild it with Clothing1m-data.py")
        if len(index[data_key]) != len(index[labels_key]):
            raise DatasetError(f"index file {path}: {data_key} has {len(index[data_key])} entries but "
                               f"{labels_key} has {len(index[labels_key])}; rebuild it with Clothing1m-data.py")
    check_splits_not_empty(index, f"index file {path}")
    if num_classes is not None:
        check_index_labels(index, num_classes, str(path))
    return index


def check_splits_not_empty(index: dict[str, np.ndarray], source: str) -> None:
    """Refuse an index whose training, validation or test list is empty (each has a job in the loop)."""
    for name, (key_file, _, data_key, labels_key) in SPLITS.items():
        if len(index[labels_key]) == 0:
            raise DatasetError(f"{source}: the {name} list ({data_key}) is empty, but it is needed "
                               f"{SPLIT_PURPOSES[name]}; check {ANNOTATIONS}/{key_file}, then {REBUILD}")


def check_labels_fit(labels: np.ndarray, num_classes: int, source: str) -> None:
    """Refuse labels a `num_classes`-way network cannot take (they would end in an IndexError mid-run)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    if labels.min() < 0:
        raise DatasetError(f"negative label {labels.min()} found in {source} (a key without a label?); "
                           f"{REBUILD}")
    if labels.max() >= num_classes:
        raise UserError(f"labels up to {labels.max()} found in {source}, but --num_classes is {num_classes}; "
                        f"pass --num_classes {labels.max() + 1} (Clothing1M has {NUM_CLASSES}) or use an "
                        f"index with fewer classes")


def check_index_labels(index: dict[str, np.ndarray], num_classes: int, source: str) -> None:
    """`check_labels_fit` on the labels of every split of the index."""
    for _, _, _, labels_key in SPLITS.values():
        check_labels_fit(index[labels_key], num_classes, f"{source} ({labels_key})")


def class_counts(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Examples per class (int64, length num_classes)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def count_report(index: dict[str, np.ndarray], num_classes: int = NUM_CLASSES) -> str:
    """A table: one row per class, one column per split, plus totals."""
    names = CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(str(c) for c in range(num_classes))
    counts = {split: class_counts(index[labels_key], num_classes)
              for split, (_, _, _, labels_key) in SPLITS.items()}
    width = max(len(name) for name in names) + 5
    rows = [f"{'class':<{width}}" + "".join(f"{split:>10}" for split in counts)]
    for c, name in enumerate(names):
        rows.append(f"{f'{c:2d} {name}':<{width}}" + "".join(f"{counts[s][c]:>10d}" for s in counts))
    rows.append(f"{'total':<{width}}" + "".join(f"{int(counts[s].sum()):>10d}" for s in counts))
    return "\n".join(rows)


def missing_images(data_root: str | Path, keys: Sequence[str], threads: int = 16,
                   chunk_size: int = 4096) -> list[str]:
    """Keys whose image file does not exist under `data_root`, in order.

    Checked in chunks on a thread pool: a million `stat` calls on a network filesystem are
    latency-bound, not CPU-bound.
    """
    root = Path(data_root)
    chunks = [list(keys[start:start + chunk_size]) for start in range(0, len(keys), chunk_size)]

    def absent(chunk: list[str]) -> list[str]:
        return [key for key in chunk if not (root / key).is_file()]

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return [key for found in pool.map(absent, chunks) for key in found]
