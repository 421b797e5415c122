"""Me-Momentum on Clothing1M (METHOD.md §4): parse the flags, then run utils/clothing_loop.py.

    python Clothing.py                                   # one process (GPU, Apple MPS or CPU)
    torchrun --nproc_per_node=8 Clothing.py              # eight GPUs; --batch_size stays global
    python Clothing.py --resume auto                     # continue after a preemption

Build the index first: python Clothing1m-data.py --data_root data/Clothing1M_Official/
Exit codes: 0 done, 2 user error, 3 non-finite loss, 75 preempted, 130 Ctrl-C (resume both with
--resume auto).
"""
from __future__ import annotations

import sys
from typing import Sequence

from utils.clothing_config import ClothingConfig
from utils.clothing_loop import run_clothing
from utils.run.config import format_config, parse_config
from utils.run.distributed import DistContext, cleanup, init_distributed
from utils.run.lifecycle import run_entry_point
from utils.run.preemption import StopFlag


def main(argv: Sequence[str] | None = None) -> int:
    context: list[DistContext] = []

    def body() -> int:
        config = parse_config(ClothingConfig, argv, description=__doc__.splitlines()[0], prog="Clothing.py")
        context.append(init_distributed(config.device))
        if context[0].is_main:
            print(f"Clothing.py configuration:\n{format_config(config)}", flush=True)
        run_clothing(config, context[0], StopFlag().install())
        return 0

    try:
        return run_entry_point(body, is_main=lambda: not context or context[0].is_main)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
