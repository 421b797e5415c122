"""The configuration of main.py: the official flags with their official defaults, plus ours.

Official (METHOD.md §3): --seed --lr --weight_decay --batch_size --n_epoch --model_dir --dataset
--data_percent --data_path --noise_type --noise_rate --max_outer_loop --max_inner_loop.
The flags both loops share (and their checks) live in utils/run/config.py; everything that is
not official is ours and documented in the README.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from data.presets import PRESETS, DatasetPreset, noise_types_for
from utils.methods import METHODS
from utils.run.config import RunConfig, option, require

SELECTIONS = ("agree", "small_loss")


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    # --- official flags and defaults (the shared ones are in RunConfig) ---
    dataset: str = option("mnist", "mnist, cifar10, cifar100, or digits (bundled, no download)",
                          choices=tuple(PRESETS))
    data_percent: float = option(0.9, "fraction of the noisy training set used for training; "
                                      "the rest is the (noisy) validation set")
    data_path: str = option("./data", "folder holding MNIST/raw, cifar-10-batches-py or cifar-100-python")
    noise_type: str = option("symmetric", "symmetric, pairflip, instance; CIFAR-N: aggre, random1-3, "
                                          "worst (cifar10), noisy (cifar100)")
    noise_rate: float = option(0.2, "corruption rate in [0, 1) for synthetic noise")
    # --- ours ---
    method: str = option("memomentum", "memomentum, or ce: plain cross-entropy on all noisy labels "
                                       "for n_epoch epochs (the paper's 'Standard' baseline)",
                         choices=METHODS)
    select: str = option("agree", "confident examples: agree = prediction equals noisy label "
                                  "(official); small_loss = per class, the same number of examples "
                                  "with the smallest cross-entropy", choices=SELECTIONS)
    predict_clean: bool = option(False, "validate and extract on un-augmented images (the official "
                                        "code uses the training augmentation for both)")
    download: bool = option(False, "download MNIST/CIFAR with torchvision when the files are missing")
    save_noisy_labels: str = option("", "write the noisy labels, split and transition matrix to this .npz")
    noise_only: bool = option(False, "stop after making (and saving) the noisy labels")
    cifarn_path: str = option("./data/cifar-10-100n", "folder with CIFAR-10_human.pt / CIFAR-100_human.pt")
    tensorboard: bool = option(False, "also write per-epoch metrics as TensorBoard scalars")

    RESUME_NEUTRAL_FIELDS: ClassVar[frozenset[str]] = RunConfig.RESUME_NEUTRAL_FIELDS | {
        "data_path", "download", "tensorboard", "save_noisy_labels", "noise_only", "cifarn_path",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dataset in PRESETS,
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(PRESETS)}")
        kinds = noise_types_for(self.dataset)
        require(self.noise_type in kinds,
                f"noise type {self.noise_type!r} is not available for {self.dataset}; "
                f"choose one of {', '.join(kinds)}")
        require(0.0 <= self.noise_rate < 1.0, f"--noise_rate must be in [0, 1), got {self.noise_rate}")
        require(0.0 < self.data_percent <= 1.0,
                f"--data_percent must be in (0, 1], got {self.data_percent}")
        require(self.method == "ce" or self.data_percent < 1.0,
                "--data_percent 1 leaves no validation set, which Me-Momentum needs; use e.g. 0.9")
        require(self.method == "ce" or self.max_inner_loop >= 2,
                "--max_inner_loop 1 runs no inner round, so Me-Momentum would extract nothing and "
                "report 0 %; use at least 2 (official: 20)")

    @property
    def preset(self) -> DatasetPreset:
        return PRESETS[self.dataset]

    @property
    def run_name(self) -> str:
        return f"{self.dataset}-{self.noise_type}-{self.noise_rate}-seed{self.seed}-{self.method}"

    @property
    def official_checkpoint_stem(self) -> str:
        """The official file-name stem (METHOD.md §3): {dataset}-{noise_type}-{noise_rate}-{seed}."""
        return f"{self.dataset}-{self.noise_type}-{self.noise_rate}-{self.seed}"
