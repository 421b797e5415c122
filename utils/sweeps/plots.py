"""Figures of one run (RUN_DIR/plots/) and of a sweep (DIR/plots/), as PNG and PDF.

Per run, from metrics.jsonl (read by utils.run.files.RunFiles): validation and test accuracy per
epoch with the round boundaries marked; confident-set size, label precision and recall per round;
per-class precision per round as a heat map. Per sweep: test accuracy per setting and method with
error bars, drawn from plain numbers (utils/sweeps/summary.py computes them; this module does not
know the tables). A value that is not a number is drawn as a gap, never a traceback.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot): no global backend switch,
no open-figure registry, safe in threads and on machines without a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.errors import UserError
from utils.run.files import RunFiles

FORMATS = ("png", "pdf")
DPI = 150


# --------------------------------------------------------------------------- reading


def read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(epoch records, round records) of a run, in the order they were written; a UserError when
    metrics.jsonl is missing or corrupt (a torn last line is fine: a crash can leave one)."""
    files = RunFiles(run_dir)
    if not files.metrics.is_file():
        raise UserError(f"{files.metrics} not found: is {run_dir} a run folder of main.py?")
    records = files.read_metric_records()
    epochs = [r for r in records if r.get("kind") == "epoch"]
    rounds = [r for r in records if r.get("kind") == "round"]
    return epochs, rounds


def round_label(record: dict[str, Any]) -> str:
    """'2.3': outer round 2 (1-based), inner round 3 ('?' for a count that is not a number)."""
    outer, inner = record.get("outer"), record.get("inner")
    outer_text = str(outer + 1) if _is_count(outer) else "?"
    return f"{outer_text}.{inner if _is_count(inner) else '?'}"


# --------------------------------------------------------------------------- saving


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        figure.savefig(path, dpi=DPI)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- per run


def boundary_positions(epochs: Sequence[dict[str, Any]]) -> list[tuple[float, bool]]:
    """Where a new phase starts on the epoch axis: (x, is_new_outer_round) between two epochs."""
    marks = []
    for i in range(1, len(epochs)):
        before, after = epochs[i - 1], epochs[i]
        if (before.get("outer"), before.get("inner")) != (after.get("outer"), after.get("inner")):
            marks.append((i + 0.5, before.get("outer") != after.get("outer")))
    return marks


def plot_accuracy(epochs: Sequence[dict[str, Any]], stem: Path, title: str = "") -> list[Path]:
    """Validation and test accuracy per epoch; dotted lines start inner rounds, solid ones outer rounds."""
    figure = new_figure(7.0, 3.6)
    axes = figure.add_subplot()
    x = np.arange(1, len(epochs) + 1)
    val = [_nan(e.get("val_acc")) for e in epochs]
    test = [_nan(e.get("test_acc")) for e in epochs]
    axes.plot(x, val, label="validation (noisy, class-balanced)", color="tab:blue", linewidth=1.4)
    if not np.all(np.isnan(test)):
        # Test accuracy is measured when validation improves (docs/method.md, "Me-Momentum"), or every
        # epoch by a method without a validation set (PES-semi): points, not a curve.
        axes.plot(x, test, label="test (clean), when measured", color="tab:orange",
                  linestyle="none", marker="o", markersize=3.5)
    outer_drawn = inner_drawn = False
    for position, new_outer in boundary_positions(epochs):
        style = dict(color="0.3", linewidth=1.0, linestyle="-") if new_outer else \
            dict(color="0.6", linewidth=0.8, linestyle=":")
        label = None
        if new_outer and not outer_drawn:
            label, outer_drawn = "new outer round", True
        elif not new_outer and not inner_drawn:
            label, inner_drawn = "new inner round", True
        axes.axvline(position, label=label, **style)
    axes.set_xlabel("epoch (all phases in order)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title or "Accuracy per epoch")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return save_figure(figure, stem)


def plot_round_statistics(rounds: Sequence[dict[str, Any]], stem: Path, title: str = "") -> list[Path]:
    """Confident-set size (bars) with label precision and recall (lines) per round."""
    figure = new_figure(7.0, 3.6)
    size_axes = figure.add_subplot()
    x = np.arange(len(rounds))
    sizes = np.nan_to_num([_nan(r.get("confident_size")) for r in rounds])
    size_axes.bar(x, sizes, color="0.8", label="confident-set size")
    size_axes.set_ylabel("confident examples")
    size_axes.set_xticks(x, [round_label(r) for r in rounds])
    size_axes.set_xlabel("round (outer.inner)")
    rate_axes = size_axes.twinx()
    precision = [_nan(r.get("precision")) for r in rounds]
    recall = [_nan(r.get("recall")) for r in rounds]
    rate_axes.plot(x, precision, marker="o", color="tab:green", label="label precision")
    rate_axes.plot(x, recall, marker="s", color="tab:purple", label="recall of clean examples")
    rate_axes.set_ylabel("%")
    rate_axes.set_ylim(0, 100)
    handles = size_axes.get_legend_handles_labels()
    more = rate_axes.get_legend_handles_labels()
    rate_axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="lower right")
    if np.all(np.isnan(precision)):
        size_axes.set_title((title or "Confident sets") + " (clean labels unknown: no precision)")
    else:
        size_axes.set_title(title or "Confident set per round")
    return save_figure(figure, stem)


def per_class_matrix(rounds: Sequence[dict[str, Any]], key: str = "per_class_precision") -> np.ndarray:
    """rounds × classes, NaN where a value is missing (null, or a class absent from the set)."""
    rows = [r.get(key) if isinstance(r.get(key), list) else [] for r in rounds]
    width = max((len(row) for row in rows), default=0)
    matrix = np.full((len(rounds), width), np.nan)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            matrix[i, j] = _nan(value)
    return matrix


def plot_per_class_precision(rounds: Sequence[dict[str, Any]], stem: Path, title: str = "") -> list[Path]:
    """Heat map of per-class label precision (%), one row per round."""
    matrix = per_class_matrix(rounds)
    classes = matrix.shape[1]
    figure = new_figure(min(2.0 + 0.45 * classes, 16.0), 1.2 + 0.35 * len(rounds))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", vmin=0, vmax=100,
                        interpolation="nearest")
    axes.set_yticks(np.arange(len(rounds)), [round_label(r) for r in rounds])
    axes.set_ylabel("round (outer.inner)")
    axes.set_xlabel("class")
    if classes <= 20:
        axes.set_xticks(np.arange(classes))
        for (i, j), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                axes.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if value < 60 else "black")
    figure.colorbar(image, ax=axes, label="label precision (%)")
    axes.set_title(title or "Per-class label precision of the confident set")
    return save_figure(figure, stem)


def plot_run(run_dir: Path) -> list[Path]:
    """Every figure of one run into RUN_DIR/plots/; returns the written files."""
    run_dir = Path(run_dir)
    epochs, rounds = read_metrics(run_dir)
    if not epochs:
        raise UserError(f"{RunFiles(run_dir).metrics} holds no epoch records: nothing to plot")
    return draw_run(run_dir, epochs, rounds)


def draw_run(run_dir: Path, epochs: Sequence[dict[str, Any]], rounds: Sequence[dict[str, Any]]) -> list[Path]:
    """The figures of plot_run from records already read (plot.py reads every run before drawing any)."""
    run_dir = Path(run_dir)
    folder = RunFiles(run_dir).plots
    title = run_dir.name
    written = plot_accuracy(epochs, folder / "accuracy", f"{title}: accuracy per epoch")
    if rounds:  # plain cross-entropy runs have no rounds
        written += plot_round_statistics(rounds, folder / "rounds", f"{title}: confident sets")
        if not np.all(np.isnan(per_class_matrix(rounds))):
            written += plot_per_class_precision(rounds, folder / "per_class_precision",
                                                f"{title}: per-class label precision")
    return written


def plot_run_if_stale(run_dir: Path) -> list[Path]:
    """plot_run unless its accuracy figure is newer than the run's metrics (sweeps re-summarise often)."""
    files = RunFiles(run_dir)
    metrics = files.metrics
    marker = files.plots / "accuracy.png"
    if not metrics.is_file():
        return []
    if marker.is_file() and marker.stat().st_mtime >= metrics.stat().st_mtime:
        return []
    return plot_run(run_dir)


# --------------------------------------------------------------------------- per sweep


def plot_sweep(setting_labels: Sequence[str], bars: Mapping[str, tuple[Sequence, Sequence]],
               paper: Sequence[float | None], folder: Path) -> list[Path]:
    """Grouped bars: per setting and method the mean test accuracy with its std as error bar
    (`bars`: method title → (means, stds), None where there is none); the paper's numbers as markers."""
    count = len(setting_labels)
    figure = new_figure(max(6.0, 1.5 + 0.7 * count * max(1, len(bars))), 4.2)
    axes = figure.add_subplot()
    x = np.arange(count)
    width = 0.8 / max(1, len(bars))
    for k, (title, (means, stds)) in enumerate(bars.items()):
        offset = (k - (len(bars) - 1) / 2) * width
        axes.bar(x + offset, [_nan(m) for m in means], width, yerr=np.nan_to_num([_nan(s) for s in stds]),
                 capsize=3, label=title)
    paper_values = [_nan(p) for p in paper]
    if not np.all(np.isnan(paper_values)):
        axes.scatter(x, paper_values, marker="_", s=400, color="black", zorder=3, label="paper (Me-Momentum)")
    axes.set_xticks(x, list(setting_labels), rotation=30 if count > 4 else 0, ha="right" if count > 4 else "center")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Test accuracy (mean ± std over finished seeds)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, Path(folder) / "test_accuracy")


DRAWABLE_LIMIT = 1e15  # far beyond any accuracy, loss or set size; near the float limits matplotlib's ticks fail


def _nan(value: Any) -> float:
    """A number as a float; anything else (null, text, inf, a value too large to draw) as NaN: a gap."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    try:
        number = float(value)
    except OverflowError:
        return float("nan")
    return number if np.isfinite(number) and abs(number) < DRAWABLE_LIMIT else float("nan")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
