"""The configuration of Clothing.py: the official flags with their official defaults, plus ours.

Official (docs/clothing1m.md): --seed --lr --weight_decay --batch_size --num_classes --pretrain
--model_dir --data_root --beta --n_epoch --max_inner_loop --max_outer_loop.
`--pretrain` keeps its official meaning (store_false: passing it turns pretraining OFF);
`--no_pretrain` says the same thing in words.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from models.pretrained import ARCHITECTURES
from utils.methods import CLOTHING_METHODS, METHODS, MethodFlags, with_method_flags
from utils.run.config import RunConfig, option, require


@dataclass(frozen=True)
class ClothingBaseConfig(MethodFlags, RunConfig):
    # --- official flags and defaults (the shared ones are in RunConfig) ---
    lr: float = option(0.005, "initial learning rate of SGD (momentum 0.9); MultiStepLR x0.1 at epochs 10, 20 "
                              "of every outer round")
    weight_decay: float = option(1e-3, "weight decay of SGD")
    batch_size: int = option(32, "GLOBAL training batch size: under torchrun each of the W processes "
                                 "takes batch_size // W examples per step", minimum=1)
    n_epoch: int = option(5, "epochs per inner round", minimum=1)
    max_inner_loop: int = option(6, "inner rounds per outer round (the training set is rebuilt after each)",
                                 minimum=1)
    num_classes: int = option(14, "number of classes (Clothing1M: 14)", minimum=1)
    pretrain: bool = option(True, "official flag, kept for compatibility: passing --pretrain turns "
                                  "ImageNet pretraining OFF (store_false); prefer --no_pretrain",
                            action="store_false")
    data_root: str = option("data/Clothing1M_Official/", "folder with images/ and Clothing1m-data.npy "
                                                        "(made by Clothing1m-data.py)")
    beta: float = option(0.45, "per-class score = beta * accuracy + (1 - beta) * precision on the clean "
                               "validation set")
    # --- ours ---
    no_pretrain: bool = option(False, "start from random weights instead of ImageNet (same as the "
                                      "official --pretrain)")
    method: str = option("memomentum", "the method: " + "; ".join(
        f"{name} ({METHODS[name].title}" + "".join(f"; --{flag} {value}" for flag, value in
                                                   METHODS[name].clothing_defaults.items()) + ")"
        for name in CLOTHING_METHODS), choices=CLOTHING_METHODS)
    arch: str = option("resnet50", "torchvision ResNet (official: resnet50)", choices=tuple(ARCHITECTURES))
    image_size: int = option(256, "images are resized to image_size x image_size; training crops pad by "
                                  "image_size // 8 (official: 256, padding 32)", minimum=1)
    weights: str = option("", "ImageNet weights as a local state dict file (instead of the torch hub "
                              "cache or a download)")
    num_workers: int = option(-1, "JPEG-decoding DataLoader workers per process; -1: from the CPU count "
                                  "(at most 8)")
    skip_bad_images: bool = option(False, "leave unreadable or missing images out (counted in the logs) "
                                          "instead of stopping")
    keep_all_checkpoints: bool = option(False, "keep every per-epoch weight file (officially all are kept); "
                                               "by default those no class still needs are deleted")
    no_sync_bn: bool = option(False, "under torchrun on GPUs, keep per-GPU BatchNorm statistics instead of "
                                     "SyncBatchNorm over the global batch")

    RESUME_NEUTRAL_FIELDS: ClassVar[frozenset[str]] = RunConfig.RESUME_NEUTRAL_FIELDS | {
        "data_root", "num_workers", "skip_bad_images", "keep_all_checkpoints",
    }
    ENTRY: ClassVar[str] = "clothing"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.arch in ARCHITECTURES, f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        require(0.0 <= self.beta <= 1.0, f"--beta must be in [0, 1], got {self.beta}")
        require(self.num_workers >= -1, f"--num_workers must be -1 (auto) or >= 0, got {self.num_workers}")
        require(not (self.weights and not self.use_pretrained),
                "--weights gives pretrained weights, but --no_pretrain/--pretrain turn pretraining off")
        self.refuse_other_methods_flags()

    @property
    def use_pretrained(self) -> bool:
        return self.pretrain and not self.no_pretrain

    @property
    def run_name(self) -> str:
        name = f"clothing1m-seed{self.seed}"
        return name if self.method == "memomentum" else f"{name}-{self.method}"

    # differs from the official code: they go to `--model_dir/<run folder name>/`
    @property
    def epoch_weights_dir(self) -> Path:
        return Path(self.model_dir) / self.run_dir.name


ClothingConfig = with_method_flags(ClothingBaseConfig, {name: METHODS[name] for name in CLOTHING_METHODS},
                                   "ClothingConfig", "Clothing.py's flags: the shared ones, Clothing1M's, and every "
                                                     "method's own.")
