"""The files of one run folder (--output_dir), shared by main.py and Clothing.py; the only place
that names them and reads them back.

    config.json     the configuration, written at start
    metrics.jsonl   one JSON object per line: per epoch ("kind": "epoch") and per round ("kind": "round")
    result.json     the final figures (written once, at the end)
    checkpoint.pt   the whole resumable state (every --checkpoint_every seconds, at the end, on a stop)
    best.pt         weights of the best-validation model; latest.pt: of the official "latest" model
    rounds/         with --save_rounds: the extracted examples of every round
    launcher.json   the sweep launcher's record of the last attempt (reproduce.py); run.log its output
    plots/          the run's figures (plot.py, reproduce.py)
"""
from __future__ import annotations

import datetime
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.run.atomic import TEMPORARY_SUFFIX, append_line, atomic_write_bytes, atomic_write_json


class RunFiles:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.config = self.run_dir / "config.json"
        self.metrics = self.run_dir / "metrics.jsonl"
        self.result = self.run_dir / "result.json"
        self.checkpoint = self.run_dir / "checkpoint.pt"
        self.best = self.run_dir / "best.pt"
        self.rounds = self.run_dir / "rounds"

    # What may be in a run folder before its run starts: the sweep launcher's files and the lock.
    BEFORE_THE_RUN = frozenset({"run.log", "launcher.json", ".lock"})

    def files_of_others(self) -> list[str]:
        """Names in the run folder that a starting run would replace or mix with its own."""
        if not self.run_dir.is_dir():
            return []
        stale = set(self.stale_temporaries())
        return [path.name for path in self.run_dir.iterdir() if path.name not in self.BEFORE_THE_RUN
                and path not in stale]

    def refuse_folders_in_place_of_files(self) -> None:
        for path in (self.config, self.metrics, self.result, self.checkpoint, self.best, self.weights("latest")):
            if path.exists() and not path.is_file():
                raise UserError(f"{path} is a folder, not the run's file; remove it or choose another --output_dir")

    def weights(self, which: str) -> Path:
        """latest.pt or best.pt."""
        return self.run_dir / f"{which}.pt"

    def round_file(self, outer: int, inner: int) -> Path:
        return self.rounds / f"outer{outer}_inner{inner}.npz"

    def check_location(self) -> None:
        """The run folder can be a folder: nothing on its path is a file."""
        check_folder(self.run_dir, "--output_dir")

    def create(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def stale_temporaries(self) -> list[Path]:
        """Temporary files an atomic write left when the process was killed in the middle of it."""
        return [path for path in self.run_dir.glob(f".*{TEMPORARY_SUFFIX}") if path.is_file()]

    def remove_stale_temporaries(self) -> list[Path]:
        stale = self.stale_temporaries()
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config, config)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line (checkpoints store the file's size, metrics_size())."""
        append_line(self.metrics, json.dumps(record, sort_keys=False))

    def holds(self, path: Path) -> bool:
        """Whether the file `path` lies in this run folder (a checkpoint of this run, or a copy of one)."""
        return path.resolve().parent == self.run_dir.resolve()

    def bring_record_from(self, run_dir: Path, size: int) -> None:
        """A run moved here from `run_dir` (--resume PATH) brings the record of its epochs so far: the
        first `size` bytes of that folder's metrics.jsonl (start_run checked that it has them), its
        weight files (best.pt, latest.pt; PES on Clothing1M: best_network{k}.pt) and extracted sets (rounds/)."""
        source = RunFiles(run_dir)
        with open(source.metrics, "rb") as handle:
            atomic_write_bytes(self.metrics, handle.read(size))
        weights = [source.weights("best"), source.weights("latest"), *sorted(source.run_dir.glob("best_network*.pt"))]
        for path in (*weights, *sorted(source.rounds.glob("*.npz"))):
            if path.is_file():
                atomic_write_bytes(self.run_dir / path.relative_to(source.run_dir), path.read_bytes())

    def metrics_size(self) -> int:
        return self.metrics.stat().st_size if self.metrics.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        """Drop lines written after the checkpoint we resume from (they will be written again)."""
        if self.metrics.exists() and self.metrics.stat().st_size > size:
            with open(self.metrics, "r+b") as handle:
                handle.truncate(size)
                handle.flush()
                os.fsync(handle.fileno())

    def write_round(self, outer: int, inner: int, arrays: dict[str, np.ndarray]) -> Path:
        """rounds/outer{o}_inner{i}.npz, atomically and once (a resumed run that extracts the same
        round again leaves the file as it is: the same examples, the same model)."""
        path = self.round_file(outer, inner)
        if not path.exists():
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            atomic_write_bytes(path, buffer.getvalue())
        return path

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.result, result)

    # Files of the sweep launcher and the plots, and readers for runs that may be damaged
    # (reproduce.py --summarize, plot.py): they never raise anything but a UserError.

    @property
    def launcher_record(self) -> Path:
        return self.run_dir / "launcher.json"

    @property
    def log(self) -> Path:
        return self.run_dir / "run.log"

    @property
    def plots(self) -> Path:
        return self.run_dir / "plots"

    def read_result(self) -> dict[str, Any] | None:
        """result.json as a dict; None when there is none; a UserError naming it when it is corrupt."""
        return _read_json_object(self.result)

    def read_launcher_record(self) -> dict[str, Any] | None:
        """launcher.json as a dict; None when there is none; a UserError when it is corrupt."""
        return _read_json_object(self.launcher_record)

    def read_config(self) -> dict[str, Any] | None:
        """config.json as a dict; None when there is none; a UserError when it is corrupt."""
        return _read_json_object(self.config)

    def read_metric_records(self) -> list[dict[str, Any]]:
        """metrics.jsonl as a list of records, [] when there is none. A torn last line (a crash
        mid-write) is left out; any other line that is not a JSON object is a UserError."""
        if not self.metrics.is_file():
            return []
        try:
            lines = self.metrics.read_bytes().decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{self.metrics} is unreadable or corrupt ({err})") from err
        records = []
        numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        for position, (number, line) in enumerate(numbered):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as err:
                if position == len(numbered) - 1:
                    break  # the half-written last line a crash can leave
                raise UserError(f"{self.metrics} is corrupt: line {number} is not JSON ({err})") from err
            if not isinstance(record, dict):
                raise UserError(f"{self.metrics} is corrupt: line {number} is not a JSON object")
            records.append(record)
        return records

    def set_aside_result(self) -> Path:
        """Rename a corrupt result.json to result.json.corrupt (kept for inspection, replacing an
        earlier one), so that `--resume auto` runs the run again instead of taking it as finished."""
        target = self.result.with_name(self.result.name + ".corrupt")
        os.replace(self.result, target)
        return target


def _read_json_object(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise UserError(f"{path} is unreadable ({err.strerror})") from err
    except (ValueError, RecursionError) as err:  # empty, truncated, not UTF-8, not JSON
        raise UserError(f"{path} is corrupt (not JSON: {' '.join(str(err).split())[:80]})") from err
    if not isinstance(value, dict):
        raise UserError(f"{path} is corrupt (a JSON {type(value).__name__}, not an object)")
    return value


def check_folder(folder: str | Path, flag: str) -> None:
    """`folder` can be created and written to: nothing on its path is a file, and the deepest folder
    that exists is writable. Checked before anything is created, so a bad path leaves nothing behind."""
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.is_symlink() and not part.exists():
            raise UserError(f"{flag} {folder}: {part} is a link that leads nowhere (or back to itself); choose "
                            f"another {flag}")
        if part.exists():
            if not part.is_dir():
                raise UserError(f"{flag} {folder}: {part} is a file, not a folder; choose another {flag}")
            if not os.access(part, os.W_OK | os.X_OK):
                raise UserError(f"{flag} {folder}: {part} is not writable (read-only filesystem or "
                                f"permissions); choose another {flag}")
            return


def check_file_target(path: str | Path, flag: str) -> None:
    """`path` can be written as a file: it is not a folder or a link (an atomic write would replace the
    link by a file), and its folder can be made."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{flag} {path} is a link; give the path of the file itself ({path.resolve()})")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'noisy_labels.npz'}")
    check_folder(path.parent, flag)


def append_results_log(title: str, config_text: str, seed: int, test_acc: float,
                       log_file: str | Path = "logs/results.txt") -> None:
    """The official text log (docs/outputs.md): config line, then '<time> <title> seed-S, Best Test Acc: A'."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    append_line(log_file, f"\n{now} {config_text}")
    append_line(log_file, f"{now} {title} seed-{seed}, Best Test Acc: {test_acc}")


OWNER_SUFFIX = ".owner.json"


# differs from the official code: one run owns them
def claim_weight_files(owner_file: Path | None, run_dir: Path, moved_from: Path | None = None) -> None:
    """Weight files outside the run folder (--model_dir) belong to one run: `owner_file` beside them
    names it, and another run may not write there while that run's folder exists. A run moved to
    `run_dir` from `moved_from` (--resume PATH) takes over the files of the run it continues."""
    if owner_file is None:
        return
    me = str(Path(run_dir).resolve())
    owner = _read_json_object(owner_file) if owner_file.is_file() else None
    other = owner.get("run_dir") if isinstance(owner, dict) else None
    continued = moved_from is not None and other == str(moved_from.resolve())
    if isinstance(other, str) and other != me and not continued and (Path(other) / "config.json").is_file():
        raise UserError(f"the weight files beside {owner_file} belong to the run in {other}; give this run "
                        f"its own --model_dir (or delete them)")
    if owner is None:  # files of these names that no run of ours wrote: the official code's, another tool's
        stem = owner_file.name[:-len(OWNER_SUFFIX)] if owner_file.name.endswith(OWNER_SUFFIX) else ""
        foreign = sorted(owner_file.parent.glob(f"{stem}_*.hdf5" if stem else "*.hdf5"))
        if foreign:
            raise UserError(f"{foreign[0]} exists and no run of this project wrote it (no {owner_file.name} "
                            f"beside it): move it away, or give this run its own --model_dir")
    if other != me:
        atomic_write_json(owner_file, {"run_dir": me})
