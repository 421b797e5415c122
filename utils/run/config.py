"""Run configuration: one frozen dataclass per entry point is the source of truth.

`RunConfig` holds the flags main.py and Clothing.py share (their help, defaults and checks,
written once); `TrainConfig` and `ClothingConfig` add their own and override the official
defaults that differ. The argparse parser is built from the dataclass fields (default, help
text, choices), the parsed config is validated once, printed at start, saved as config.json and
inside every checkpoint, and never mutated afterwards.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence, TypeVar

from utils.engine import COMPILE_MODES, MEMORY_FORMATS, SGD_KERNELS
from utils.errors import UserError

ConfigT = TypeVar("ConfigT")


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A config field that is also a command-line flag `--<name>`."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


class _ConfigParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UserError (one line, exit code 2) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def build_parser(config_cls: type, description: str, prog: str | None = None) -> argparse.ArgumentParser:
    parser = _ConfigParser(description=description, prog=prog,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for spec in dataclasses.fields(config_cls):
        meta = dict(spec.metadata)
        help_text = meta.pop("help", "")
        flag = f"--{spec.name}"
        if spec.type in (bool, "bool") and "action" not in meta:
            parser.add_argument(flag, action="store_true", default=spec.default, help=help_text)
        elif "action" in meta:
            parser.add_argument(flag, default=spec.default, help=help_text, **meta)
        else:
            parser.add_argument(flag, type=_python_type(spec.type), default=spec.default,
                                help=help_text, **meta)
    return parser


def parse_config(config_cls: type[ConfigT], argv: Sequence[str] | None, description: str,
                 prog: str | None = None) -> ConfigT:
    """Parse flags into a validated, frozen config (validation lives in the class's __post_init__)."""
    namespace = build_parser(config_cls, description, prog).parse_args(argv)
    return config_cls(**vars(namespace))


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_defaults(config: Any) -> dict[str, Any]:
    """Every flag's default value (what a configuration saved before the flag existed meant)."""
    return {spec.name: spec.default for spec in dataclasses.fields(config)}


def format_config(config: Any) -> str:
    rows = config_to_dict(config)
    width = max(len(name) for name in rows)
    return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in rows.items())


def _python_type(annotation: Any) -> type:
    mapping = {"int": int, "float": float, "str": str}
    if isinstance(annotation, str):
        return mapping.get(annotation.split("|")[0].strip(), str)
    return annotation


def require(condition: bool, message: str) -> None:
    """Raise a UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message)


SEED_LIMIT = 2**32  # numpy's RandomState and the official noise code accept 0 <= seed < 2**32


@dataclass(frozen=True)
class RunConfig:
    """The flags of both loops. Defaults are main.py's; ClothingConfig overrides the official ones
    that differ (lr, weight decay, batch size, epochs, inner rounds)."""

    # --- official flags ---
    seed: int = option(1, "random seed (noise, split, initialisation, shuffling, augmentation)")
    lr: float = option(0.01, "initial learning rate of SGD (momentum 0.9)")
    weight_decay: float = option(1e-4, "weight decay of SGD")
    batch_size: int = option(128, "training batch size")
    n_epoch: int = option(100, "epochs per warm-up and per inner round")
    model_dir: str = option("model", "folder for the official-style weight files")
    max_outer_loop: int = option(3, "outer rounds (each starts a fresh network)")
    max_inner_loop: int = option(20, "at most max_inner_loop - 1 inner rounds per outer round")
    # --- ours ---
    output_dir: str = option("", "run folder (default: under runs/, named after the settings)")
    resume: str = option("", "'auto' continues the run in --output_dir if it has a checkpoint (and "
                             "skips a finished one); or a checkpoint path")
    checkpoint_every: float = option(60.0, "seconds between writes of the whole resumable state (also "
                                           "written at the end and when a stop is requested); 0: after "
                                           "every epoch")
    device: str = option("auto", "auto (CUDA, then Apple MPS, then CPU), or a torch device like cuda:1")
    amp: bool = option(False, "bfloat16 autocast on devices that support it")
    channels_last: str = option("auto", "channels-last memory format for images and convolutions: on, "
                                        "off, or auto (on on the CPU, where it is faster; off on GPUs "
                                        "and MPS); a bare --channels_last means on",
                                choices=MEMORY_FORMATS, nargs="?", const="on")
    sgd: str = option("fused", "SGD kernels: fused (one kernel per parameter; ~3x cheaper steps for "
                               "small networks) or plain (torch's default, as the official code); same "
                               "update, last-bit rounding differs", choices=SGD_KERNELS)
    compile: str = option("off", "torch.compile the network: off, default, reduce-overhead (CUDA graphs) "
                                 "or max-autotune; a bare --compile means default; same numbers up to "
                                 "last-bit rounding", choices=COMPILE_MODES, nargs="?", const="default")
    save_rounds: bool = option(False, "write the examples of every extraction (their index, labels, "
                                      "predicted probabilities, and which were kept) to RUN_DIR/rounds/")
    eval_batch_size: int = option(256, "batch size for validation, test and extraction (inference only)")
    num_threads: int = option(0, "CPU threads for torch (0: torch's default, all cores); 1 is often "
                                 "fastest on a shared or busy CPU")
    no_progress: bool = option(False, "no progress bar even on a terminal")

    # Flags that change neither the numbers nor the trajectory of a run: they may differ on --resume.
    RESUME_NEUTRAL_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "resume", "output_dir", "model_dir", "no_progress", "eval_batch_size", "num_threads",
        "checkpoint_every", "save_rounds",
    })

    def __post_init__(self) -> None:
        require(0 <= self.seed < SEED_LIMIT, f"--seed must be in [0, 2**32), got {self.seed}")
        for name in ("batch_size", "n_epoch", "max_outer_loop", "max_inner_loop", "eval_batch_size"):
            require(getattr(self, name) >= 1, f"--{name} must be at least 1, got {getattr(self, name)}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")
        require(self.checkpoint_every >= 0, f"--checkpoint_every must be >= 0 seconds, got {self.checkpoint_every}")
        require(self.num_threads >= 0, f"--num_threads must be >= 0, got {self.num_threads}")

    @property
    def run_name(self) -> str:
        raise NotImplementedError

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.run_name
