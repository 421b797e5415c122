"""How a run ends when it does not simply finish: errors a user can fix, and every exit code.

Entry points print a UserError as one line ("error: ...") and exit with its code (2).
"""
from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_USER_ERROR = 2        # bad flags, missing or malformed input: the message says what to do
EXIT_NON_FINITE = 3        # the loss became NaN or infinite
EXIT_PREEMPTED = 75        # EX_TEMPFAIL: stopped on SIGTERM/SIGUSR1 after saving; resume later
EXIT_INTERRUPTED = 130     # stopped by Ctrl-C (SIGINT) after saving; resume later


class UserError(Exception):
    """Bad flags, missing or malformed input: the message says what was wrong and what to do."""

    exit_code = EXIT_USER_ERROR


class DatasetError(UserError):
    """A dataset, label or index file is missing, truncated or malformed."""


class CheckpointError(UserError):
    """A checkpoint is unreadable or belongs to a different configuration."""


def report(error: UserError) -> int:
    """Print `error` on stderr as one line ("error: ..."); return the exit code for it."""
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return error.exit_code
