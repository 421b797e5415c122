"""Score a finished main.py run's weights again on the test set of the run's own settings.

    python evaluate.py RUN_DIR                      # its best model (best.pt): result.json's test_acc
    python evaluate.py RUN_DIR --weights last       # the model of its last epoch: test_acc_last
    python evaluate.py RUN_DIR --weights FILE.pt    # any weight file of ours for the same network

Prints the exact test accuracy and the one the method's own code prints (official per-batch mean),
with result.json's figure beside it. Exit codes: 0 done, 2 bad input (one line), 4 out of memory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from utils.errors import exit_code_of
from utils.evaluation import evaluate_run, recorded_figure


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("run_dir", help="a run folder of main.py (it holds config.json)")
    parser.add_argument("--weights", default="best", help="best (default), last, or a weight file of ours")
    parser.add_argument("--data_path", help="where the dataset is, if not where the run read it")
    parser.add_argument("--cifarn_path", help="where CIFAR-N's label files are, if not where the run read them")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the run's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = parse_args(argv)
        run_dir = Path(args.run_dir)
        overrides = {"data_path": args.data_path, "cifarn_path": args.cifarn_path, "device": args.device}
        test = evaluate_run(run_dir, args.weights, overrides)
        recorded = recorded_figure(run_dir, args.weights)
        print(f"{run_dir} ({args.weights}): test accuracy {test.exact!r} (exact), {test.official!r} (as the "
              f"method's own code prints it)" + ("" if recorded is None else f"; result.json: {recorded!r}"))
        return 0
    return exit_code_of(body)


if __name__ == "__main__":
    sys.exit(main())
