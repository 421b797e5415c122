"""One writer per run folder: an advisory lock held for the life of the run (docs/cluster.md).

The lock is a POSIX record lock (`fcntl.lockf`) on RUN_DIR/.lock: the kernel releases it when the
process ends, however it ends (a kill included), and network filesystems that clusters use (NFS,
Lustre and GPFS with locking enabled) honour it across machines. The file also records who holds
it (host, process id, start time, command), so that a second writer is refused with one line that
names the first.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from pathlib import Path
from typing import IO

from utils.errors import UserError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks; one writer per folder is then the user's care
    fcntl = None


class RunLock:
    """Held from `acquire()` until the process ends (or `release()`). `acquire` changes no file that
    exists already; `sign()` then records this process as the holder, once the run goes ahead."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.handle: IO[str] | None = None
        self.created = False  # this process made the lock file
        self.folders_created: list[Path] = []  # ... and these folders for it, deepest first

    def acquire(self) -> "RunLock":
        """Take the lock, or raise a UserError naming the process that holds it."""
        if fcntl is None or self.handle is not None:
            return self
        self.created = not self.path.exists()
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = describe_holder(self.path)
            handle.close()
            raise UserError(f"{self.path.parent} is in use by another run ({holder}); wait for it to end, "
                            f"stop it, or choose another --output_dir") from None
        self.handle = handle
        return self

    @staticmethod
    def holder_if_locked(run_dir: str | Path) -> str | None:
        """Who holds the lock of `run_dir` when a process does (its description), else None; takes
        nothing and creates nothing."""
        path = Path(run_dir) / LOCK_NAME
        if fcntl is None or not path.is_file():
            return None
        with open(path, "a", encoding="utf-8") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return describe_holder(path)
            fcntl.lockf(handle, fcntl.LOCK_UN)
        return None

    def sign(self) -> None:
        """Write who holds the lock (host, process, start, command) into the lock file."""
        if self.handle is None:
            return
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "started": datetime.datetime.now().isoformat(timespec="seconds"),
                                      "command": " ".join(sys.argv)}) + "\n")
        self.handle.flush()

    def release(self, remove: bool = False) -> None:
        """Let go of the lock (closing the file releases it); `remove`: delete the lock file too, if
        this process made it (a run refused before it started leaves nothing behind)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            if remove and self.created:
                self.path.unlink(missing_ok=True)


def describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "its owner is unknown"
    if not isinstance(holder, dict):
        return "its owner is unknown"
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")
