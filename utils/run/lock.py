"""One writer per run folder: an advisory lock held for the life of the run (docs/cluster.md).

The lock is a POSIX record lock (`fcntl.lockf`) on RUN_DIR/.lock: the kernel releases it when the
process ends, however it ends (a kill included), and network filesystems that clusters use (NFS,
Lustre and GPFS with locking enabled) honour it across machines. The file also records who holds
it (host, process id, start time, command), so that a second writer is refused with one line that
names the first.
"""
from __future__ import annotations

import datetime
import errno
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
        refuse_foreign_lock_file(self.path)
        self.created = not self.path.exists()
        # O_NOFOLLOW: a link put in place of the lock file is never followed (nor its target truncated)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        handle = os.fdopen(descriptor, "a+", encoding="utf-8")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EACCES, errno.EAGAIN):  # ENOLCK, EOPNOTSUPP...: no locks here
                raise UserError(f"{self.path.parent}: this filesystem does not support locks ({error.strerror}); "
                                f"mount it with locking enabled, or choose an --output_dir on a filesystem that "
                                f"has them (a local disk)") from None
            raise UserError(f"{self.path.parent} is in use by another run ({describe_holder(self.path)}); wait "
                            f"for it to end, stop it, or choose another --output_dir") from None
        self.handle = handle
        return self

    @staticmethod
    def holder_if_locked(run_dir: str | Path) -> str | None:
        """Who holds the lock of `run_dir` when a process does (its description), else None; takes
        nothing and creates nothing."""
        path = Path(run_dir) / LOCK_NAME
        if fcntl is None or path.is_symlink() or not path.is_file():
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


def refuse_foreign_lock_file(path: Path) -> None:
    """A `.lock` that is a link, not a file, or a file that is not a lock record of ours (another
    tool's) is refused, untouched: taking it would follow the link or overwrite the file."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_file():
        what = "a link" if path.is_symlink() else "not a file"
    else:
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and set(record) <= {"host", "pid", "started", "command"}:
            return
        what = "a file that is not a lock record of this project"
    raise UserError(f"{path} is {what}; this run would have to replace it to lock its folder: move it away, "
                    f"or choose another --output_dir")


def describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "its owner is unknown"
    if not isinstance(holder, dict):
        return "its owner is unknown"
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")
