"""Plot runs: accuracy per epoch, confident sets per round, per-class precision (utils/sweeps/plots.py).

    python plot.py runs/cifar10-symmetric-0.2-seed1-memomentum [more run folders ...]

Figures go to RUN_DIR/plots/ as PNG and PDF. Every folder is read before any figure is drawn:
when one is not a run folder, or its metrics.jsonl is empty or corrupt, plot.py prints one
"error: ..." line, draws nothing and exits 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from utils.run.preemption import stop_at_once_before_the_run

if __name__ == "__main__":  # a stop request during the imports below (torch: seconds) ends in one line
    stop_at_once_before_the_run()

from utils.errors import UserError, exit_code_of
from utils.run.config import FlagParser
from utils.run.files import RunFiles
from utils.sweeps.plots import draw_run, read_metrics


def plot(argv: Sequence[str]) -> int:
    parser = FlagParser(description=__doc__.split("\n")[0], prog="plot.py")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders written by main.py (--output_dir)")
    args = parser.parse_args(argv)
    runs = []
    for run_dir in args.run_dirs:
        epochs, rounds = read_metrics(run_dir)
        if not epochs:
            raise UserError(f"{RunFiles(run_dir).metrics} holds no epoch records: nothing to plot")
        runs.append((run_dir, epochs, rounds))
    for run_dir, epochs, rounds in runs:
        written = draw_run(run_dir, epochs, rounds)
        print(f"{run_dir}: {len(written)} files in {RunFiles(run_dir).plots}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return exit_code_of(lambda: plot(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
