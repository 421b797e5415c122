"""The decisions and pieces of a run's life that the run driver (utils/run/driver.py) puts in order.

    start_run         refuse to overwrite a run without --resume; on --resume auto skip a finished
                      run (unless it was made with other settings: then say so); load and check the
                      checkpoint to resume from. Nothing is created yet.
    open_run_folder   create the folder, remove temporary files a kill left, write config.json, cut
                      metrics.jsonl back to what the checkpoint had seen
    Checkpointer      writes the loop's whole state every --checkpoint_every seconds, at the end and
                      when a stop is requested (the state of the last finished epoch, kept in memory)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from utils.errors import UserError
from utils.run.checkpoint import config_differences, load_compatible_checkpoint, resume_path, save_checkpoint
from utils.run.config import RunConfig, config_defaults, config_to_dict
from utils.run.files import RunFiles, check_folder


@dataclass(frozen=True)
class RunStart:
    """What start_run decided: a fresh run, a resumed one (checkpoint) or one that has finished."""

    checkpoint: dict[str, Any] | None = None
    checkpoint_path: Path | None = None
    finished: bool = False


def start_run(config: RunConfig, files: RunFiles) -> RunStart:
    """Decide how this run starts, before anything is created (so bad input leaves nothing behind)."""
    files.check_location()
    check_folder(config.model_dir, "--model_dir")
    check_folder("logs", "the official log folder")
    if config.resume == "auto" and files.result.exists():
        saved = files.read_result().get("config")
        differences = config_differences(saved, config_to_dict(config), config.RESUME_NEUTRAL_FIELDS,
                                         config_defaults(config))
        if differences:
            raise UserError(f"{files.run_dir} holds a finished run made with other settings ("
                            f"{'; '.join(differences)}); choose another --output_dir for these settings")
        return RunStart(finished=True)
    if not config.resume and (files.checkpoint.exists() or files.result.exists()):
        raise UserError(f"{files.run_dir} already holds a run; pass --resume auto to continue (or "
                        f"skip) it, or choose another --output_dir, or delete the folder")
    path = resume_path(config.resume, files.checkpoint)
    if path is None:
        return RunStart()
    checkpoint = load_compatible_checkpoint(path, config_to_dict(config), config.RESUME_NEUTRAL_FIELDS,
                                            config_defaults(config))
    return RunStart(checkpoint, path)


def open_run_folder(config: RunConfig, files: RunFiles, start: RunStart) -> None:
    """Create the run folder (main process only), ready for a fresh or a resumed run."""
    files.create()
    files.remove_stale_temporaries()
    files.write_config(config_to_dict(config))
    files.truncate_metrics(start.checkpoint["metrics_size"] if start.checkpoint else 0)


class Checkpointer:
    """Writes the whole resumable state at a bounded cost (--checkpoint_every seconds; 0: every epoch).

    `save_soon(state, live)` at the end of every epoch (or round) writes `state` when the interval
    has passed and otherwise keeps it in memory, with a CPU copy of its `live` entries (those that
    training goes on changing in place: model and optimizer), which `flush()` writes at the end of
    the run or when a stop is requested. A resumed run repeats the epochs after the last written checkpoint,
    which is exact because everything they draw is in that checkpoint.
    """

    def __init__(self, path: Path, every_s: float, enabled: bool = True,
                 clock: Callable[[], float] | None = None) -> None:
        self.path = path
        self.every_s = every_s
        self.enabled = enabled
        self.clock = clock or time.monotonic
        self.last_write = self.clock()
        self.pending: dict[str, Any] | None = None
        self.writes = 0

    def save_soon(self, state: dict[str, Any], live: Iterable[str] = (),
                  on_write: Callable[[], None] | None = None) -> bool:
        """Write `state` now if the interval has passed (then call `on_write`); returns whether it wrote."""
        if not self.enabled:
            return False
        if self.every_s <= 0 or self.clock() - self.last_write >= self.every_s:
            self._write(state)
            if on_write is not None:
                on_write()
            return True
        live = set(live)
        self.pending = {key: cpu_copy(value) if key in live else value for key, value in state.items()}
        return False

    def write_now(self, state: dict[str, Any]) -> None:
        if self.enabled:
            self._write(state)

    def flush(self) -> None:
        """Write the state kept in memory, if any is newer than the file."""
        if self.enabled and self.pending is not None:
            self._write(self.pending)

    def _write(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.path, state)
        self.pending = None
        self.last_write = self.clock()
        self.writes += 1


def cpu_copy(value: Any) -> Any:
    """A deep copy whose tensors live on the CPU (the state of a finished epoch, kept in memory)."""
    if isinstance(value, torch.Tensor):
        # clone() is ~10x cheaper than .to("cpu", copy=True) for a CPU tensor; .to() copies a GPU one
        return value.detach().clone() if value.device.type == "cpu" else value.detach().to("cpu")
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    return value
