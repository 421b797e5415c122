"""Tests for utils/run/preemption.py: which stop a run reports, and when Ctrl-C stops at once."""
from __future__ import annotations

import signal

import pytest

from utils.run.preemption import StopFlag


def deliver(flag: StopFlag, *names: str) -> None:
    for name in names:
        flag._handle(getattr(signal, name), None)


def test_the_first_request_names_the_stop():
    flag = StopFlag()
    assert not flag()
    deliver(flag, "SIGINT", "SIGTERM")  # a terminal's Ctrl-C, then a launcher's SIGTERM
    assert flag() and flag.signal_name == "SIGINT"
    other = StopFlag()
    deliver(other, "SIGTERM", "SIGUSR1", "SIGTERM")
    assert other.signal_name == "SIGTERM"


@pytest.mark.parametrize("before", [(), ("SIGTERM",), ("SIGUSR1", "SIGTERM")])
def test_a_second_ctrl_c_stops_at_once_whatever_came_before(before):
    flag = StopFlag()
    deliver(flag, *before, "SIGINT")
    with pytest.raises(KeyboardInterrupt):
        deliver(flag, "SIGINT")
