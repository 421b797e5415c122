"""The files of one run folder (--output_dir), shared by main.py and Clothing.py.

    config.json     the configuration, written at start
    metrics.jsonl   one JSON object per line: per epoch ("kind": "epoch") and per round ("kind": "round")
    result.json     the final figures (written once, at the end)
    checkpoint.pt   the whole resumable state, rewritten at the end of every epoch
    latest.pt       weights of the official "latest" model; best.pt: of the best-validation model
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from utils.run.atomic import append_line, atomic_write_json


class RunFiles:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.config = self.run_dir / "config.json"
        self.metrics = self.run_dir / "metrics.jsonl"
        self.result = self.run_dir / "result.json"
        self.checkpoint = self.run_dir / "checkpoint.pt"
        self.latest = self.run_dir / "latest.pt"
        self.best = self.run_dir / "best.pt"

    def create(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config, config)

    def append_metrics(self, record: dict[str, Any]) -> int:
        """Append one JSON line; returns the file size after it (stored in checkpoints)."""
        append_line(self.metrics, json.dumps(record, sort_keys=False))
        return self.metrics.stat().st_size

    def metrics_size(self) -> int:
        return self.metrics.stat().st_size if self.metrics.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        """Drop lines written after the checkpoint we resume from (they will be written again)."""
        if self.metrics.exists() and self.metrics.stat().st_size > size:
            with open(self.metrics, "r+b") as handle:
                handle.truncate(size)
                handle.flush()
                os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.result, result)


def append_results_log(title: str, config_text: str, seed: int, test_acc: float,
                       log_file: str | Path = "logs/results.txt") -> None:
    """The official text log (METHOD.md §3): config line, then '<time> <title> seed-S, Best Test Acc: A'."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    append_line(log_file, f"\n{now} {config_text}")
    append_line(log_file, f"{now} {title} seed-{seed}, Best Test Acc: {test_acc}")
