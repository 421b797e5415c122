"""Tables of a sweep (reproduce.py --summarize): table.md, table.csv and table.tex in the sweep folder.

One row per setting; per method the *reported* test accuracy (of the best-validation model, the
paper's protocol) and the *last-epoch* test accuracy as separate columns, each the mean ± sample
standard deviation over the finished seeds, and how many seeds finished ("2/3"); the paper's
number where the grid knows it; the label precision of Me-Momentum's last confident set. Every
run that gave no number (failed, preempted, unfinished, missing, corrupt) is named in the notes
with the reason, never silently dropped. The CSV keeps every figure of every finished seed.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from utils.errors import UserError
from utils.methods import METHODS, method_order, method_title
from utils.run.atomic import atomic_write_text
from utils.run.files import RunFiles
from utils.sweeps.grid import (
    RUN_NAME,
    Setting,
    available_grids,
    check_seeds,
    has_real_noise,
    load_grid,
    read_sweep_record,
    settings_from_record,
)
from utils.sweeps.outcomes import STATUSES, RunOutcome, read_checked_result, read_outcome

DASH = "—"
TABLE_FILES = ("table.md", "table.csv", "table.tex")
PER_SEED_KEYS = ("test_acc", "test_acc_last", "test_acc_official", "best_val_acc")  # RunOutcome fields


@dataclass
class MethodCell:
    """The runs of one method under one setting."""

    method: str
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def finished_outcomes(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "finished"]

    @property
    def accuracies(self) -> list[float]:
        """Reported test accuracies (best-validation model) of the finished seeds."""
        return [o.test_acc for o in self.finished_outcomes if o.test_acc is not None]

    @property
    def last_accuracies(self) -> list[float]:
        """Last-epoch test accuracies of the finished seeds whose result.json has them."""
        return [o.test_acc_last for o in self.finished_outcomes if o.test_acc_last is not None]

    @property
    def precisions(self) -> list[float]:
        return [o.last_precision for o in self.finished_outcomes if o.last_precision is not None]

    @property
    def finished(self) -> int:
        return len(self.finished_outcomes)

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
    unplaced: list[tuple[str, str]] = field(default_factory=list)  # (folder, why it is in no row)


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


def collect_summary(out: Path) -> Summary:
    """Outcomes of every run of the sweep in `out`, grouped by setting and method; a UserError
    when `out` holds no runs at all (an empty table would look like a result)."""
    out = Path(out)
    record = read_sweep_record(out)
    unplaced: list[tuple[str, str]] = []
    if record is not None:
        settings = refresh_paper_numbers(settings_from_record(record), record["grid"].get("name", ""))
        expected = [(r["name"], r["setting"], r["method"], r["seed"]) for r in record["runs"]]
    else:
        settings, expected, unplaced = _discover_runs(out)
    if not expected:
        found = f"; {len(unplaced)} folder(s) could not be read: {unplaced[0][0]}: {unplaced[0][1]}" \
            if unplaced else ""
        raise UserError(f"{out} holds no runs: neither a sweep.json (written by reproduce.py --grid) "
                        f"nor run folders with a config.json{found}")
    methods = sorted({method for _, _, method, _ in expected}, key=method_order)
    rows = {s.key: SettingRow(s, {m: MethodCell(m) for m in methods}) for s in settings}
    for name, key, method, seed in expected:
        rows[key].cells[method].outcomes.append(read_outcome(out / name, key, method, seed))
    for row in rows.values():
        for cell in row.cells.values():
            cell.outcomes.sort(key=lambda o: o.seed)
    return Summary(rows=list(rows.values()), methods=methods, unplaced=unplaced)


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


def _discover_runs(out: Path) -> tuple[list[Setting], list[tuple[str, str, str, int]], list[tuple[str, str]]]:
    """Without sweep.json: every sub-folder holding a config.json is a run. A folder whose
    config.json cannot be placed in a row is returned with the reason, to be listed under the table."""
    settings: dict[str, Setting] = {}
    runs, unplaced = [], []
    for config_path in sorted(out.glob("*/config.json")):
        folder = config_path.parent
        try:
            setting, method, seed = _run_of_folder(folder)
        except UserError as error:
            unplaced.append((folder.name, str(error).replace(f"{folder}/", "")))
            continue
        settings.setdefault(setting.key, setting)
        runs.append((folder.name, setting.key, method, seed))
    return list(settings.values()), runs, unplaced


def _run_of_folder(folder: Path) -> tuple[Setting, str, int]:
    """(setting, method, seed) of a run folder, from its config.json and a good result.json
    (Clothing.py's config has no dataset; its result.json has)."""
    if not RUN_NAME.fullmatch(folder.name):
        raise UserError("not a plain folder name")
    result, _ = read_checked_result(folder)
    config = {**(RunFiles(folder).read_config() or {}),
              **{key: value for key, value in (result or {}).items() if value is not None}}
    dataset, noise_type = config.get("dataset"), config.get("noise_type")
    method, seed = config.get("method", next(iter(METHODS))), config.get("seed", 0)
    if not isinstance(dataset, str) or not isinstance(noise_type, str):
        raise UserError("its config.json and result.json name no dataset and noise_type")
    if method not in METHODS:
        raise UserError(f"its method is {method!r}, not one of {', '.join(METHODS)}")
    check_seeds([seed])
    real = has_real_noise(dataset, noise_type)
    rate = config.get("noise_rate", 0.0)
    if not real and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0):
        raise UserError(f"its noise_rate is {rate!r}, not a number in [0, 1)")
    return Setting(dataset, noise_type, None if real else float(rate)), method, seed


# --------------------------------------------------------------------------- table content


def run_notes(row: SettingRow) -> list[str]:
    """'Standard (CE) seed 2: failed (exit 3)': one note per run of the row that gave no number."""
    return [f"{method_title(o.method)} seed {o.seed}: {o.reason}"
            for cell in row.cells.values() for o in cell.outcomes if o.status != "finished"]


def precision_methods(summary: Summary) -> list[str]:
    """The methods whose runs report the label precision of a confident set (per round)."""
    return [method for method in summary.methods
            if any(row.cells[method].precisions for row in summary.rows)]


def has_precision(summary: Summary) -> bool:
    return bool(precision_methods(summary))


def table_header(summary: Summary) -> list[str]:
    header = ["Setting"]
    for method in summary.methods:
        header += [f"{method_title(method)}: reported", f"{method_title(method)}: last epoch", "seeds"]
    header.append("Paper (Me-Momentum)")
    header += [f"{method_title(method)}: precision (last round)" for method in precision_methods(summary)]
    header.append("Notes")
    return header


def format_last_epoch(cell: MethodCell, plus_minus: str = "±") -> str:
    """Mean ± std of the last-epoch accuracies; '(n=k)' when only k finished seeds recorded one."""
    values = cell.last_accuracies
    text = format_mean_std(values, plus_minus)
    return text if not values or len(values) == cell.finished else f"{text} (n={len(values)})"


def table_cells(row: SettingRow, summary: Summary, plus_minus: str = "±") -> list[str]:
    cells = [row.setting.label]
    for method in summary.methods:
        cell = row.cells[method]
        cells += [format_mean_std(cell.accuracies, plus_minus), format_last_epoch(cell, plus_minus),
                  f"{cell.finished}/{cell.expected}"]
    paper = row.setting.paper_test_acc
    cells.append(DASH if paper is None else f"{paper:.2f}")
    cells += [format_mean_std(row.cells[method].precisions, plus_minus) for method in precision_methods(summary)]
    cells.append("; ".join(run_notes(row)))
    return cells


def paper_sources(summary: Summary) -> list[str]:
    return sorted({r.setting.paper_source for r in summary.rows
                   if r.setting.paper_test_acc is not None and r.setting.paper_source})


def unplaced_note(summary: Summary) -> str:
    return "Not in the table: " + "; ".join(f"{name} ({why})" for name, why in summary.unplaced) + "."


def bar_chart_numbers(summary: Summary) -> tuple[list[str], dict[str, tuple[list, list]], list]:
    """What utils.sweeps.plots.plot_sweep draws: setting labels, per method title the means and
    stds of the reported accuracy (None where there is none), and the paper's numbers."""
    labels = [row.setting.label for row in summary.rows]
    bars = {}
    for method in summary.methods:
        stats = [mean_std(row.cells[method].accuracies) for row in summary.rows]
        bars[method_title(method)] = ([m for m, _ in stats], [s for _, s in stats])
    return labels, bars, [row.setting.paper_test_acc for row in summary.rows]


# --------------------------------------------------------------------------- renderers


CAPTION = ("Test accuracy (%) on the clean test set, mean ± sample standard deviation over the finished "
           "seeds. Reported: of the model with the best validation accuracy (noisy, class-balanced), "
           "as in the paper; last epoch: of the model at the run's last epoch (— for runs that "
           "predate it; (n=k): only k seeds have it). Seeds: finished/planned.")
PRECISION_NOTE = "Precision: label precision (%) of the confident set of the method's last round."


def selection_note(summary: Summary) -> str:
    """For methods without a validation set (PES-semi): what their reported figure is instead."""
    titles = [method_title(m) for m in summary.methods if m in METHODS and not METHODS[m].selects_on_validation]
    if not titles:
        return ""
    return (f"{', '.join(titles)}: reported is the best test accuracy over the epochs (its authors' figure, "
            f"selected on the test set: it has no validation set).")


def render_markdown(summary: Summary) -> str:
    header = table_header(summary)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + [":-:"] * (len(header) - 2) + ["---"]) + "|"]
    for row in summary.rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row, summary)) + " |")
    lines += ["", CAPTION]
    if has_precision(summary):
        lines.append(PRECISION_NOTE)
    if selection_note(summary):
        lines.append(selection_note(summary))
    sources = paper_sources(summary)
    lines.append("Paper: " + ("; ".join(sources) if sources else "no paper numbers in this grid") + ".")
    if summary.unplaced:
        lines.append(unplaced_note(summary))
    return "\n".join(lines) + "\n"


def render_csv(summary: Summary) -> str:
    """Machine-readable: one row per setting, raw numbers (no rounding), per-method columns. The
    `_seeds` column lists the finished seeds; the per-seed columns (`_test_accs`, `_test_acc_lasts`,
    `_test_acc_officials`, `_best_val_accs`, `_best_ats` as outer/inner/epoch) follow its order,
    empty where a result.json lacks the key."""
    header = ["setting", "dataset", "noise_type", "noise_rate", "paper_test_acc", "paper_source"]
    for method in summary.methods:
        header += [f"{method}_{k}" for k in ("mean", "std", "last_mean", "last_std", "finished", "expected",
                                             *STATUSES[1:], "seeds")]
        header += [f"{method}_{key}s" for key in PER_SEED_KEYS] + [f"{method}_best_ats"]
    for method in precision_methods(summary):
        header += [f"{method}_precision_mean", f"{method}_precision_std"]
    header.append("notes")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in summary.rows:
        s = row.setting
        values: list[Any] = [s.label, s.dataset, s.noise_type, _blank(s.noise_rate),
                             _blank(s.paper_test_acc), s.paper_source or ""]
        for method in summary.methods:
            cell = row.cells[method]
            finished = cell.finished_outcomes
            values += [_blank(v) for v in (*mean_std(cell.accuracies), *mean_std(cell.last_accuracies))]
            values += [cell.finished, cell.expected, *(cell.count(status) for status in STATUSES[1:])]
            values.append(";".join(str(o.seed) for o in finished))
            values += [";".join(_per_seed(getattr(o, key)) for o in finished) for key in PER_SEED_KEYS]
            values.append(";".join("" if o.best_at is None else "/".join(map(str, o.best_at)) for o in finished))
        for method in precision_methods(summary):
            values += [_blank(v) for v in mean_std(row.cells[method].precisions)]
        values.append("; ".join(run_notes(row)))
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
    caption = CAPTION + (" " + PRECISION_NOTE if has_precision(summary) else "") + (
        " " + selection_note(summary) if selection_note(summary) else "")
    sources = paper_sources(summary)
    if sources:
        caption += " Paper: " + "; ".join(sources) + "."
    if summary.unplaced:
        caption += " " + unplaced_note(summary)
    caption_tex = _latex_escape(caption).replace("±", r"$\pm$").replace(DASH, "---")
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


def _per_seed(value: float | None) -> str:
    return "" if value is None else repr(value)


# --------------------------------------------------------------------------- entry point


def write_tables(out: Path, summary: Summary) -> list[Path]:
    out = Path(out)
    contents = (render_markdown(summary), render_csv(summary), render_latex(summary))
    return [atomic_write_text(out / name, text) for name, text in zip(TABLE_FILES, contents)]


def summarize_sweep(out: Path) -> tuple[Summary, list[Path]]:
    """Read every run of the sweep folder `out` and write its tables; returns them and the paths."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"no sweep folder {out}")
    summary = collect_summary(out)
    return summary, write_tables(out, summary)


def status_counts(summary: Summary) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for row in summary.rows:
        for cell in row.cells.values():
            for outcome in cell.outcomes:
                counts[outcome.status] += 1
    return counts
