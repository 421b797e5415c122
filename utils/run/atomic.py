"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every checkpoint, index and result file of the project is written through these functions
(write to a temporary file in the same folder, flush, fsync, rename over the target).
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

TEMPORARY_SUFFIX = ".tmp"  # `.<name>.<random>.tmp` beside the target; a kill can leave one behind


def _read_umask() -> int:
    # Reading the umask means setting it for a moment; done once, at import, so that no file that
    # another thread (a DataLoader's, a launcher's) creates meanwhile gets mode 0o666.
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    """Write `payload` to `path` atomically; on any failure (full disk included) the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would, so
        # colleagues on a shared filesystem can read results as they can read other files.
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """torch.save into memory first, so a failed save never touches the file on disk."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def append_line(path: str | Path, line: str) -> None:
    """Append one line in a single write. Logs need no fsync: a resumed run truncates
    metrics.jsonl to the size its checkpoint recorded and writes the rest again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()


def _fsync_directory(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk (not possible on every OS).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
