"""Me-Momentum on Clothing1M (METHOD.md §4): parse the flags, then run utils/clothing_loop.py.

    python Clothing.py                                   # one process (GPU, Apple MPS or CPU)
    torchrun --nproc_per_node=8 Clothing.py              # eight GPUs; --batch_size stays global
    python Clothing.py --resume auto                     # continue after a preemption

Build the index first: python Clothing1m-data.py --data_root data/Clothing1M_Official/
Exit codes: 0 done, 2 user error, 3 non-finite loss, 75 preempted (resume with --resume auto).
"""
from __future__ import annotations

import sys
from typing import Sequence

from utils.clothing_config import ClothingConfig
from utils.clothing_loop import run_clothing
from utils.run.config import format_config, parse_config
from utils.run.distributed import DistContext, cleanup, init_distributed
from utils.errors import UserError, report
from utils.run.preemption import NON_FINITE_EXIT_CODE, PREEMPTED_EXIT_CODE, NonFiniteLoss, Preempted, StopFlag


def main(argv: Sequence[str] | None = None) -> int:
    stop_flag = StopFlag().install()
    context: DistContext | None = None
    try:
        config = parse_config(ClothingConfig, argv, description=__doc__.splitlines()[0], prog="Clothing.py")
        context = init_distributed(config.device)
        if context.is_main:
            print(f"Clothing.py configuration:\n{format_config(config)}", flush=True)
        run_clothing(config, context, stop_flag)
    except Preempted as stop:
        print_once(context, f"preempted ({stop_flag.signal_name or 'stop requested'}): {stop}; the checkpoint "
                            f"of the last finished epoch is kept, continue with --resume auto")
        return PREEMPTED_EXIT_CODE
    except NonFiniteLoss as error:
        print_once(context, f"error: {error}")
        return NON_FINITE_EXIT_CODE
    except UserError as error:
        return report(error)
    finally:
        cleanup()
    return 0


def print_once(context: DistContext | None, message: str) -> None:
    if context is None or context.is_main:
        print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
