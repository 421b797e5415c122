"""Preemption: SLURM sends SIGUSR1 (with --signal) or SIGTERM before it kills a job.

The handler only records the request; the training loop checks it between batches, abandons
the epoch in progress (the checkpoint of the previous epoch is intact on disk) and exits with
PREEMPTED_EXIT_CODE, so a requeued job resumes with --resume auto.
"""
from __future__ import annotations

import signal
from types import FrameType

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"
NON_FINITE_EXIT_CODE = 3


class StopFlag:
    """Set by SIGTERM/SIGUSR1; installed once per process by the entry point."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def install(self) -> "StopFlag":
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is not None:
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def __call__(self) -> bool:
        return self.signal_name is not None


class Preempted(Exception):
    """The run stopped on a signal after saving; the entry point exits with PREEMPTED_EXIT_CODE."""


class NonFiniteLoss(Exception):
    """Training produced NaN/inf; the message names the epoch and the last good checkpoint."""
