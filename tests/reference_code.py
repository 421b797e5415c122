"""The promise "this change moves no number", kept on any machine.

A float trajectory recorded on one CPU does not replay bit for bit on another: vectorised kernels
(ATen's, oneDNN's, the BLAS's) pick the widest instructions the CPU has and sum in another order,
and early stopping turns a last-bit difference into another run. So the numbers of today's code are
compared with those of the *code* of an earlier commit, taken from git history and run on this
machine, with the same flags, threads and environment: both sides then use the same kernels, and
any difference is a change of behaviour.
"""
from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def reference_tree(commit: str, into: Path) -> Path:
    """The files of `commit` written under `into` (with `git archive`; this checkout is not touched).

    Skips the test, saying why, where the history is not available (a shallow clone, an archive).
    """
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                                 capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"git is not available to fetch the reference code of commit {commit} ({error})")
    if archive.returncode != 0:
        pytest.skip(f"commit {commit} is not in this checkout's history (a shallow clone or an "
                    f"archive?); fetch the full history to compare with it: "
                    f"{archive.stderr.decode(errors='replace').strip()}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into
