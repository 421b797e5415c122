"""data/datasets.py and data/noise.py's NOISE_TYPES: one entry per dataset or noise model, from which
flag choices, presets, table labels and the human-noise predicate derive."""
from __future__ import annotations

import pytest

from data.datasets import DATASETS, is_human_noise, load_vision_data, noise_types_for
from data.noise import NOISE_TYPES
from utils.errors import UserError
from utils.run.config import build_parser
from utils.sweeps.grid import setting_label
from utils.train_config import TrainConfig


def test_flag_choices_and_help_come_from_the_registries():
    actions = {action.dest: action for action in build_parser(TrainConfig, "x")._actions}
    assert tuple(actions["dataset"].choices) == tuple(DATASETS)
    for name in NOISE_TYPES:
        assert name in actions["noise_type"].help
    for dataset in DATASETS.values():
        assert dataset.title in actions["dataset"].help
        for human in dataset.human_noise:
            assert human in actions["noise_type"].help


def test_human_noise_is_known_once():
    assert is_human_noise("cifar10", "worst") and is_human_noise("cifar100", "noisy")
    assert not is_human_noise("cifar10", "symmetric") and not is_human_noise("mnist", "worst")
    assert not is_human_noise("clothing1m", "real")
    assert noise_types_for("cifar100") == (*NOISE_TYPES, "noisy") and noise_types_for("mnist") == tuple(NOISE_TYPES)


def test_table_labels_come_from_the_registries():
    assert setting_label("cifar10", "symmetric", 0.2) == "CIFAR-10 Sym-20%"
    assert setting_label("cifar100", "instance", 0.4) == "CIFAR-100 IDN-40%"
    assert setting_label("cifar10", "worst", None) == "CIFAR-10N Worst"
    assert setting_label("mnist", "symmetric_all", 0.5) == "MNIST Sym-all-50%"


def test_every_entry_reads_its_data_with_its_class_count():
    digits = load_vision_data("digits", "/nonexistent")
    assert digits.num_classes == DATASETS["digits"].num_classes == 10
    with pytest.raises(UserError, match="choose one of mnist, cifar10, cifar100, digits"):
        load_vision_data("svhn", ".")
