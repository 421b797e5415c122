"""CIFAR-N: real human labels for the CIFAR training sets (Wei et al., ICLR 2022).

`CIFAR-10_human.pt` holds `clean_label`, `aggre_label`, `random_label1..3` and `worse_label`;
`CIFAR-100_human.pt` holds `clean_label` and `noisy_label`; each an int64 array of 50,000
labels in the standard CIFAR training order. The file's `clean_label` must equal the CIFAR
training labels read from disk, otherwise the human labels would be attached to the wrong
images; we check that before handing any label out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data.files import open_binary, refuse_directory
from utils.errors import DatasetError, UserError

CIFARN_FILES = {"cifar10": "CIFAR-10_human.pt", "cifar100": "CIFAR-100_human.pt"}
CIFARN_KEYS = {
    "cifar10": {"aggre": "aggre_label", "random1": "random_label1", "random2": "random_label2",
                "random3": "random_label3", "worst": "worse_label"},
    "cifar100": {"noisy": "noisy_label"},
}
CIFARN_CLASSES = {"cifar10": 10, "cifar100": 100}  # the classes each label file's labels range over
# How papers name the label sets (tables: "CIFAR-10N Worst")
CIFARN_TITLES = {"aggre": "Aggregate", "random1": "Random 1", "random2": "Random 2", "random3": "Random 3",
                 "worst": "Worst", "noisy": "Noisy"}
CLEAN_KEY = "clean_label"
WHERE_TO_GET = ("download it from github.com/UCSC-REAL/cifar-10-100n (folder data/) "
                "and pass its folder with --cifarn_path")


def cifarn_file(cifarn_path: str | Path, dataset: str) -> Path:
    """The label file of `dataset`: `cifarn_path` itself if it is a file (or carries the file's
    name, so a directory of that name is reported as such), else the file inside that folder."""
    path = Path(cifarn_path)
    return path if path.is_file() or path.name == CIFARN_FILES[dataset] else path / CIFARN_FILES[dataset]


def load_human_labels(cifarn_path: str | Path, dataset: str, noise_type: str,
                      clean_train_labels: np.ndarray) -> np.ndarray:
    """The human labels of `noise_type` (e.g. 'worst') as int64, checked against the CIFAR training labels."""
    if dataset not in CIFARN_KEYS:
        raise UserError(f"CIFAR-N exists for cifar10 and cifar100 only, not {dataset!r}")
    if noise_type not in CIFARN_KEYS[dataset]:
        raise UserError(f"CIFAR-N noise type {noise_type!r} does not exist for {dataset}; "
                        f"choose one of {', '.join(CIFARN_KEYS[dataset])}")
    path = cifarn_file(cifarn_path, dataset)
    contents = read_label_file(path)
    clean_train_labels = np.asarray(clean_train_labels).astype(np.int64).reshape(-1)
    file_clean = label_array(contents, CLEAN_KEY, path, dataset)
    check_same_clean_labels(file_clean, clean_train_labels, path)
    key = CIFARN_KEYS[dataset][noise_type]
    labels = label_array(contents, key, path, dataset)
    if len(labels) != len(clean_train_labels):
        raise DatasetError(f"{path}: {key!r} has {len(labels)} labels, "
                           f"the CIFAR training set {len(clean_train_labels)}; the file is malformed; "
                           f"{WHERE_TO_GET}")
    return labels


def read_label_file(path: Path) -> dict:
    """torch.load the CIFAR-N file (numpy arrays pickled in torch's zip format, hence weights_only=False)."""
    expected = "a CIFAR-N label file, " + " or ".join(CIFARN_FILES.values())
    refuse_directory(path, expected, WHERE_TO_GET)
    if not path.is_file():
        raise DatasetError(f"CIFAR-N label file not found: {path}; {WHERE_TO_GET}")
    import torch  # lazy: only CIFAR-N runs need it here

    try:
        with open_binary(path, expected, WHERE_TO_GET) as handle:
            contents = torch.load(handle, weights_only=False, map_location="cpu")
    except DatasetError:
        raise
    except Exception as err:  # a truncated zip, a wrong file: torch raises many types
        raise DatasetError(f"{path} is not a readable CIFAR-N label file ({type(err).__name__}: "
                           f"{' '.join(str(err).split())[:200]}); {WHERE_TO_GET}") from err
    if not isinstance(contents, dict):
        raise DatasetError(f"{path}: expected a dict of label arrays, found {type(contents).__name__}; "
                           f"{WHERE_TO_GET}")
    return contents


def label_array(contents: dict, key: str, path: Path, dataset: str) -> np.ndarray:
    """One label array of the file as int64, with its values checked to be class indices."""
    if key not in contents:
        raise DatasetError(f"{path}: no {key!r} in the file (keys: {', '.join(map(str, contents))}); "
                           f"is it the {CIFARN_FILES[dataset]} of CIFAR-N? {WHERE_TO_GET}")
    values = np.asarray(contents[key])
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {key!r} should be a 1-D array of integer labels, found "
                           f"shape {values.shape} of {values.dtype}; {WHERE_TO_GET}")
    classes = CIFARN_CLASSES[dataset]
    if len(values) and (values.min() < 0 or values.max() >= classes):
        raise DatasetError(f"{path}: {key!r} has labels outside 0..{classes - 1} "
                           f"(min {values.min()}, max {values.max()}); is this the {dataset} file?")
    return values.astype(np.int64)


def check_same_clean_labels(file_clean: np.ndarray, train_labels: np.ndarray, path: Path) -> None:
    """Refuse a file whose clean labels are not the CIFAR training labels, in the same order."""
    if len(file_clean) != len(train_labels):
        raise DatasetError(f"{path}: {len(file_clean)} clean labels, but the CIFAR training set read from "
                           f"disk has {len(train_labels)} examples; wrong file or wrong CIFAR copy")
    differ = int(np.count_nonzero(file_clean != train_labels))
    if differ:
        raise DatasetError(f"{path}: its clean labels differ from the CIFAR training labels read from disk "
                           f"at {differ} of {len(train_labels)} positions (wrong file, or images in a "
                           f"different order); the human labels would be attached to the wrong images")
