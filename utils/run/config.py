"""Run configuration: one frozen dataclass per entry point is the source of truth.

The argparse parser is built from the dataclass fields (default, help text, choices), the
parsed config is validated once, printed at start, saved as config.json and inside every
checkpoint, and never mutated afterwards.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field
from typing import Any, Sequence, TypeVar

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
        if meta.pop("hidden", False):
            continue
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


