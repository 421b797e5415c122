"""utils/run/threads.py: torch's thread count follows the CPUs other processes leave free."""
from __future__ import annotations

import pytest
import torch

from utils.run.threads import ThreadGovernor, busy_seconds, threads_left


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class Machine:
    """A clock and CPU-time counters that a test advances: what /proc/stat and os.times would say."""

    def __init__(self) -> None:
        self.now = self.busy = self.own = 0.0

    def run(self, seconds: float, ours: float, others: float) -> None:
        """`seconds` pass; this process uses `ours` cores, the other processes `others` cores."""
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds

    def governor(self, cpus: int, fixed: int = 0) -> ThreadGovernor:
        governor = ThreadGovernor(fixed, clock=lambda: self.now, busy=lambda _: self.busy, own=lambda: self.own)
        governor.cpus = list(range(cpus))
        if not fixed:
            governor.threads = cpus
        return governor


def test_alone_every_core_shared_one_each_and_back():
    machine = Machine()
    governor = machine.governor(cpus=2)
    machine.run(1.0, ours=2.0, others=0.1)  # a little background work costs no core
    governor.poll()
    assert governor.threads == 2 and torch.get_num_threads() == 2
    machine.run(1.0, ours=1.0, others=1.0)  # another run started
    governor.poll()
    assert governor.threads == 1 and torch.get_num_threads() == 1
    machine.run(0.5, ours=1.0, others=0.0)  # measured at most once a second
    governor.poll()
    assert governor.threads == 1
    machine.run(1.0, ours=1.0, others=0.0)  # it finished
    governor.poll()
    assert governor.threads == 2


def test_a_fixed_count_is_kept_whatever_the_load(monkeypatch):
    machine = Machine()
    governor = machine.governor(cpus=2, fixed=2)
    machine.run(2.0, ours=1.0, others=1.5)
    governor.poll()
    assert governor.threads == 2 and "fixed" in governor.describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ThreadGovernor().threads == 1 and not ThreadGovernor().adaptive


def test_omp_num_threads_above_the_usable_cpus_is_capped_there(monkeypatch):
    from utils.run.threads import usable_cpus
    monkeypatch.setenv("OMP_NUM_THREADS", "3000")
    governor = ThreadGovernor()
    assert governor.threads == len(usable_cpus()) == torch.get_num_threads() and not governor.adaptive
    assert "OMP_NUM_THREADS=3000 capped at the usable CPUs" in governor.describe()
    assert ThreadGovernor(fixed=3).threads == 3  # --num_threads is the user's own choice, kept


def test_threads_left_rounds_small_background_work_away():
    assert threads_left(8, 0.0) == 8 and threads_left(8, 0.45) == 8 and threads_left(8, 0.6) == 7
    assert threads_left(2, 1.9) == 1 and threads_left(2, 5.0) == 1


def test_busy_seconds_reads_the_cpus_lines_of_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  300 0 100 900 50 0 0 0 0 0\n"
                    "cpu0 100 0 50 400 25 0 0 0 0 0\n"
                    "cpu1 200 0 50 500 25 0 0 0 0 0\n")
    ticks = {0: 150, 1: 250}
    from utils.run.threads import CLOCK_TICKS
    assert busy_seconds([1], stat) == pytest.approx(ticks[1] / CLOCK_TICKS)
    assert busy_seconds([0, 1], stat) == pytest.approx(400 / CLOCK_TICKS)
    assert busy_seconds([0], tmp_path / "absent") is None
