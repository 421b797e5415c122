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
from typing import Any, Callable

import torch

from utils.errors import UserError
from utils.run.checkpoint import config_differences, load_compatible_checkpoint, resume_path, save_checkpoint
from utils.run.config import RunConfig, config_to_dict
from utils.run.files import RunFiles, check_folder
from utils.run.lock import RunLock


@dataclass(frozen=True)
class RunStart:
    """What start_run decided: a fresh run, a resumed one (checkpoint) or one that has finished."""

    checkpoint: dict[str, Any] | None = None
    checkpoint_path: Path | None = None
    finished: bool = False

    def moved_from(self, files: RunFiles) -> Path | None:
        """The folder of the run this one continues elsewhere (--resume PATH of another folder)."""
        if self.checkpoint_path is None or files.holds(self.checkpoint_path):
            return None
        return self.checkpoint_path.resolve().parent


def start_run(config: RunConfig, files: RunFiles, owner: bool = True) -> RunStart:
    """Decide how this run starts, before anything is written (so bad input leaves nothing behind).
    `owner`: this process writes the folder (under torchrun only rank 0, which may already be writing
    it when the others look: they only read the checkpoint)."""
    files.check_location()
    check_folder(config.model_dir, "--model_dir")
    check_folder("logs", "the official log folder")
    files.refuse_folders_in_place_of_files()
    if config.resume == "auto" and files.result.exists():
        return finished_run(config, files)
    if not config.resume and (files.checkpoint.exists() or files.result.exists()):
        raise UserError(f"{files.run_dir} already holds a run; pass --resume auto to continue (or "
                        f"skip) it, or choose another --output_dir, or delete the folder")
    path = resume_path(config.resume, files.checkpoint)
    if path is None:
        if owner:
            refuse_files_of_another_run(config, files)
        return RunStart()
    checkpoint = load_compatible_checkpoint(path, config)
    if owner and not files.holds(path):
        refuse_files_before_a_moved_run(path, files)
        check_moved_run_is_stopped(path)
    record = RunFiles(path.resolve().parent)  # the folder whose metrics.jsonl the checkpoint has seen
    if owner and checkpoint["header"]["metrics_size"] > record.metrics_size():
        raise UserError(f"{record.metrics} holds less than the {checkpoint['header']['metrics_size']} bytes the checkpoint "
                        f"{path} has seen written (deleted or cut?); restore it, or start the run again in "
                        f"another --output_dir")
    return RunStart(checkpoint, path)


def finished_run(config: RunConfig, files: RunFiles) -> RunStart:
    """--resume auto on a folder with a result.json: finished, if it is a result of these settings."""
    result = files.read_result()
    if not isinstance(result.get("config"), dict) or not isinstance(result.get("test_acc"), (int, float)):
        raise UserError(f"{files.result} is not a result of this project (no configuration or test accuracy); "
                        f"move it away to run here, or choose another --output_dir")
    differences = config_differences(result["config"], config)
    if differences:
        raise UserError(f"{files.run_dir} holds a finished run made with other settings ("
                        f"{'; '.join(differences)}); choose another --output_dir for these settings")
    return RunStart(finished=True)


def refuse_files_of_another_run(config: RunConfig, files: RunFiles) -> None:
    """A run starting afresh owns its folder: files there that no run of these settings left behind
    (another tool's, another run's) are never replaced."""
    others = files.files_of_others()
    if not others:
        return
    saved = files.read_config() if files.config.is_file() else None
    ours = saved is not None and not config_differences(saved, config)
    if not (config.resume == "auto" and ours):
        listed = ", ".join(sorted(others)[:5])
        raise UserError(f"{files.run_dir} holds files this run would replace ({listed}); choose another "
                        f"--output_dir, or delete them (a run of the same settings that was stopped before "
                        f"its first checkpoint continues with --resume auto)")


def refuse_files_before_a_moved_run(checkpoint: Path, files: RunFiles) -> None:
    """--resume PATH with a checkpoint of another folder continues that run in --output_dir, which
    must hold no run of its own to be cut back or mixed with it."""
    others = files.files_of_others()
    if files.checkpoint.is_file():  # e.g. the same command again, after the run went on here
        raise UserError(f"--resume {checkpoint} continues a run of another folder in {files.run_dir}, which holds "
                        f"a run of its own; continue that one with --output_dir {files.run_dir} --resume auto, "
                        f"or choose an empty --output_dir")
    if others:
        raise UserError(f"--resume {checkpoint} continues a run of another folder in {files.run_dir}, which "
                        f"holds files of its own ({', '.join(sorted(others)[:5])}); choose an empty --output_dir")


def check_moved_run_is_stopped(checkpoint: Path) -> None:
    """The run a moved run continues must have stopped: both would write its weight files."""
    holder = RunLock.holder_if_locked(checkpoint.resolve().parent)
    if holder is not None:
        raise UserError(f"--resume {checkpoint}: the run in {checkpoint.resolve().parent} is still going "
                        f"({holder}); stop it first, or wait for it to end")


def lock_run_folder(files: RunFiles) -> RunLock:
    """Create the run folder and take its lock (one writer per folder), or refuse naming the holder.
    Changes no file that exists already; `release_refused` undoes it if the run is then refused."""
    files.check_location()
    missing = [folder for folder in (files.run_dir, *files.run_dir.parents) if not folder.exists()]
    files.create()
    lock = RunLock(files.run_dir)
    lock.folders_created = missing  # deepest first
    try:
        return lock.acquire()
    except UserError:
        release_refused(lock)
        raise


def release_refused(lock: RunLock) -> None:
    """A run refused before it started leaves nothing behind: its lock file and a folder it made."""
    lock.release(remove=True)
    for folder in lock.folders_created:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return


def open_run_folder(config: RunConfig, files: RunFiles, start: RunStart) -> None:
    """Create the run folder (main process only), ready for a fresh or a resumed run."""
    files.create()
    files.remove_stale_temporaries()
    files.write_config(config_to_dict(config))
    moved_from = start.moved_from(files)
    if moved_from is not None:
        files.bring_record_from(moved_from, start.checkpoint["header"]["metrics_size"])
    files.truncate_metrics(start.checkpoint["header"]["metrics_size"] if start.checkpoint else 0)


class Checkpointer:
    """Writes the whole resumable state at a bounded cost (--checkpoint_every seconds; 0: every epoch).

    `save_soon(state)` at the end of every epoch (or round) writes `state` when the interval has
    passed and otherwise keeps a CPU copy of the whole of it in memory (training goes on changing
    networks and optimizers in place, and no method has to say which of its entries it changes),
    which `flush()` writes at the end of the run or when a stop is requested. A resumed run repeats the epochs after the last written checkpoint,
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

    def save_soon(self, state: dict[str, Any], on_write: Callable[[], None] | None = None) -> bool:
        """Write `state` now if the interval has passed (then call `on_write`); returns whether it wrote."""
        if not self.enabled:
            return False
        if self.every_s <= 0 or self.clock() - self.last_write >= self.every_s:
            self._write(state)
            if on_write is not None:
                on_write()
            return True
        self.pending = cpu_copy(state)
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
