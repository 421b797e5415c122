"""The configuration of main.py: the official flags with their official defaults, plus ours.

Official (METHOD.md §3): --seed --lr --weight_decay --batch_size --n_epoch --model_dir --dataset
--data_percent --data_path --noise_type --noise_rate --max_outer_loop --max_inner_loop.
Everything else is ours and documented in the README.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data.presets import PRESETS, DatasetPreset, noise_types_for
from utils.run.config import option, require
from utils.kernel_options import channels_last_option, sgd_option

from utils.methods import METHODS
SELECTIONS = ("agree", "small_loss")

# Flags that change neither the numbers nor the trajectory of a run: they may differ on --resume.
RESUME_NEUTRAL_FIELDS = frozenset({
    "resume", "output_dir", "model_dir", "no_progress", "data_path", "download", "tensorboard",
    "save_noisy_labels", "noise_only", "cifarn_path", "num_threads", "eval_batch_size",
})


@dataclass(frozen=True)
class TrainConfig:
    # --- official flags and defaults ---
    seed: int = option(1, "random seed (noise, split, initialisation, shuffling, augmentation)")
    lr: float = option(0.01, "initial learning rate of SGD (momentum 0.9)")
    weight_decay: float = option(1e-4, "weight decay of SGD")
    batch_size: int = option(128, "training batch size")
    n_epoch: int = option(100, "epochs per warm-up and per inner round")
    model_dir: str = option("model", "folder for the official-style checkpoint files "
                                     "{dataset}-{noise_type}-{noise_rate}-{seed}_latest/_best.hdf5")
    dataset: str = option("mnist", "mnist, cifar10, cifar100, or digits (bundled, no download)",
                          choices=tuple(PRESETS))
    data_percent: float = option(0.9, "fraction of the noisy training set used for training; "
                                      "the rest is the (noisy) validation set")
    data_path: str = option("./data", "folder holding MNIST/raw, cifar-10-batches-py or cifar-100-python")
    noise_type: str = option("symmetric", "symmetric, pairflip, instance; CIFAR-N: aggre, random1-3, "
                                          "worst (cifar10), noisy (cifar100)")
    noise_rate: float = option(0.2, "corruption rate in [0, 1) for synthetic noise")
    max_outer_loop: int = option(3, "outer rounds (each starts a fresh network)")
    max_inner_loop: int = option(20, "at most max_inner_loop - 1 inner rounds per outer round")
    # --- ours ---
    method: str = option("memomentum", "memomentum, or ce: plain cross-entropy on all noisy labels "
                                       "for n_epoch epochs (the paper's 'Standard' baseline)",
                         choices=METHODS)
    select: str = option("agree", "confident examples: agree = prediction equals noisy label "
                                  "(official); small_loss = per class, the same number of examples "
                                  "with the smallest cross-entropy", choices=SELECTIONS)
    predict_clean: bool = option(False, "validate and extract on un-augmented images (the official "
                                        "code uses the training augmentation for both)")
    output_dir: str = option("", "run folder; default runs/{dataset}-{noise_type}-{noise_rate}-"
                                 "seed{seed}-{method}")
    resume: str = option("", "'auto' continues the run in --output_dir if it has a checkpoint; "
                             "or a checkpoint path")
    device: str = option("auto", "auto (CUDA, then Apple MPS, then CPU), or a torch device like cuda:1")
    amp: bool = option(False, "bfloat16 autocast on devices that support it")
    channels_last: str = channels_last_option()
    sgd: str = sgd_option()
    eval_batch_size: int = option(256, "batch size for validation, test and extraction "
                                       "(the official code uses 2 x batch_size)")
    num_threads: int = option(0, "CPU threads for torch (0: torch's default, all cores); 1 is "
                                 "often fastest on a shared or busy CPU")
    download: bool = option(False, "download MNIST/CIFAR with torchvision when the files are missing")
    save_noisy_labels: str = option("", "write the noisy labels, split and transition matrix to this .npz")
    noise_only: bool = option(False, "stop after making (and saving) the noisy labels")
    cifarn_path: str = option("./data/cifar-10-100n", "folder with CIFAR-10_human.pt / CIFAR-100_human.pt")
    tensorboard: bool = option(False, "also write per-epoch metrics as TensorBoard scalars")
    no_progress: bool = option(False, "no progress bar even on a terminal")

    def __post_init__(self) -> None:
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
        for name in ("batch_size", "n_epoch", "max_outer_loop", "max_inner_loop", "eval_batch_size"):
            require(getattr(self, name) >= 1, f"--{name} must be at least 1, got {getattr(self, name)}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")

    @property
    def preset(self) -> DatasetPreset:
        return PRESETS[self.dataset]

    @property
    def run_name(self) -> str:
        return f"{self.dataset}-{self.noise_type}-{self.noise_rate}-seed{self.seed}-{self.method}"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.run_name

    @property
    def official_checkpoint_stem(self) -> str:
        """The official file-name stem (METHOD.md §3): {dataset}-{noise_type}-{noise_rate}-{seed}."""
        return f"{self.dataset}-{self.noise_type}-{self.noise_rate}-{self.seed}"
