"""Tests for utils/sweeps/summary.py and outcomes.py: numbers checked against fabricated run folders;
missing, failed and corrupt runs shown."""
from __future__ import annotations

import dataclasses

import csv
import json
from pathlib import Path

import pytest

import reproduce
from utils.sweeps.summary import (
    collect_summary,
    format_mean_std,
    mean_std,
    render_latex,
    render_markdown,
    selection_note,
    status_counts,
    summarize_sweep,
)
from utils.sweeps.grid import expand_runs, parse_grid, write_sweep_record
from utils.sweeps.outcomes import read_outcome, run_state

GRID = {
    "entry_point": "main.py", "methods": ["memomentum", "ce"],
    "settings": [
        {"dataset": "cifar10", "noise_type": "symmetric", "noise_rate": 0.2,
         "paper_test_acc": 91.5, "paper_source": "Test paper, Table 9"},
        {"dataset": "cifar10", "noise_type": "worst", "noise_rate": None},
    ],
}


def write_result(run_dir: Path, test_acc: float, precisions: list[float | None] = ()) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds = [{"kind": "round", "outer": 0, "inner": i + 1, "confident_size": 100, "precision": p,
               "recall": None} for i, p in enumerate(precisions)]
    (run_dir / "result.json").write_text(json.dumps({"test_acc": test_acc, "best_val_acc": 50.0,
                                                     "rounds": rounds}))


def make_sweep(out: Path) -> None:
    """Sym-20%: Me-Momentum 80/82/84 (precision 90/92/94 in the last round), CE 70, one failed, one
    missing. Worst: Me-Momentum seed 1 unfinished, seeds 2-3 missing; CE 60 and 66, seed 3 preempted."""
    grid = parse_grid(GRID, "g", "g.json")
    write_sweep_record(out, grid, expand_runs(grid, None, [1, 2, 3]))
    for seed, acc, precision in ((1, 80.0, 90.0), (2, 82.0, 92.0), (3, 84.0, 94.0)):
        write_result(out / f"cifar10-symmetric-0.2-seed{seed}-memomentum", acc, [50.0, precision, None])
    write_result(out / "cifar10-symmetric-0.2-seed1-ce", 70.0)
    failed = out / "cifar10-symmetric-0.2-seed2-ce"
    failed.mkdir()
    (failed / "launcher.json").write_text(json.dumps({"status": "failed", "exit_code": 3}))
    unfinished = out / "cifar10-worst-seed1-memomentum"
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"x")
    write_result(out / "cifar10-worst-seed1-ce", 60.0)
    write_result(out / "cifar10-worst-seed2-ce", 66.0)
    preempted = out / "cifar10-worst-seed3-ce"
    preempted.mkdir()
    (preempted / "launcher.json").write_text(json.dumps({"status": "preempted", "exit_code": 75}))


def test_mean_and_sample_std() -> None:
    assert mean_std([80.0, 82.0, 84.0]) == (82.0, 2.0)
    assert mean_std([70.0]) == (70.0, None)
    assert mean_std([]) == (None, None)
    assert format_mean_std([80.0, 82.0, 84.0]) == "82.00 ± 2.00"
    assert format_mean_std([70.0]) == "70.00"
    assert format_mean_std([]) == "—"


def test_outcome_of_each_kind_of_run_folder(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    finished = read_outcome(tmp_path / "cifar10-symmetric-0.2-seed2-memomentum", "k", "memomentum", 2)
    assert finished.status == "finished" and finished.test_acc == 82.0
    assert finished.last_precision == 92.0  # the last round that reported a precision
    failed = read_outcome(tmp_path / "cifar10-symmetric-0.2-seed2-ce", "k", "ce", 2)
    assert failed.status == "failed" and failed.exit_code == 3
    assert read_outcome(tmp_path / "cifar10-worst-seed1-memomentum", "k", "memomentum", 1).status == "unfinished"
    assert read_outcome(tmp_path / "cifar10-worst-seed3-ce", "k", "ce", 3).status == "preempted"
    assert read_outcome(tmp_path / "nothing-here", "k", "ce", 1).status == "missing"


def test_summary_numbers(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    summary = collect_summary(tmp_path)
    assert summary.methods == ["memomentum", "ce"]
    assert [row.setting.key for row in summary.rows] == ["cifar10-symmetric-0.2", "cifar10-worst"]
    sym, worst = summary.rows
    assert sym.cells["memomentum"].accuracies == [80.0, 82.0, 84.0]
    assert sym.cells["memomentum"].precisions == [90.0, 92.0, 94.0]
    assert sym.cells["ce"].accuracies == [70.0]
    assert (sym.cells["ce"].count("failed"), sym.cells["ce"].count("missing")) == (1, 1)
    assert worst.cells["memomentum"].finished == 0 and worst.cells["memomentum"].expected == 3
    assert status_counts(summary) == {"finished": 6, "failed": 1, "preempted": 1, "unfinished": 1, "missing": 3,
                                     "corrupt": 0}


def test_markdown_table(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    lines = render_markdown(collect_summary(tmp_path)).splitlines()
    assert lines[0] == ("| Setting | Me-Momentum: reported | Me-Momentum: last epoch | seeds | "
                        "Standard (CE): reported | Standard (CE): last epoch | seeds | Paper (Me-Momentum) | "
                        "Me-Momentum: precision (last round) | Notes |")
    assert lines[2] == ("| CIFAR-10 Sym-20% | 82.00 ± 2.00 | — | 3/3 | 70.00 | — | 1/3 | 91.50 | 92.00 ± 2.00 | "
                        "Standard (CE) seed 2: failed (exit 3); Standard (CE) seed 3: missing (not started) |")
    assert lines[3] == ("| CIFAR-10N Worst | — | — | 0/3 | 63.00 ± 4.24 | — | 2/3 | — | — | "
                        "Me-Momentum seed 1: unfinished; Me-Momentum seed 2: missing (not started); "
                        "Me-Momentum seed 3: missing (not started); Standard (CE) seed 3: preempted (exit 75) |")
    assert any("Test paper, Table 9" in line for line in lines)


def test_csv_table_holds_exact_numbers(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    summarize_sweep(tmp_path)
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert len(rows) == 2
    sym, worst = rows
    assert float(sym["memomentum_mean"]) == 82.0 and float(sym["memomentum_std"]) == 2.0
    assert sym["memomentum_test_accs"] == "80.0;82.0;84.0"
    assert (sym["ce_finished"], sym["ce_expected"], sym["ce_failed"], sym["ce_missing"]) == ("1", "3", "1", "1")
    assert sym["ce_std"] == "" and float(sym["ce_mean"]) == 70.0
    assert float(sym["memomentum_precision_mean"]) == 92.0
    assert float(sym["paper_test_acc"]) == 91.5 and sym["paper_source"] == "Test paper, Table 9"
    assert worst["noise_rate"] == "" and worst["memomentum_mean"] == ""
    assert float(worst["ce_mean"]) == 63.0 and worst["ce_preempted"] == "1"


def test_latex_table_uses_booktabs(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    tex = render_latex(collect_summary(tmp_path))
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lccccccccl}"):
        assert command in tex
    assert r"CIFAR-10 Sym-20\% & 82.00 $\pm$ 2.00 & --- & 3/3 & 70.00 & --- & 1/3 & 91.50 & 92.00 $\pm$ 2.00 &" in tex
    assert r"CIFAR-10N Worst & --- & --- & 0/3" in tex
    assert "±" not in tex and "—" not in tex


def test_summary_without_sweep_record_reads_run_configs(tmp_path: Path) -> None:
    for seed, acc in ((1, 90.0), (2, 92.0)):
        run_dir = tmp_path / f"run{seed}"
        write_result(run_dir, acc, [95.0])
        (run_dir / "config.json").write_text(json.dumps({"dataset": "mnist", "noise_type": "pairflip",
                                                          "noise_rate": 0.45, "seed": seed,
                                                          "method": "memomentum"}))
    summary = collect_summary(tmp_path)
    (row,) = summary.rows
    assert row.setting.label == "MNIST Pair-45%"
    assert row.cells["memomentum"].accuracies == [90.0, 92.0]


def test_summarize_command_writes_tables_and_plots(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    assert reproduce.main(["--summarize", str(tmp_path)]) == 0
    for name in ("table.md", "table.csv", "table.tex", "plots/test_accuracy.png", "plots/test_accuracy.pdf"):
        assert (tmp_path / name).stat().st_size > 0


def test_summarize_missing_folder_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert reproduce.main(["--summarize", str(tmp_path / "nope")]) == 2
    assert "no sweep folder" in capsys.readouterr().err


def test_paper_numbers_filled_in_after_the_sweep_are_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.sweeps.grid

    configs, out = tmp_path / "configs", tmp_path / "sweep"
    configs.mkdir()
    before = {"settings": [{"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2}]}
    grid = parse_grid(before, "mine", "mine.json")
    write_sweep_record(out, grid, expand_runs(grid, ["memomentum"], [1]))
    after = {"settings": [{**before["settings"][0], "paper_test_acc": 99.1, "paper_source": "Paper, Table 1"}]}
    (configs / "mine.json").write_text(json.dumps(after))
    monkeypatch.setattr(utils.sweeps.grid, "CONFIGS_DIR", configs)
    (row,) = collect_summary(out).rows
    assert (row.setting.paper_test_acc, row.setting.paper_source) == (99.1, "Paper, Table 1")
    (configs / "mine.json").write_text("{ broken")  # an invalid grid file does not block the summary
    (row,) = collect_summary(out).rows
    assert row.setting.paper_test_acc is None


def test_reported_and_last_epoch_accuracies_are_separate_labelled_columns(tmp_path: Path) -> None:
    """Seeds 1-2 of Me-Momentum have the new keys, seed 3 is an older result.json without them;
    CE's results are all old: its last-epoch column shows —."""
    grid = parse_grid({"settings": [GRID["settings"][0]]}, "g", "g.json")
    write_sweep_record(tmp_path, grid, expand_runs(grid, ["memomentum", "ce"], [1, 2, 3]))
    new_keys = {1: (78.0, 79.95, {"outer": 1, "inner": 2, "epoch": 5}),
                2: (80.0, 81.95, {"outer": 0, "inner": 3, "epoch": 17})}
    for seed, acc in ((1, 80.0), (2, 82.0), (3, 84.0)):
        run_dir = tmp_path / f"cifar10-symmetric-0.2-seed{seed}-memomentum"
        run_dir.mkdir()
        result = {"test_acc": acc, "best_val_acc": 60.0 + seed, "rounds": []}
        if seed in new_keys:
            last, official, best_at = new_keys[seed]
            result.update(test_acc_last=last, test_acc_official=official, best_at=best_at)
        (run_dir / "result.json").write_text(json.dumps(result))
        write_result(tmp_path / f"cifar10-symmetric-0.2-seed{seed}-ce", 70.0 + seed)
    summarize_sweep(tmp_path)
    lines = (tmp_path / "table.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:7] == ["Setting", "Me-Momentum: reported", "Me-Momentum: last epoch", "seeds",
                          "Standard (CE): reported", "Standard (CE): last epoch", "seeds"]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[:7] == ["CIFAR-10 Sym-20%", "82.00 ± 2.00", "79.00 ± 1.41 (n=2)", "3/3", "72.00 ± 1.00", "—", "3/3"]
    assert any(line.startswith("Test accuracy (%)") and "last epoch" in line for line in lines)
    (csv_row,) = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert csv_row["memomentum_seeds"] == "1;2;3"
    assert csv_row["memomentum_test_accs"] == "80.0;82.0;84.0"
    assert csv_row["memomentum_test_acc_lasts"] == "78.0;80.0;"
    assert csv_row["memomentum_test_acc_officials"] == "79.95;81.95;"
    assert csv_row["memomentum_best_val_accs"] == "61.0;62.0;63.0"
    assert csv_row["memomentum_best_ats"] == "1/2/5;0/3/17;"
    assert float(csv_row["memomentum_last_mean"]) == 79.0 and float(csv_row["memomentum_mean"]) == 82.0
    assert csv_row["ce_last_mean"] == "" and csv_row["ce_test_acc_lasts"] == ";;"
    assert csv_row["notes"] == ""
    tex = (tmp_path / "table.tex").read_text()
    assert r"Me-Momentum: reported & Me-Momentum: last epoch & seeds" in tex


def test_every_run_without_a_number_is_named_in_the_csv_notes(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    corrupt = tmp_path / "cifar10-symmetric-0.2-seed3-ce"
    corrupt.mkdir()
    (corrupt / "result.json").write_text("[]")
    assert run_state(corrupt) == "corrupt"
    summarize_sweep(tmp_path)
    sym = next(csv.DictReader((tmp_path / "table.csv").open()))
    assert sym["notes"] == ("Standard (CE) seed 2: failed (exit 3); Standard (CE) seed 3: corrupt: "
                            "result.json is corrupt (a JSON list, not an object)")
    assert (sym["ce_failed"], sym["ce_corrupt"], sym["ce_missing"]) == ("1", "1", "0")


def test_summary_without_sweep_record_takes_clothing_settings_from_the_result(tmp_path: Path) -> None:
    run_dir = tmp_path / "clothing-seed1"
    write_result(run_dir, 72.5)
    (run_dir / "config.json").write_text(json.dumps({"seed": 1, "lr": 0.01}))
    result = json.loads((run_dir / "result.json").read_text())
    result.update(method="memomentum", dataset="clothing1m", noise_type="real", noise_rate=None, seed=1)
    (run_dir / "result.json").write_text(json.dumps(result))
    (row,) = collect_summary(tmp_path).rows
    assert row.setting.label == "Clothing1M" and row.cells["memomentum"].accuracies == [72.5]


def test_a_method_without_validation_set_has_its_figure_named_in_the_caption(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    summary = collect_summary(tmp_path)
    assert selection_note(summary) == "" and "selected on the test set" not in render_markdown(summary)
    with_semi = dataclasses.replace(summary, rows=[], methods=[*summary.methods, "pes_semi"])
    assert selection_note(with_semi) == ("PES-semi: reported is the best test accuracy over the epochs (its authors' "
                                         "figure, selected on the test set: it has no validation set).")
    assert selection_note(with_semi) in render_markdown(with_semi).splitlines()
