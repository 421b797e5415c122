"""Runs that share their CPU cores: torch's default thread count against ours (docs/performance.md).

    python bench/bench_threads.py [--repeats 3] [--runs 2]

Times a short digits run of main.py as a whole process (the command below), alone and with copies
of itself started at the same moment (`--runs` of them), under two thread settings:
- "all cores": torch's own default, every core, fixed (what main.py did before, `--num_threads N`);
- "auto": main.py's default, every usable core while no other process uses them, fewer while
  others do (utils/run/threads.py).
Each repeat runs the four cases in turn; medians are printed, with the ratios that matter:
several at once against one alone (a fair share on 2 cores is about 2x), and auto alone against
all cores alone (the cost of watching the load when there is none). Needs an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMAND = ["--dataset", "digits", "--noise_type", "instance", "--noise_rate", "0.4", "--n_epoch", "20",
           "--max_outer_loop", "1", "--max_inner_loop", "3", "--no_progress"]


def timed_runs(count: int, threads: list[str], folder: Path) -> list[float]:
    """Start `count` copies of the run at once; the wall time of each, in seconds."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, str(REPO / "main.py"), *COMMAND, *threads,
                                   "--output_dir", str(folder / f"run{i}")], cwd=folder, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(count)]
    seconds = []
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a run failed (exit {process.returncode}): {stderr.strip()[-500:]}")
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2, help="runs started at once in the shared cases")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"all cores": ["--num_threads", str(cores)], "auto": []}
    times: dict[tuple[str, int], list[float]] = {}
    print(f"{cores} usable CPUs; main.py {' '.join(COMMAND)}; {args.repeats} repeats, medians")
    for repeat in range(args.repeats):
        for name, threads in settings.items():
            for count in (1, args.runs):
                with tempfile.TemporaryDirectory(prefix="bench_threads_") as folder:
                    per_run = timed_runs(count, threads, Path(folder))
                times.setdefault((name, count), []).extend(per_run)
                print(f"  repeat {repeat + 1}: {name:<9} {count} at once: "
                      + ", ".join(f"{s:.1f} s" for s in per_run), flush=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"\n{'threads':<10}{'alone':>9}{f'{args.runs} at once':>12}{'ratio':>8}")
    for name in settings:
        alone, shared = median[(name, 1)], median[(name, args.runs)]
        print(f"{name:<10}{alone:8.1f}s{shared:11.1f}s{shared / alone:7.2f}x")
    print(f"auto alone / all cores alone: {median[('auto', 1)] / median[('all cores', 1)]:.3f}")
    print(f"{args.runs} at once, auto / all cores: {median[('auto', args.runs)] / median[('all cores', args.runs)]:.2f}")


if __name__ == "__main__":
    main()
