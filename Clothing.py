"""Clothing1M (docs/clothing1m.md): Me-Momentum, CE or Co-teaching; flags in, one run of the run driver.

    python Clothing.py                                   # one process (GPU, Apple MPS or CPU)
    python Clothing.py --method ce                       # the "Standard" baseline (or --method coteaching)
    torchrun --nproc_per_node=8 Clothing.py              # eight GPUs; --batch_size stays global
    python Clothing.py --resume auto                     # continue after a preemption

Build the index first: python Clothing1m-data.py --data_root data/Clothing1M_Official/
Exit codes: 0 done, 2 user error, 3 non-finite loss, 4 out of memory, 75 stopped by SIGTERM/SIGUSR1, 130 Ctrl-C
(resume both with --resume auto).
"""
from __future__ import annotations

import sys
from typing import Sequence

from utils.run.preemption import stop_at_once_before_the_run

if __name__ == "__main__":  # a stop request during the imports below (torch: seconds) ends in one line
    stop_at_once_before_the_run()

from utils.clothing_config import ClothingConfig
from utils.experiments import open_clothing_loop
from utils.run.config import parse_config
from utils.run.driver import run_training


def main(argv: Sequence[str] | None = None) -> int:
    return run_training(lambda: parse_config(ClothingConfig, argv, description=__doc__.splitlines()[0],
                                             prog="Clothing.py"),
                        open_clothing_loop, distributed=True)


if __name__ == "__main__":
    sys.exit(main())
