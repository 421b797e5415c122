"""Tests for utils/run/tensorboard.py: the scalars of epoch and round records land in an event file."""
from __future__ import annotations

import sys
from pathlib import Path

from utils.run.tensorboard import ScalarLog

EPOCH = {"kind": "epoch", "phase": "inner", "outer": 0, "inner": 1, "epoch": 1, "train_loss": 0.5,
         "train_acc": 80.0, "val_acc": 70.0, "test_acc": None, "lr": 0.01, "train_size": 900, "seconds": 1.0}
ROUND = {"kind": "round", "outer": 0, "inner": 1, "confident_size": 800, "precision": 95.5, "recall": None}


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_epoch_and_round_scalars_are_written(tmp_path: Path) -> None:
    with ScalarLog(tmp_path / "tb") as log:
        log.log_epoch(EPOCH, step=1)
        log.log_epoch({**EPOCH, "val_acc": 72.0, "test_acc": 75.0}, step=2)
        log.log_round(ROUND, step=2)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["val/accuracy"] == [(1, 70.0), (2, 72.0)]
    assert scalars["test/accuracy"] == [(2, 75.0)]  # None is skipped, not logged as 0
    assert scalars["train/loss"][0] == (1, 0.5)
    assert scalars["confident/size"] == [(2, 800.0)] and scalars["confident/precision"] == [(2, 95.5)]
    assert "confident/recall" not in scalars
    assert {"train/accuracy", "train/lr", "train/size"} <= set(scalars)


def test_tensorboard_is_imported_lazily() -> None:
    import subprocess

    code = ("import sys, main, utils.run.tensorboard; "
            "print('torch.utils.tensorboard' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], check=True)
    assert done.stdout.strip() == "False"
