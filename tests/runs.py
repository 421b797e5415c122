"""Helpers shared by tests that run main.py: tiny configurations and result comparison."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "main.py"

# A few seconds of Me-Momentum on the bundled digits, with several rounds on both loops.
TINY_DIGITS = ["--dataset", "digits", "--noise_type", "instance", "--noise_rate", "0.4",
               "--n_epoch", "4", "--max_outer_loop", "2", "--max_inner_loop", "3", "--lr", "0.05",
               "--no_progress"]
TIMING_FIELDS = {"seconds", "wall_time_s", "elapsed_s"}


def for_method(args: list[str], method: str) -> list[str]:
    """`args` for main.py --method `method`, without the flags that method never reads (it refuses them)."""
    from utils.methods import METHODS
    unread, kept, skip = {f"--{name}" for name in METHODS[method].unread_flags}, [], False
    for token in args:
        if skip:
            skip = False
        elif token in unread:
            skip = True
        else:
            kept.append(token)
    return kept + ["--method", method]


def run_main(args: list[str], cwd: Path, timeout: float = 300,
             extra_env: dict[str, str] | None = None, script: Path = MAIN) -> subprocess.CompletedProcess:
    """main.py (or `script`, e.g. the main.py of an earlier commit) in a fresh interpreter (one
    thread, so runs are fast and comparable on 2 cores)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(extra_env or {}))
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def without_timing(obj: Any) -> Any:
    """Drop wall-clock fields, which legitimately differ between identical runs."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING_FIELDS}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = json.loads((run_dir / "result.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return result, metrics


def comparable(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result, metrics = read_run(run_dir)
    for key in ("config", "git_commit", "git_dirty", "device", "versions"):
        result.pop(key, None)
    return without_timing(result), without_timing(metrics)


class SimulatedKill(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, no handler sees it."""


def main_main(argv: list[str]) -> int:
    """main.py's main() in this process (imported late: tests may import this module without it)."""
    import main as main_module

    return main_module.main(argv)


def clothing_main(argv: list[str]) -> int:
    """Clothing.py's main() in this process, leaving the test process's signal handlers as they were."""
    import signal
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        return importlib.import_module("Clothing").main(argv)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def uninterrupted(tmp_path, monkeypatch, args, entry=None):
    """The run of `args` (main.py's, or `entry`'s) in tmp_path/reference, as comparable()."""
    folder = tmp_path / "reference"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert (entry or main_main)(args) == 0
    return comparable(folder / "run")


def kill_then_resume(tmp_path, monkeypatch, args, install_kill, entry=None):
    """The run of `args` killed where `install_kill` says, then resumed, in tmp_path/interrupted."""
    entry = entry or main_main
    folder = tmp_path / "interrupted"
    folder.mkdir()
    monkeypatch.chdir(folder)
    with monkeypatch.context() as patch:
        install_kill(patch)
        with pytest.raises(SimulatedKill):
            entry(args)
    assert not (folder / "run" / "result.json").exists()
    assert entry(args + ["--resume", "auto"]) == 0
    return comparable(folder / "run")


def kill_on_call(patch, owner, name, call_number, after=False):
    """Make owner.name raise SimulatedKill on its call_number-th call (before or after it runs)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call_number and not after:
            raise SimulatedKill
        out = original(*args, **kwargs)
        if calls["n"] == call_number and after:
            raise SimulatedKill
        return out

    patch.setattr(owner, name, wrapper)
