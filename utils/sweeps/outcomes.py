"""What a run folder says about its run: its state for the launchers (new, resumable, finished,
corrupt) and its outcome for the tables (the numbers of result.json, or why there are none).

A result.json that cannot be read, is not a JSON object, or holds a non-number where a number
belongs is *corrupt*: the tables report it as such and the next sweep sets it aside
(result.json.corrupt) and runs the run again, instead of taking it as finished forever.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from utils.errors import UserError
from utils.run.files import RunFiles
from utils.sweeps.grid import Setting, has_real_noise

STATUSES = ("finished", "corrupt", "failed", "preempted", "unfinished", "missing")
ACCURACY_KEYS = ("test_acc", "best_val_acc", "test_acc_last", "test_acc_official")  # percentages
REQUIRED_KEYS = ("test_acc",)
BEST_AT_KEYS = ("outer", "inner", "epoch")


@dataclass(frozen=True)
class RunOutcome:
    """One run of a sweep as its folder tells it: the numbers when it finished, else the reason."""

    name: str
    setting_key: str
    method: str
    seed: int
    status: str  # one of STATUSES
    test_acc: float | None = None           # reported: test accuracy of the best-validation model
    best_val_acc: float | None = None
    test_acc_last: float | None = None      # test accuracy of the model at the run's last epoch
    test_acc_official: float | None = None  # the official per-batch-mean test accuracy
    best_at: tuple[int, int, int] | None = None  # (outer, inner, epoch) of the best-validation model
    last_precision: float | None = None
    exit_code: int | None = None
    problem: str = ""  # why a corrupt run gave no number

    @property
    def reason(self) -> str:
        """Why the run gave no number, for the table's notes ('' when it did)."""
        if self.status == "corrupt":
            return f"corrupt: {self.problem}"
        if self.status in ("failed", "preempted") and self.exit_code is not None:
            return f"{self.status} (exit {self.exit_code})"
        if self.status == "missing":
            return "missing (not started)"
        return "" if self.status == "finished" else self.status


# --------------------------------------------------------------------------- result.json


def check_result(result: dict[str, Any]) -> str | None:
    """What is wrong with the figures of a result.json (None: nothing). Numbers must be finite
    percentages; optional keys may be absent or null (files older than the key)."""
    for key in ACCURACY_KEYS:
        value = result.get(key)
        if value is None and key not in REQUIRED_KEYS:
            continue
        if key not in result:
            return f"it has no {key}"
        if _percentage(value) is None:
            return f"{key} is {_short(value)}, not a percentage"
    best_at = result.get("best_at")
    if best_at is not None and _best_at(best_at) is None:
        return f"best_at is {_short(best_at)}, not {{outer, inner, epoch}} counts"
    rounds = result.get("rounds")
    if rounds is not None:
        if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
            return "rounds is not a list of objects"
        for record in rounds:
            precision = record.get("precision")
            if precision is not None and _percentage(precision) is None:
                return f"a round's precision is {_short(precision)}, not a percentage"
    return None


def read_checked_result(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a good result.json, (None, problem) for a corrupt one, (None, None) without one."""
    files = RunFiles(run_dir)
    try:
        result = files.read_result()
    except UserError as error:
        return None, _relative(str(error), files.run_dir)
    if result is None:
        return None, None
    problem = check_result(result)
    if problem is not None:
        return None, f"{files.result.name}: {problem}"
    return result, None


def last_round_precision(result: dict[str, Any]) -> float | None:
    """Label precision (%) of the confident set of the last round that reported one."""
    for record in reversed(result.get("rounds") or []):
        precision = _percentage(record.get("precision"))
        if precision is not None:
            return precision
    return None


# --------------------------------------------------------------------------- states and outcomes


def run_state(run_dir: Path) -> str:
    """'finished' (a good result.json), 'corrupt' (a bad one), 'resumable' (checkpoint.pt) or 'new'."""
    files = RunFiles(run_dir)
    if files.result.exists():
        result, _ = read_checked_result(files.run_dir)
        return "finished" if result is not None else "corrupt"
    if files.checkpoint.is_file():
        return "resumable"
    return "new"


def set_aside_corrupt_result(run_dir: Path) -> Path | None:
    """The documented repair: rename a corrupt result.json to result.json.corrupt so that the run
    is run again (resumed from its checkpoint if it has one); returns the new path."""
    if run_state(run_dir) != "corrupt":
        return None
    return RunFiles(run_dir).set_aside_result()


def read_launcher_record(run_dir: Path) -> dict[str, Any] | None:
    """The launcher's record of the last attempt; None when absent or unreadable (it is only a hint)."""
    try:
        return RunFiles(run_dir).read_launcher_record()
    except UserError:
        return None


def read_outcome(run_dir: Path, setting_key: str, method: str, seed: int) -> RunOutcome:
    """The state of one run folder: result.json, else launcher.json's verdict, else checkpoint."""
    run_dir = Path(run_dir)
    base = dict(name=run_dir.name, setting_key=setting_key, method=method, seed=seed)
    result, problem = read_checked_result(run_dir)
    if result is not None:
        problem = other_setting(result, setting_key, method, seed)
    if problem is not None:
        return RunOutcome(**base, status="corrupt", problem=problem)
    if result is not None:
        return RunOutcome(**base, status="finished", test_acc=_percentage(result.get("test_acc")),
                          best_val_acc=_percentage(result.get("best_val_acc")),
                          test_acc_last=_percentage(result.get("test_acc_last")),
                          test_acc_official=_percentage(result.get("test_acc_official")),
                          best_at=_best_at(result.get("best_at")),
                          last_precision=last_round_precision(result))
    launcher = read_launcher_record(run_dir) or {}
    if launcher.get("status") in ("failed", "preempted"):
        exit_code = launcher.get("exit_code")
        return RunOutcome(**base, status=launcher["status"],
                          exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool)
                          else None)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return RunOutcome(**base, status="unfinished")
    return RunOutcome(**base, status="missing")


def other_setting(result: dict[str, Any], setting_key: str, method: str, seed: int) -> str | None:
    """What differs between the run a result.json describes and the run its folder stands for."""
    dataset, noise_type = str(result.get("dataset")), str(result.get("noise_type"))
    rate = None if has_real_noise(dataset, noise_type) else result.get("noise_rate")
    key = (Setting(dataset, noise_type, rate).key if rate is None or isinstance(rate, (int, float))
           else f"{dataset}-{noise_type}-{rate}")
    made = (key, result.get("method", method), result.get("seed", seed))
    if "dataset" not in result or made == (setting_key, method, seed):
        return None
    return (f"result.json is of {made[0]} seed {made[2]} {made[1]}, not of this folder's setting "
            f"({setting_key} seed {seed} {method})")


# --------------------------------------------------------------------------- helpers


def _percentage(value: Any) -> float | None:
    """A number in [0, 100] as a float, else None (null, text, NaN, a huge int, ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and 0.0 <= number <= 100.0 else None


def _best_at(value: Any) -> tuple[int, int, int] | None:
    if not isinstance(value, dict):
        return None
    counts = [value.get(key) for key in BEST_AT_KEYS]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return None
    return tuple(counts)  # type: ignore[return-value]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _relative(message: str, run_dir: Path) -> str:
    """A RunFiles message without the run folder's path (the note names the run already)."""
    return message.replace(f"{run_dir}/", "")


def refuse_finished_runs_of_other_settings(jobs: Sequence[Any]) -> None:
    """A finished run is skipped by a sweep; when it ran with other settings than the sweep's command
    now gives it (other --extra flags, an edited grid), skipping would table the old flags' result
    as the new one's: refuse, naming the run and the differences."""
    # imported here: only a sweep with finished runs needs the entry points' configurations (and torch)
    from utils.clothing_config import ClothingConfig
    from utils.run.checkpoint import config_differences
    from utils.run.config import parse_config
    from utils.train_config import TrainConfig

    for job in jobs:
        if run_state(job.run_dir) != "finished":
            continue
        try:
            saved = json.loads(RunFiles(job.run_dir).config.read_text())
        except (OSError, ValueError):
            continue  # a result without its config.json: nothing to compare; the table notes the run
        config_class = ClothingConfig if job.command[1].endswith("Clothing.py") else TrainConfig
        differences = config_differences(saved, parse_config(config_class, list(job.command[2:]), ""))
        if differences:
            raise UserError(f"{job.name} finished with other settings than this sweep now gives it "
                            f"({'; '.join(differences)}): its result would be tabled as this command's; run with "
                            f"the flags it ran with, or give this sweep another --out")
