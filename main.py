"""Learning with noisy labels on MNIST, CIFAR-10/100 and the bundled digits: Me-Momentum (Bai & Liu,
ICCV 2021) and the other methods of utils/methods/.

    python main.py --dataset cifar10 --noise_type symmetric --noise_rate 0.2
    python main.py --dataset digits --noise_type instance --noise_rate 0.4 --method coteaching

Parses the flags (official names and defaults, utils/train_config.py) and hands the run to the run
driver (utils/run/driver.py). Exit codes: 0 done, 2 bad input, 3 non-finite loss, 4 out of memory, 75 stopped by
SIGTERM/SIGUSR1, 130 Ctrl-C (resume both with --resume auto).
"""
from __future__ import annotations

import sys
from typing import Sequence

from utils.run.preemption import stop_at_once_before_the_run

if __name__ == "__main__":  # a stop request during the imports below (torch: seconds) ends in one line
    stop_at_once_before_the_run()

from utils.experiments import open_vision_loop
from utils.run.config import parse_config
from utils.run.driver import run_training
from utils.train_config import TrainConfig

DESCRIPTION = "Me-Momentum and other methods for learning with noisy labels (MNIST, CIFAR, digits)."


def main(argv: Sequence[str] | None = None) -> int:
    return run_training(lambda: parse_config(TrainConfig, argv, DESCRIPTION, prog="main.py"), open_vision_loop)


if __name__ == "__main__":
    sys.exit(main())
