"""Stop requests: SLURM sends SIGUSR1 (with --signal) or SIGTERM before it kills a job; a person
presses Ctrl-C (SIGINT).

The handler only records the request; the run driver checks it between batches, abandons the
epoch in progress, writes the state of the last finished epoch and ends with StopRequested
(utils/errors.py): exit code 75, or 130 for Ctrl-C, and `--resume auto` continues. A second Ctrl-C
interrupts at once (the last written checkpoint stays).
"""
from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any, Callable

from utils.errors import StopRequested

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


def install_stop_handlers(handler: Callable[[int, FrameType | None], Any]) -> dict[int, Any]:
    """`handler` answers every stop signal this platform has; returns the handlers it replaced.
    Off the main thread signals are not ours to handle, and nothing is installed."""
    previous: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            number = getattr(signal, name)
            try:
                previous[number] = signal.signal(number, handler)
            except ValueError:  # not the main thread
                break
    return previous


def stop_at_once_before_the_run() -> None:
    """From an entry point's first instruction until a run installs its StopFlag: a stop request ends
    the process at once, with one line and the documented exit code (every file is written
    atomically, so nothing is left half-written)."""
    install_stop_handlers(_exit_at_once)


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    print(f"stopped ({name}): nothing is left half-written (every file is written whole or not at all); "
          f"run the same command again", file=sys.stderr, flush=True)
    os._exit(StopRequested(signal_name=name).exit_code)  # at once, even in the middle of an import


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT once installed (by the run driver, once per process)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.interrupted = False  # a Ctrl-C came: a second one stops at once

    def install(self) -> "StopFlag":
        install_stop_handlers(self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT":
            if self.interrupted:
                raise KeyboardInterrupt  # Ctrl-C twice: stop now, without the orderly save
            self.interrupted = True
        if self.signal_name is None:  # the first request names the stop (and its exit code)
            self.signal_name = name

    def __call__(self) -> bool:
        return self.signal_name is not None
