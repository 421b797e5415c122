"""Me-Momentum on MNIST, CIFAR-10/100 and the bundled digits (Bai & Liu, ICCV 2021).

    python main.py --dataset cifar10 --noise_type symmetric --noise_rate 0.2

Parses the flags (official names and defaults, see utils/train_config.py) and runs the loop of
utils/memomentum.py through the shared run lifecycle (utils/run/lifecycle.py). Exit codes: 0 done,
2 bad input, 3 non-finite loss, 75 preempted, 130 Ctrl-C (resume both with --resume auto).
"""
from __future__ import annotations

import sys
from typing import Sequence

from utils.run.config import parse_config
from utils.run.lifecycle import run_entry_point
from utils.train_config import TrainConfig
from utils.vision_run import run_vision

DESCRIPTION = "Me-Momentum: extracting hard confident examples from noisily labeled data."


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point(lambda: run_vision(parse_config(TrainConfig, argv, DESCRIPTION, prog="main.py")))


if __name__ == "__main__":
    sys.exit(main())
