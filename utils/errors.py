"""Errors a user can fix: entry points print them as one line and exit with code 2."""
from __future__ import annotations

import sys


class UserError(Exception):
    """Bad flags, missing or malformed input: the message says what was wrong and what to do."""

    exit_code = 2


class DatasetError(UserError):
    """A dataset, label or index file is missing, truncated or malformed."""


class CheckpointError(UserError):
    """A checkpoint is unreadable or belongs to a different configuration."""


def report(error: UserError) -> int:
    """Print `error` on stderr as one line ("error: ..."); return the exit code for it."""
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return error.exit_code
