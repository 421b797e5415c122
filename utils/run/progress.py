"""Progress display: a tqdm bar per epoch on a terminal, nothing extra in logs."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_enabled(disabled_by_flag: bool) -> bool:
    return not disabled_by_flag and sys.stderr.isatty()


def with_progress(iterable: Iterable[T], total: int, description: str, enabled: bool) -> Iterable[T]:
    if not enabled:
        return iterable
    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True, unit="batch")
