"""Tables of a sweep (reproduce.py --summarize): table.md, table.csv and table.tex in the sweep folder.

One row per setting; per method the mean ± sample standard deviation of the test accuracy over
the finished seeds and how many seeds finished ("2/3"); the paper's number where the grid
knows it; the label precision of Me-Momentum's last confident set. Runs that failed, are
unfinished or never started stay visible as "—" and a note, never silently dropped.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from data.presets import HUMAN_NOISE_TYPES
from utils.run.atomic import atomic_write_text
from utils.errors import UserError
from utils.sweeps.grid import (
    CLOTHING_DATASET,
    METHODS,
    Setting,
    available_grids,
    load_grid,
    read_launcher_record,
    read_sweep_record,
    settings_from_record,
)

DASH = "—"
METHOD_NAMES = {"memomentum": "Me-Momentum", "ce": "CE"}
STATUSES = ("finished", "failed", "preempted", "unfinished", "missing")
TABLE_FILES = ("table.md", "table.csv", "table.tex")


@dataclass(frozen=True)
class RunOutcome:
    """What one run folder says about its run."""

    name: str
    setting_key: str
    method: str
    seed: int
    status: str  # one of STATUSES
    test_acc: float | None = None
    best_val_acc: float | None = None
    last_precision: float | None = None
    exit_code: int | None = None


@dataclass
class MethodCell:
    """The runs of one method under one setting."""

    method: str
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float]:
        return [o.test_acc for o in self.outcomes if o.status == "finished" and o.test_acc is not None]

    @property
    def precisions(self) -> list[float]:
        return [o.last_precision for o in self.outcomes if o.status == "finished" and o.last_precision is not None]

    @property
    def finished(self) -> int:
        return len(self.accuracies)

    @property
    def expected(self) -> int:
        return len(self.outcomes)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


@dataclass
class SettingRow:
    setting: Setting
    cells: dict[str, MethodCell]


@dataclass(frozen=True)
class Summary:
    rows: list[SettingRow]
    methods: list[str]


# --------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n−1); std is None below two values."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) >= 2 else None)


def format_mean_std(values: Sequence[float], plus_minus: str = "±") -> str:
    mean, std = mean_std(values)
    if mean is None:
        return DASH
    return f"{mean:.2f}" if std is None else f"{mean:.2f} {plus_minus} {std:.2f}"


# --------------------------------------------------------------------------- reading run folders


def read_outcome(run_dir: Path, setting_key: str, method: str, seed: int) -> RunOutcome:
    """The state of one run folder: result.json, else launcher.json's verdict, else checkpoint."""
    run_dir = Path(run_dir)
    base = dict(name=run_dir.name, setting_key=setting_key, method=method, seed=seed)
    result = _read_json(run_dir / "result.json")
    if result is not None:
        return RunOutcome(**base, status="finished", test_acc=_number(result.get("test_acc")),
                          best_val_acc=_number(result.get("best_val_acc")),
                          last_precision=last_round_precision(result))
    launcher = read_launcher_record(run_dir)
    if launcher and launcher.get("status") in ("failed", "preempted"):
        return RunOutcome(**base, status=launcher["status"], exit_code=launcher.get("exit_code"))
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return RunOutcome(**base, status="unfinished")
    return RunOutcome(**base, status="missing")


def last_round_precision(result: dict[str, Any]) -> float | None:
    """Label precision (%) of the confident set of the last round that reported one."""
    for record in reversed(result.get("rounds") or []):
        precision = _number(record.get("precision"))
        if precision is not None:
            return precision
    return None


def collect_summary(out: Path) -> Summary:
    """Outcomes of every run of the sweep in `out`, grouped by setting and method."""
    out = Path(out)
    record = read_sweep_record(out)
    if record is not None:
        settings = refresh_paper_numbers(settings_from_record(record), record["grid"].get("name", ""))
        expected = [(r["name"], r["setting"], r["method"], int(r["seed"])) for r in record["runs"]]
    else:
        settings, expected = _discover_runs(out)
    methods = sorted({method for _, _, method, _ in expected}, key=_method_order)
    rows = {s.key: SettingRow(s, {m: MethodCell(m) for m in methods}) for s in settings}
    for name, key, method, seed in expected:
        if key in rows:
            rows[key].cells[method].outcomes.append(read_outcome(out / name, key, method, seed))
    for row in rows.values():
        for cell in row.cells.values():
            cell.outcomes.sort(key=lambda o: o.seed)
    return Summary(rows=list(rows.values()), methods=methods)


def refresh_paper_numbers(settings: list[Setting], grid_name: str) -> list[Setting]:
    """Take the paper numbers from the grid file as it is now (they may be filled in after a sweep ran)."""
    if grid_name not in available_grids():
        return settings
    try:
        current = {s.key: s for s in load_grid(grid_name).settings}
    except UserError:
        return settings  # a grid edited into an invalid state must not block the summary of old runs
    return [dataclasses.replace(s, paper_test_acc=current[s.key].paper_test_acc,
                                paper_source=current[s.key].paper_source) if s.key in current else s
            for s in settings]


def _discover_runs(out: Path) -> tuple[list[Setting], list[tuple[str, str, str, int]]]:
    """Without sweep.json: every sub-folder holding a config.json is a run."""
    settings: dict[str, Setting] = {}
    runs = []
    for config_path in sorted(out.glob("*/config.json")):
        config = _read_json(config_path) or {}
        result = _read_json(config_path.parent / "result.json") or {}
        merged = {**config, **{k: v for k, v in result.items() if v is not None}}
        if "dataset" not in merged or "noise_type" not in merged:
            continue
        real = merged["noise_type"] in HUMAN_NOISE_TYPES.get(merged["dataset"], ()) \
            or merged["dataset"] == CLOTHING_DATASET
        setting = Setting(merged["dataset"], merged["noise_type"],
                          None if real else float(merged.get("noise_rate", 0.0)))
        settings.setdefault(setting.key, setting)
        runs.append((config_path.parent.name, setting.key, str(merged.get("method", "memomentum")),
                     int(merged.get("seed", 0))))
    return list(settings.values()), runs


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _method_order(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


# --------------------------------------------------------------------------- table content


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def notes_for(row: SettingRow) -> str:
    """'CE failed: 1; Me-Momentum unfinished: 2' — every run that gave no number says why."""
    notes = []
    for cell in row.cells.values():
        for status in ("failed", "preempted", "unfinished", "missing"):
            if cell.count(status):
                notes.append(f"{method_name(cell.method)} {status}: {cell.count(status)}")
    return "; ".join(notes)


def has_precision(summary: Summary) -> bool:
    return "memomentum" in summary.methods


def table_header(summary: Summary) -> list[str]:
    header = ["Setting"]
    for method in summary.methods:
        header += [method_name(method), "seeds"]
    header.append("Paper (Me-Momentum)")
    if has_precision(summary):
        header.append("Precision (last round)")
    header.append("Notes")
    return header


def table_cells(row: SettingRow, summary: Summary, plus_minus: str = "±") -> list[str]:
    cells = [row.setting.label]
    for method in summary.methods:
        cell = row.cells[method]
        cells += [format_mean_std(cell.accuracies, plus_minus), f"{cell.finished}/{cell.expected}"]
    paper = row.setting.paper_test_acc
    cells.append(DASH if paper is None else f"{paper:.2f}")
    if has_precision(summary):
        cells.append(format_mean_std(row.cells["memomentum"].precisions, plus_minus))
    cells.append(notes_for(row))
    return cells


def paper_sources(summary: Summary) -> list[str]:
    return sorted({r.setting.paper_source for r in summary.rows
                   if r.setting.paper_test_acc is not None and r.setting.paper_source})


# --------------------------------------------------------------------------- renderers


CAPTION = ("Test accuracy (%) on the clean test set of the model with the best validation accuracy "
           "(noisy, class-balanced), mean ± sample standard deviation over the finished seeds; "
           "seeds: finished/planned.")
PRECISION_NOTE = "Precision: label precision (%) of Me-Momentum's confident set in its last round."


def render_markdown(summary: Summary) -> str:
    header = table_header(summary)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + [":-:"] * (len(header) - 2) + ["---"]) + "|"]
    for row in summary.rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row, summary)) + " |")
    lines += ["", CAPTION]
    if has_precision(summary):
        lines.append(PRECISION_NOTE)
    sources = paper_sources(summary)
    lines.append("Paper: " + ("; ".join(sources) if sources else "no paper numbers in this grid") + ".")
    return "\n".join(lines) + "\n"


def render_csv(summary: Summary) -> str:
    """Machine-readable: one row per setting, raw numbers (no rounding), per-method columns."""
    header = ["setting", "dataset", "noise_type", "noise_rate", "paper_test_acc", "paper_source"]
    for method in summary.methods:
        header += [f"{method}_{k}" for k in ("mean", "std", "finished", "expected", "failed", "preempted",
                                             "unfinished", "missing", "test_accs")]
    if has_precision(summary):
        header += ["memomentum_precision_mean", "memomentum_precision_std"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in summary.rows:
        s = row.setting
        values: list[Any] = [s.label, s.dataset, s.noise_type, _blank(s.noise_rate),
                             _blank(s.paper_test_acc), s.paper_source or ""]
        for method in summary.methods:
            cell = row.cells[method]
            mean, std = mean_std(cell.accuracies)
            values += [_blank(mean), _blank(std), cell.finished, cell.expected, cell.count("failed"),
                       cell.count("preempted"), cell.count("unfinished"), cell.count("missing"),
                       ";".join(repr(a) for a in cell.accuracies)]
        if has_precision(summary):
            values += [_blank(v) for v in mean_std(row.cells["memomentum"].precisions)]
        writer.writerow(values)
    return buffer.getvalue()


def render_latex(summary: Summary) -> str:
    """A booktabs table to paste into a paper (needs \\usepackage{booktabs})."""
    header = table_header(summary)
    spec = "l" + "c" * (len(header) - 2) + "l"
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for row in summary.rows:
        cells = [_latex_escape(c).replace(DASH, "---").replace("±", r"$\pm$")
                 for c in table_cells(row, summary)]
        lines.append(" & ".join(cells) + r" \\")
    caption = CAPTION + (" " + PRECISION_NOTE if has_precision(summary) else "")
    sources = paper_sources(summary)
    if sources:
        caption += " Paper: " + "; ".join(sources) + "."
    caption_tex = _latex_escape(caption).replace("±", r"$\pm$")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption_tex}}}",
              r"\label{tab:memomentum-reproduction}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                          ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def _blank(value: float | None) -> Any:
    return "" if value is None else value


# --------------------------------------------------------------------------- entry point


def write_tables(out: Path, summary: Summary) -> list[Path]:
    out = Path(out)
    contents = (render_markdown(summary), render_csv(summary), render_latex(summary))
    return [atomic_write_text(out / name, text) for name, text in zip(TABLE_FILES, contents)]


def summarize_sweep(out: Path, plots: bool = True) -> tuple[Summary, list[Path]]:
    """Write the tables (and, with `plots`, the sweep bar chart and each finished run's plots)."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"no sweep folder {out}")
    summary = collect_summary(out)
    written = write_tables(out, summary)
    if plots:
        from utils.sweeps.plots import plot_run_if_stale, plot_sweep  # matplotlib only when plotting

        written += plot_sweep(summary, out / "plots")
        for row in summary.rows:
            for cell in row.cells.values():
                for outcome in cell.outcomes:
                    if outcome.status != "finished":
                        continue
                    try:
                        written += plot_run_if_stale(out / outcome.name)
                    except UserError as error:  # one unreadable run must not cost the other plots
                        print(f"warning: no plots for {outcome.name}: {error}", file=sys.stderr)
    return summary, written


def status_counts(summary: Summary) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for row in summary.rows:
        for cell in row.cells.values():
            for outcome in cell.outcomes:
                counts[outcome.status] += 1
    return counts

