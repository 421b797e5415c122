"""How many CPU threads torch uses: all the cores this process may use while it has them to itself,
its share when other work runs on them (docs/performance.md, "Threads").

torch's OpenMP threads wait for each other at the end of every parallel operation by spinning. When
another busy process shares the cores, a spinning thread burns the time slice its partner needs,
and a small network (LeNet at batch 128) slows down several-fold instead of twofold. So, unless
the user fixes the count (`--num_threads N`, or OMP_NUM_THREADS), `ThreadGovernor` measures every
second or so how much of this process's CPUs the *other* processes used, and sets torch's thread
count to what is left (at least one). Alone on the machine, that is every core, as torch's own
default; two such runs on two cores settle at one thread each.

The count changes how floating-point sums are split between threads, so the last bits of a run's
numbers depend on it; a run that must repeat bit for bit fixes it with --num_threads.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch

PROC_STAT = Path("/proc/stat")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MEASURE_EVERY_S = 1.0   # long enough for /proc/stat's 10 ms ticks to mean something
HALF_A_CORE = 0.5       # a core counts as taken when the others use more than half of it


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: taskset, cgroups, SLURM's --cpus-per-task)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def busy_seconds(cpus: list[int], stat_file: Path = PROC_STAT) -> float | None:
    """CPU seconds spent busy on `cpus` since boot, by everyone (None where /proc/stat is absent)."""
    try:
        lines = stat_file.read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{n}" for n in cpus}
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
            values = [int(value) for value in fields[1:9]]
            ticks += sum(values) - values[3] - values[4]
    return ticks / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


def threads_left(num_cpus: int, others_busy: float) -> int:
    """Cores the other processes leave to us (a core they use less than half of is ours); at least one."""
    return max(1, min(num_cpus, int(num_cpus - others_busy + HALF_A_CORE)))


class ThreadGovernor:
    """Keeps torch's thread count at the CPUs the other processes leave free (see the module doc).

    `poll()` is cheap (a clock read) and may be called after every batch; it measures and adjusts
    at most every MEASURE_EVERY_S seconds. A fixed count disables it.
    """

    def __init__(self, fixed: int = 0, clock: Callable[[], float] = time.monotonic,
                 busy: Callable[[list[int]], float | None] = busy_seconds,
                 own: Callable[[], float] = own_cpu_seconds) -> None:
        self.cpus = usable_cpus()
        self.fixed_by_flag = bool(fixed)
        self.clock, self.busy, self.own = clock, busy, own
        # OMP_NUM_THREADS above the usable CPUs only oversubscribes them (3000 threads on 2 cores: a
        # 400x slower epoch): it is capped there, as a count that stays fixed on this machine
        self.environment = _threads_from_environment()
        self.fixed = fixed or min(self.environment, len(self.cpus))
        self.adaptive = not self.fixed and self.busy(self.cpus) is not None
        self.threads = self.fixed or len(self.cpus)
        torch.set_num_threads(self.threads)
        self._mark()

    def describe(self) -> str:
        if self.fixed:
            capped = not self.fixed_by_flag and self.environment > self.fixed
            return f"{self.threads} (fixed" + (f"; OMP_NUM_THREADS={self.environment} capped at the usable CPUs)"
                                               if capped else ")")
        if not self.adaptive:
            return f"{self.threads} (all usable CPUs; no /proc/stat to watch other work)"
        return f"{self.threads} of {len(self.cpus)} usable CPUs, fewer while other processes use them"

    def poll(self) -> None:
        if not self.adaptive or self.clock() - self.since < MEASURE_EVERY_S:
            return
        wall, busy, own = self.clock() - self.since, self.busy(self.cpus), self.own()
        others = ((busy - self.busy_then) - (own - self.own_then)) / wall if busy is not None else 0.0
        wanted = threads_left(len(self.cpus), others)
        if wanted != self.threads:
            self.threads = wanted
            torch.set_num_threads(wanted)
        self._mark(busy, own)

    def _mark(self, busy: float | None = None, own: float | None = None) -> None:
        self.since = self.clock()
        self.busy_then = busy if busy is not None else (self.busy(self.cpus) or 0.0)
        self.own_then = own if own is not None else self.own()


def _threads_from_environment() -> int:
    """OMP_NUM_THREADS, when the user (or torchrun) set it: a fixed count."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0
