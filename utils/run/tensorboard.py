"""Optional TensorBoard scalars (--tensorboard) mirroring the epoch and round records of metrics.jsonl.

metrics.jsonl stays the source of truth; this only makes the curves browsable with
`tensorboard --logdir RUN_DIR/tensorboard`. TensorBoard is imported only when enabled, so runs
without the flag never pay for (or depend on) it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# epoch record field → TensorBoard tag
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/accuracy",
    "val_acc": "val/accuracy",
    "test_acc": "test/accuracy",
    "lr": "train/lr",
    "train_size": "train/size",
}
ROUND_TAGS = {
    "confident_size": "confident/size",
    "precision": "confident/precision",
    "recall": "confident/recall",
}


class ScalarLog:
    """Writes scalars to an event file in `log_dir` (only with --tensorboard). The file is made with the
    first scalar: a run refused before its first epoch leaves nothing behind."""

    def __init__(self, log_dir: str | Path) -> None:
        self._log_dir = str(log_dir)
        self._writer: Any = None
        self._closed = False

    def log_epoch(self, record: dict[str, Any], step: int) -> None:
        """The numeric fields of an epoch record; None (e.g. test_acc not measured) is skipped."""
        self._log(record, EPOCH_TAGS, step)

    def log_round(self, record: dict[str, Any], step: int) -> None:
        """Confident-set size, precision and recall of a round (precision/recall None without clean labels)."""
        self._log(record, ROUND_TAGS, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._closed = True

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _log(self, record: dict[str, Any], tags: dict[str, str], step: int) -> None:
        if self._closed:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard
            self._writer = SummaryWriter(log_dir=self._log_dir)
        for field_name, tag in tags.items():
            value = record.get(field_name)
            if _is_number(value):
                self._writer.add_scalar(tag, float(value), global_step=step)
        self._writer.flush()  # a preempted run keeps every epoch it finished


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
