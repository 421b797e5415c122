"""The configuration of main.py: the official flags with their official defaults, ours, and the
flags each method adds (declared in its own file, utils/methods/).

Official (docs/options.md): --seed --lr --weight_decay --batch_size --n_epoch --model_dir --dataset
--data_percent --data_path --noise_type --noise_rate --max_outer_loop --max_inner_loop.
The flags both entry points share (and their checks) live in utils/run/config.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from data.datasets import DATASETS, Dataset, is_human_noise, noise_types_for
from data.noise import NOISE_TYPES
from models import MODEL_BUILDERS
from models.cnn9 import DROPOUT_MODES
from utils.methods import METHODS, MethodFlags, with_method_flags
from utils.run.config import RunConfig, option, require

SELECTIONS = ("agree", "small_loss")
NOISE_RATE_DEFAULT = 0.2


def describe_methods() -> str:
    described = []
    for name, method in METHODS.items():
        defaults = " ".join(f"--{flag} {value}" for flag, value in method.defaults.items())
        described.append(f"{name} ({method.title}{'; defaults ' + defaults if defaults else ''})")
    return "; ".join(described)


@dataclass(frozen=True)
class VisionConfig(MethodFlags, RunConfig):
    # --- official flags and defaults (the shared ones are in RunConfig) ---
    lr: float = option(0.01, "initial learning rate (SGD, momentum 0.9)")
    weight_decay: float = option(1e-4, "weight decay")
    batch_size: int = option(128, "training batch size", minimum=1)
    n_epoch: int = option(100, "epochs per warm-up and per inner round", minimum=1)
    max_inner_loop: int = option(20, "at most max_inner_loop - 1 inner rounds per outer round", minimum=1)
    dataset: str = option("mnist", "; ".join(f"{name} ({data.title}, {data.num_classes} classes)"
                                             for name, data in DATASETS.items())
                          + "; digits is bundled (no download)", choices=tuple(DATASETS))
    data_percent: float = option(0.9, "fraction of the noisy training set used for training; "
                                      "the rest is the (noisy) validation set")
    data_path: str = option("./data", "folder holding MNIST/raw, cifar-10-batches-py or cifar-100-python")
    noise_type: str = option("symmetric", ", ".join(NOISE_TYPES) + "; CIFAR-N's human labels: " + "; ".join(
        f"{', '.join(data.human_noise)} ({name})" for name, data in DATASETS.items() if data.human_noise))
    noise_rate: float = option(NOISE_RATE_DEFAULT, "corruption rate in [0, 1) for synthetic noise (not with CIFAR-N's "
                                                   "human labels)")
    # --- ours ---
    method: str = option("memomentum", describe_methods(), choices=tuple(METHODS))
    network: str = option("", f"the network: {', '.join(MODEL_BUILDERS)} (cnn9: Co-teaching's CNN); default: the "
                              "dataset's: " + ", ".join(f"{data.network} ({name})" for name, data in DATASETS.items()))
    cnn9_dropout: str = option("never", "when the 9-layer CNN (--network cnn9) drops out: never (as its authors ran "
                                        "it, on PyTorch 0.3), train (the usual), always (their code on today's "
                                        "PyTorch: in evaluation too)", choices=DROPOUT_MODES)
    select: str = option("agree", "confident examples: agree = prediction equals noisy label "
                                  "(official); small_loss = per class, the same number of examples "
                                  "with the smallest cross-entropy", choices=SELECTIONS)
    predict_clean: bool = option(False, "validate and extract on un-augmented images (the official "
                                        "code uses the training augmentation for both)")
    download: bool = option(False, "download MNIST/CIFAR with torchvision when the files are missing")
    save_noisy_labels: str = option("", "write the noisy labels, split and transition matrix to this .npz")
    noise_only: bool = option(False, "stop after making (and saving) the noisy labels")
    cifarn_path: str = option("./data/cifar-10-100n", "folder with CIFAR-10_human.pt / CIFAR-100_human.pt")

    RESUME_NEUTRAL_FIELDS: ClassVar[frozenset[str]] = RunConfig.RESUME_NEUTRAL_FIELDS | {
        "data_path", "download", "save_noisy_labels", "noise_only", "cifarn_path",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        kinds = noise_types_for(self.dataset)
        require(self.noise_type in kinds,
                f"noise type {self.noise_type!r} is not available for {self.dataset}; "
                f"choose one of {', '.join(kinds)}")
        require(0.0 <= self.noise_rate < 1.0, f"--noise_rate must be in [0, 1), got {self.noise_rate}")
        require(not self.human_noise or self.noise_rate == NOISE_RATE_DEFAULT,
                f"--noise_rate plays no part with {self.dataset}'s human labels ({self.noise_type}: the "
                f"annotators fixed the rate); leave --noise_rate out")
        require(not self.network or self.network in MODEL_BUILDERS,
                f"unknown --network {self.network!r}; choose one of {', '.join(MODEL_BUILDERS)}")
        require(self.network_name == "cnn9" or self.cnn9_dropout == "never",
                f"--cnn9_dropout applies to --network cnn9 only, not to {self.network_name}")
        require(0.0 < self.data_percent <= 1.0,
                f"--data_percent must be in (0, 1], got {self.data_percent}")
        self.refuse_other_methods_flags()

    @property
    def trains(self) -> bool:
        return not self.noise_only

    @property
    def preset(self) -> Dataset:
        """The dataset's entry: classes, default network, normalisation, augmentation."""
        return DATASETS[self.dataset]

    @property
    def drawn_noise_type(self) -> str:
        """The noise function that draws the labels: --noise_type, unless the method draws that type its
        own way (PES-semi's symmetric noise, as its authors')."""
        drawn = METHODS[self.method].drawn_noise_type
        return drawn(self) if drawn is not None else self.noise_type

    @property
    def network_name(self) -> str:
        return self.network or self.preset.network

    @property
    def human_noise(self) -> bool:
        return is_human_noise(self.dataset, self.noise_type)

    @property
    def noise_setting(self) -> str:
        """{dataset}-{noise_type}-{noise_rate}, the official naming; CIFAR-N's human labels have no rate."""
        rate = "" if self.human_noise else f"-{self.noise_rate}"
        return f"{self.dataset}-{self.noise_type}{rate}"

    @property
    def run_name(self) -> str:
        return f"{self.noise_setting}-seed{self.seed}-{self.method}"

    @property
    def official_checkpoint_stem(self) -> str:
        """The official file-name stem, {dataset}-{noise_type}-{noise_rate}-{seed}; other methods than
        Me-Momentum (which the official code does not have) add their name, so that runs of a
        sweep never share a file."""
        stem = f"{self.noise_setting}-{self.seed}"
        return stem if self.method == "memomentum" else f"{stem}-{self.method}"


TrainConfig = with_method_flags(VisionConfig, METHODS, "TrainConfig",
                                "main.py's flags: the shared ones, the vision ones, and every method's own.")
