"""Where a result came from: git commit, library versions, device."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import torch


REPO = Path(__file__).resolve().parents[2]  # this file is utils/run/provenance.py


def git_state(repo_dir: str | Path = REPO) -> tuple[str | None, bool | None]:
    """(the commit of the code, whether its tracked files had uncommitted changes); None where unknown."""
    commit = _git(repo_dir, "rev-parse", "HEAD")
    if not commit:
        return None, None
    # --no-optional-locks: a run never takes git's index lock (it would block the user's own git commands)
    changes = _git(repo_dir, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return commit, None if changes is None else bool(changes)


def _git(repo_dir: str | Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)
