"""Stop requests: SLURM sends SIGUSR1 (with --signal) or SIGTERM before it kills a job; a person
presses Ctrl-C (SIGINT).

The handler only records the request; the run driver checks it between batches, abandons the
epoch in progress, writes the state of the last finished epoch and ends with StopRequested
(utils/errors.py): exit code 75, or 130 for Ctrl-C, and `--resume auto` continues. A second Ctrl-C
interrupts at once (the last written checkpoint stays).
"""
from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT once installed (by the run driver, once per process)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def install(self) -> "StopFlag":
        for name in STOP_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.signal_name == "SIGINT":
            raise KeyboardInterrupt  # asked twice: stop now, without the orderly save
        self.signal_name = name

    def __call__(self) -> bool:
        return self.signal_name is not None
