"""Plot runs: accuracy per epoch, confident sets per round, per-class precision (utils/plots.py).

    python plot.py runs/cifar10-symmetric-0.2-seed1-memomentum [more run folders ...]

Figures go to RUN_DIR/plots/ as PNG and PDF. Exit code 2 when a folder is not a run folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from utils.errors import UserError, report
from utils.sweeps.plots import plot_run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders written by main.py (--output_dir)")
    args = parser.parse_args(argv)
    try:
        for run_dir in args.run_dirs:
            written = plot_run(run_dir)
            print(f"{run_dir}: {len(written)} files in {run_dir / 'plots'}")
    except UserError as error:
        return report(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
