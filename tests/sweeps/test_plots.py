"""Tests for utils/sweeps/plots.py and plot.py: figures of fabricated runs are written, non-empty, PNG and PDF."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import plot
from utils.errors import UserError
from utils.sweeps.plots import boundary_positions, per_class_matrix, plot_run, plot_run_if_stale, plot_sweep, read_metrics
from utils.sweeps.summary import bar_chart_numbers, collect_summary
from utils.sweeps.grid import expand_runs, parse_grid, write_sweep_record

PNG_MAGIC, PDF_MAGIC = b"\x89PNG", b"%PDF"


def epoch(phase: str, outer: int, inner: int, number: int, val: float, test: float | None) -> dict:
    return {"kind": "epoch", "phase": phase, "outer": outer, "inner": inner, "epoch": number,
            "train_loss": 1.0, "train_acc": 50.0, "val_acc": val, "test_acc": test, "lr": 0.01,
            "train_size": 100, "seconds": 0.1}


def round_record(outer: int, inner: int, precision: float | None, per_class: list | None) -> dict:
    return {"kind": "round", "outer": outer, "inner": inner, "confident_size": 80,
            "precision": precision, "recall": None if precision is None else 70.0,
            "per_class_size": [40, 40, 0], "per_class_precision": per_class,
            "per_class_recall": None if per_class is None else [80.0, 60.0, 0.0]}


def memomentum_run(run_dir: Path, precision: float | None = 90.0) -> Path:
    per_class = None if precision is None else [95.0, 85.0, None]
    records = ([epoch("warmup", 0, 0, e, 40 + e, None) for e in (1, 2, 3)]
               + [round_record(0, 1, precision, per_class)]
               + [epoch("inner", 0, 1, e, 50 + e, 60 + e) for e in (1, 2)]
               + [round_record(0, 2, precision, per_class)]
               + [epoch("inner", 0, 2, e, 55 + e, None) for e in (1, 2)]
               + [epoch("warmup", 1, 0, e, 45 + e, None) for e in (1, 2)]
               + [round_record(1, 1, precision, per_class)]
               + [epoch("inner", 1, 1, e, 60 + e, 70 + e) for e in (1, 2)])
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"kind\": \"epo")  # crash mid-line
    return run_dir


def assert_figure_files(paths: list[Path], names: list[str]) -> None:
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "pdf"))
    for path in paths:
        head = path.read_bytes()[:4]
        assert head == (PNG_MAGIC if path.suffix == ".png" else PDF_MAGIC)
        assert path.stat().st_size > 1000


def test_metrics_are_read_in_order_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    epochs, rounds = read_metrics(memomentum_run(tmp_path / "run"))
    assert len(epochs) == 11 and len(rounds) == 3
    assert [(r["outer"], r["inner"]) for r in rounds] == [(0, 1), (0, 2), (1, 1)]


def test_round_boundaries_between_epochs(tmp_path: Path) -> None:
    epochs, _ = read_metrics(memomentum_run(tmp_path / "run"))
    # warm-up 3 | inner 2 | inner 2 || warm-up 2 | inner 2: boundaries after epochs 3, 5, 7 (outer), 9
    assert boundary_positions(epochs) == [(3.5, False), (5.5, False), (7.5, True), (9.5, False)]


def test_per_class_matrix_marks_missing_values() -> None:
    matrix = per_class_matrix([round_record(0, 1, 90.0, [95.0, None]), round_record(0, 2, None, None)])
    assert matrix.shape == (2, 2) and matrix[0, 0] == 95.0
    assert np.isnan(matrix[0, 1]) and np.isnan(matrix[1]).all()


def test_memomentum_run_plots(tmp_path: Path) -> None:
    written = plot_run(memomentum_run(tmp_path / "run"))
    assert_figure_files(written, ["accuracy", "rounds", "per_class_precision"])
    assert all(p.parent == tmp_path / "run" / "plots" for p in written)


def test_run_without_clean_labels_has_no_heat_map(tmp_path: Path) -> None:
    written = plot_run(memomentum_run(tmp_path / "run", precision=None))
    assert_figure_files(written, ["accuracy", "rounds"])


def test_cross_entropy_run_has_only_the_accuracy_plot(tmp_path: Path) -> None:
    run_dir = tmp_path / "ce"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(
        "\n".join(json.dumps(epoch("ce", 0, 0, e, 50 + e, 60 + e)) for e in range(1, 6)) + "\n")
    assert_figure_files(plot_run(run_dir), ["accuracy"])


def test_plots_are_redrawn_only_when_stale(tmp_path: Path) -> None:
    run_dir = memomentum_run(tmp_path / "run")
    assert plot_run_if_stale(run_dir)
    assert plot_run_if_stale(run_dir) == []


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="metrics.jsonl not found"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="no epoch records"):
        plot_run(tmp_path)


def test_sweep_bar_chart(tmp_path: Path) -> None:
    grid = parse_grid({"settings": [
        {"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2, "paper_test_acc": 99.0,
         "paper_source": "test"},
        {"dataset": "mnist", "noise_type": "instance", "noise_rate": 0.4}]}, "g", "g.json")
    write_sweep_record(tmp_path, grid, expand_runs(grid, ["memomentum", "ce"], [1, 2]))
    for name, acc in (("mnist-symmetric-0.2-seed1-memomentum", 98.0), ("mnist-symmetric-0.2-seed2-memomentum", 97.0),
                      ("mnist-symmetric-0.2-seed1-ce", 90.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps({"test_acc": acc, "rounds": []}))
    labels, bars, paper = bar_chart_numbers(collect_summary(tmp_path))
    assert labels == ["MNIST Sym-20%", "MNIST IDN-40%"] and paper == [99.0, None]
    assert bars == {"Me-Momentum": ([97.5, None], [0.7071067811865476, None]),
                    "Standard (CE)": ([90.0, None], [None, None])}
    written = plot_sweep(labels, bars, paper, tmp_path / "plots")
    assert_figure_files(written, ["test_accuracy"])


def test_plot_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = memomentum_run(tmp_path / "run")
    assert plot.main([str(run_dir)]) == 0
    assert (run_dir / "plots" / "rounds.pdf").is_file()
    assert plot.main([str(tmp_path / "empty")]) == 2
    assert "not found" in capsys.readouterr().err
