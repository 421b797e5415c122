"""Run configuration: one frozen dataclass per entry point is the source of truth.

`RunConfig` holds the flags main.py and Clothing.py share (their help, defaults and checks,
written once); `TrainConfig` and `ClothingConfig` add their own, each with its official default.
The argparse parser is built from the dataclass fields (default, help text, choices, argument
group), the parsed config is validated once, printed at start, saved as config.json and inside
every checkpoint, and never mutated afterwards. Flags must be written in full: argparse's
abbreviations (`--noise_r` for `--noise_rate`) are off, so that a sweep's flags cannot slip past
the checks that look for a flag by its name.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence, TypeVar

from utils.engine import COMPILE_MODES, MEMORY_FORMATS, SGD_KERNELS
from utils.errors import UserError

ConfigT = TypeVar("ConfigT")


def option(default: Any, help: str, minimum: float | None = None, group: str | None = None,
           **argparse_kwargs: Any) -> Any:
    """A config field that is also a command-line flag `--<name>`; `minimum`: the smallest value
    allowed (checked once, in RunConfig); `group`: its heading in --help."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "group": group, **argparse_kwargs})


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to a flag's help, unless there is nothing to show or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, "", False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class FlagParser(argparse.ArgumentParser):
    """argparse for every entry point: a bad flag is a UserError (one line, exit code 2) instead of
    an exit, and flags must be written in full (no abbreviations)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def build_parser(config_cls: type, description: str, prog: str | None = None) -> argparse.ArgumentParser:
    parser = FlagParser(description=description, prog=prog)
    groups: dict[str | None, Any] = {None: parser}
    for spec in dataclasses.fields(config_cls):
        meta = dict(spec.metadata)
        help_text = meta.pop("help", "")
        meta.pop("minimum", None)
        group = meta.pop("group", None)
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        target = groups[group]
        flag = f"--{spec.name}"
        if spec.type in (bool, "bool") and "action" not in meta:
            target.add_argument(flag, action="store_true", default=spec.default, help=help_text)
        elif "action" in meta:
            target.add_argument(flag, default=spec.default, help=help_text, **meta)
        else:
            target.add_argument(flag, type=_python_type(spec.type), default=spec.default, help=help_text, **meta)
    return parser


def parse_config(config_cls: type[ConfigT], argv: Sequence[str] | None, description: str,
                 prog: str | None = None) -> ConfigT:
    """Parse flags into a validated, frozen config (validation lives in the class's __post_init__).

    The defaults may depend on other flags (a method's own defaults, `RunConfig.defaults_for`):
    a first pass reads those flags, a second parses with the defaults they imply.
    """
    parser = build_parser(config_cls, description, prog)
    defaults_for = getattr(config_cls, "defaults_for", None)
    if defaults_for is not None:
        first, _ = parser.parse_known_args(argv)
        parser.set_defaults(**defaults_for(vars(first)))
    return config_cls(**vars(parser.parse_args(argv)))


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_defaults(config: Any) -> dict[str, Any]:
    """Every flag's default value for this config (what a configuration saved before the flag
    existed meant)."""
    defaults = {spec.name: spec.default for spec in dataclasses.fields(config)}
    return {**defaults, **config.defaults_for(config_to_dict(config))}


def format_config(config: Any) -> str:
    rows = config_to_dict(config)
    width = max(len(name) for name in rows)
    return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in rows.items())


def _python_type(annotation: Any) -> type:
    mapping = {"int": int, "float": float, "str": str}
    if isinstance(annotation, str):
        return mapping.get(annotation.split("|")[0].strip(), str)
    return annotation


COUNT_LIMIT = 1_000_000  # epochs, rounds, batch sizes, ...: far above any run, far below what breaks arrays
OWN_LIMITS = frozenset({"seed", "num_threads"})  # whole-number flags checked against limits of their own


def check_ranges(config: Any) -> None:
    """Every number is finite (no nan or inf), every whole number at most COUNT_LIMIT, and every flag
    declared with a `minimum` is at least that."""
    for spec in dataclasses.fields(config):
        minimum = spec.metadata.get("minimum")
        value = getattr(config, spec.name)
        if isinstance(value, float):
            require(math.isfinite(value), f"--{spec.name} must be a finite number, got {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and spec.name not in OWN_LIMITS:
            require(value <= COUNT_LIMIT, f"--{spec.name} must be at most {COUNT_LIMIT}, got {value}")
        if minimum is not None and value is not None:
            require(value >= minimum, f"--{spec.name} must be at least {minimum:g}, got {value}")


def require(condition: bool, message: str) -> None:
    """Raise a UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message)


SEED_LIMIT = 2**32  # numpy's RandomState and the official noise code accept 0 <= seed < 2**32
MAX_THREADS = 1024  # more would only ask the OS for threads it cannot run


@dataclass(frozen=True)
class RunConfig:
    """The flags of both entry points with the same meaning and default. Each entry point declares
    its own official learning rate, weight decay, batch size, epochs and inner rounds."""

    # --- official flags ---
    seed: int = option(1, "random seed (noise, split, initialisation, shuffling, augmentation)")
    model_dir: str = option("model", "folder for the official-style weight files")
    max_outer_loop: int = option(3, "outer rounds (each starts a fresh network)", minimum=1)
    # --- ours ---
    output_dir: str = option("", "run folder (default: runs/ followed by a name made of the settings)")
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
    save_rounds: bool = option(False, "write the examples of every round (their index, labels, the "
                                      "model's predictions, and which were kept) to RUN_DIR/rounds/")
    # differs from the official code: `--eval_batch_size`, default 256
    eval_batch_size: int = option(256, "batch size for validation and extraction (inference only)", minimum=1)
    num_threads: int = option(0, "CPU threads for torch; 0: all usable cores while no other process "
                                 "uses them, fewer while others do (docs/performance.md)")
    no_progress: bool = option(False, "no progress bar even on a terminal")
    tensorboard: bool = option(False, "also write per-epoch metrics as TensorBoard scalars")

    # Flags that may differ when a run is resumed: they change neither the method nor its settings
    # (where they change the last bits of sums, as another machine would: docs/options.md).
    RESUME_NEUTRAL_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "resume", "output_dir", "model_dir", "no_progress", "eval_batch_size", "num_threads",
        "checkpoint_every", "save_rounds", "tensorboard", "compile",
    })

    def __post_init__(self) -> None:
        check_ranges(self)
        require(0 <= self.seed < SEED_LIMIT, f"--seed must be in [0, 2**32), got {self.seed}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")
        require(self.checkpoint_every >= 0, f"--checkpoint_every must be >= 0 seconds, got {self.checkpoint_every}")
        require(0 <= self.num_threads <= MAX_THREADS,
                f"--num_threads must be between 0 (automatic) and {MAX_THREADS}, got {self.num_threads}")

    @classmethod
    def defaults_for(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """Defaults that depend on other flags (e.g. a method's own); none here."""
        return {}

    @property
    def trains(self) -> bool:
        """Whether this invocation trains (main.py --noise_only only writes the noisy labels)."""
        return True

    @property
    def run_name(self) -> str:
        raise NotImplementedError

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.run_name
