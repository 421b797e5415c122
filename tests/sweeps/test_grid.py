"""Tests for utils/sweeps/grid.py and reproduce.py: grids, run naming, commands, the sweep record."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import reproduce
from utils.errors import UserError
from utils.methods import METHODS
from utils.sweeps.grid import (
    Run,
    Setting,
    available_grids,
    build_command,
    build_jobs,
    expand_runs,
    flag_arguments,
    load_grid,
    parse_extra,
    parse_grid,
    read_sweep_record,
    select_settings,
    write_sweep_record,
)

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PAPER_SETTINGS = {(d, t, r) for d in ("mnist", "cifar10", "cifar100")
                  for t, r in (("symmetric", 0.2), ("symmetric", 0.4), ("pairflip", 0.45),
                               ("instance", 0.2), ("instance", 0.4))}


def small_grid(**overrides: object) -> dict:
    grid = {"description": "test", "entry_point": "main.py", "methods": ["memomentum", "ce"],
            "flags": {"n_epoch": 5},
            "settings": [{"dataset": "cifar10", "noise_type": "symmetric", "noise_rate": 0.2,
                          "paper_test_acc": 90.5, "paper_source": "Test source, Table 1"},
                         {"dataset": "cifar10", "noise_type": "aggre", "noise_rate": None}]}
    grid.update(overrides)
    return grid


def quiet(_: str) -> None:
    """Launcher echo that prints nothing (tests read the records instead)."""


# --------------------------------------------------------------------------- grids


def test_bundled_grids_load_and_cover_the_paper() -> None:
    assert {"paper", "cifarn", "clothing1m", "digits"} <= set(available_grids())
    paper = load_grid("paper")
    assert {(s.dataset, s.noise_type, s.noise_rate) for s in paper.settings} == PAPER_SETTINGS
    assert len(paper.settings) == 15
    cifarn = load_grid("cifarn")
    assert [(s.dataset, s.noise_type, s.noise_rate) for s in cifarn.settings] == [
        ("cifar10", "aggre", None), ("cifar10", "random1", None), ("cifar10", "random2", None),
        ("cifar10", "random3", None), ("cifar10", "worst", None), ("cifar100", "noisy", None)]
    clothing = load_grid("clothing1m")
    assert clothing.entry_point == "Clothing.py" and clothing.methods == ("memomentum", "ce", "coteaching", "pes")
    digits = load_grid("digits")
    assert {(s.dataset, s.noise_type, s.noise_rate) for s in digits.settings} == {
        ("digits", "instance", 0.4), ("digits", "symmetric", 0.4)}
    for grid in (paper, cifarn, clothing, digits):
        for setting in grid.settings:  # a paper number is never without its source
            assert setting.paper_test_acc is None or setting.paper_source


def test_grid_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(small_grid()))
    grid = load_grid(str(path))
    assert grid.name == "mine"
    assert [s.key for s in grid.settings] == ["cifar10-symmetric-0.2", "cifar10-aggre"]
    assert grid.settings[0].flags == (("n_epoch", 5),)
    assert grid.settings[0].paper_test_acc == 90.5


def test_setting_flags_override_grid_flags() -> None:
    raw = small_grid(settings=[{"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2,
                                "flags": {"n_epoch": 7, "amp": True}}])
    (setting,) = parse_grid(raw, "g", "g.json").settings
    assert dict(setting.flags) == {"n_epoch": 7, "amp": True}


@pytest.mark.parametrize("change, message", [
    ({"settings": []}, "non-empty list"),
    ({"entry_point": "train.py"}, "entry_point"),
    ({"methods": ["mixup"]}, "methods"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"flags": {"--n_epoch": 3}}, "without dashes"),
    ({"flags": {"seed": 3}}, "set by the sweep itself"),
    ({"flags": {"n_epoch": [1, 2]}}, "string, number or boolean"),
    ({"settings": [{"dataset": "svhn", "noise_type": "symmetric", "noise_rate": 0.2}]}, "unknown dataset 'svhn'"),
    ({"settings": [{"dataset": "mnist", "noise_type": "aggre", "noise_rate": None}]}, "not available for mnist"),
    ({"settings": [{"dataset": "mnist", "noise_type": "symmetric"}]}, "noise_rate must be a number"),
    ({"settings": [{"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 1.0}]}, "in [0, 1)"),
    ({"settings": [{"dataset": "cifar10", "noise_type": "worst", "noise_rate": 0.4}]}, "has no noise_rate"),
    ({"settings": [{"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2,
                    "paper_test_acc": 95.0}]}, "needs its paper_source"),
    ({"settings": [{"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2,
                    "paper_test_acc": 195.0, "paper_source": "x"}]}, "percentage in [0, 100]"),
    ({"settings": [{"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2},
                   {"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2}]}, "appears twice"),
    ({"settings": [{"dataset": "mnist", "noise_rate": 0.2}]}, "'noise_type' is required"),
    ({"settings": ["mnist"]}, "expected an object"),
    ({"entry_point": "Clothing.py"}, "Clothing.py grids hold only"),
])
def test_bad_grids_are_refused_with_a_clear_message(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(small_grid(**change)))
    with pytest.raises(UserError) as raised:
        load_grid(str(path))
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_unreadable_or_unknown_grid(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{ not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_grid(str(bad))
    with pytest.raises(UserError, match="no grid 'nope'.*paper"):
        load_grid("nope")
    with pytest.raises(UserError, match="expected a JSON object"):
        parse_grid([1, 2], "x", "x.json")


def test_select_settings_by_key_or_whole_part_prefix() -> None:
    grid = load_grid("paper")
    assert {s.dataset for s in select_settings(grid, ["cifar10"]).settings} == {"cifar10"}  # not cifar100
    assert [s.key for s in select_settings(grid, ["mnist-instance-0.4"]).settings] == ["mnist-instance-0.4"]
    assert len(select_settings(grid, ["mnist", "cifar100-pairflip"]).settings) == 6
    assert select_settings(grid, None) is grid
    with pytest.raises(UserError, match="selects no setting"):
        select_settings(grid, ["cifar1"])


# --------------------------------------------------------------------------- runs and commands


def test_runs_expand_settings_then_methods_then_seeds() -> None:
    grid = parse_grid(small_grid(), "g", "g.json")
    runs = expand_runs(grid, ["memomentum", "ce"], [1, 2])
    assert [r.name for r in runs] == [
        "cifar10-symmetric-0.2-seed1-memomentum", "cifar10-symmetric-0.2-seed2-memomentum",
        "cifar10-symmetric-0.2-seed1-ce", "cifar10-symmetric-0.2-seed2-ce",
        "cifar10-aggre-seed1-memomentum", "cifar10-aggre-seed2-memomentum",
        "cifar10-aggre-seed1-ce", "cifar10-aggre-seed2-ce"]
    assert len(expand_runs(grid, None, [1, 2, 3])) == 12  # default: the grid's methods


def test_runs_refuse_bad_methods_and_seeds() -> None:
    grid = parse_grid(small_grid(), "g", "g.json")
    with pytest.raises(UserError, match="not coteaching"):
        expand_runs(grid, ["memomentum", "coteaching"], [1])
    with pytest.raises(UserError, match="must not repeat"):
        expand_runs(grid, None, [1, 1])
    with pytest.raises(UserError, match="at least one seed"):
        expand_runs(grid, None, [])


def test_command_of_a_run(tmp_path: Path) -> None:
    grid = parse_grid(small_grid(), "g", "g.json")
    synthetic, human = grid.settings
    command = build_command(grid, Run(synthetic, "ce", 3), tmp_path / "r", "py")
    assert command == ("py", "main.py", "--dataset", "cifar10", "--noise_type", "symmetric",
                       "--noise_rate", "0.2", "--method", "ce", "--seed", "3", "--n_epoch", "5",
                       "--output_dir", str(tmp_path / "r"), "--model_dir", str(tmp_path / "r" / "model"),
                       "--resume", "auto")
    # Real noise has no rate; --extra is appended and replaces the grid's value of the same flag.
    command = build_command(grid, Run(human, "memomentum", 1), tmp_path / "r", "py",
                            ["--n_epoch", "2", "--amp"])
    assert "--noise_rate" not in command
    assert command[-5:] == ("--resume", "auto", "--n_epoch", "2", "--amp")
    assert command.count("--n_epoch") == 1


def test_a_flag_of_one_method_reaches_that_methods_runs_only(tmp_path: Path) -> None:
    grid = parse_grid({"settings": [{"dataset": "digits", "noise_type": "instance", "noise_rate": 0.4,
                                     "flags": {"num_gradual": 5}}]}, "g", "g")
    extra = parse_extra(["--forget_rate 0.3 --n_epoch 2"])
    jobs = {job.run.method: job.command for job in build_jobs(grid, expand_runs(grid, None, [1]), tmp_path, "py", extra)}
    assert jobs["coteaching"][-6:] == ("--resume", "auto", "--forget_rate", "0.3", "--n_epoch", "2")
    assert "--num_gradual" in jobs["coteaching"]
    for method in ("memomentum", "ce"):
        assert jobs[method][-4:] == ("--resume", "auto", "--n_epoch", "2")
        assert "--forget_rate" not in jobs[method] and "--num_gradual" not in jobs[method]
    with pytest.raises(UserError, match="--forget_rate is a flag of --method coteaching, which this sweep does not run"):
        build_jobs(grid, expand_runs(grid, ["memomentum", "ce"], [1]), tmp_path, "py", extra)


def test_a_flag_a_method_never_reads_is_left_out_of_its_runs(tmp_path: Path) -> None:
    grid = parse_grid({"settings": [{"dataset": "digits", "noise_type": "instance", "noise_rate": 0.4,
                                     "flags": {"max_outer_loop": 1}}]}, "g", "g")
    extra = parse_extra(["--max_inner_loop 3 --sgd plain"])
    jobs = {job.run.method: job.command for job in build_jobs(grid, expand_runs(grid, None, [1]), tmp_path, "py", extra)}
    assert jobs["memomentum"][-6:] == ("--resume", "auto", "--max_inner_loop", "3", "--sgd", "plain")
    assert "--max_outer_loop" in jobs["memomentum"]
    assert jobs["ce"][-4:] == ("--resume", "auto", "--sgd", "plain")
    assert jobs["coteaching"][-2:] == ("--resume", "auto")
    assert not {"--max_outer_loop", "--max_inner_loop"} & set(jobs["ce"] + jobs["coteaching"])


def test_clothing_command_has_no_dataset_flags(tmp_path: Path) -> None:
    grid = load_grid("clothing1m")
    run, *others = expand_runs(grid, None, [2])
    assert [other.method for other in others] == ["ce", "coteaching", "pes"]
    assert run.name == "clothing1m-real-seed2-memomentum"
    assert build_command(grid, run, tmp_path, "py") == (
        "py", "Clothing.py", "--method", "memomentum", "--seed", "2", "--output_dir", str(tmp_path),
        "--model_dir", str(tmp_path / "model"), "--resume", "auto")


def test_flag_arguments_and_extra_parsing() -> None:
    assert flag_arguments([("amp", True), ("channels_last", False), ("lr", 0.1), ("x", "a b")]) == [
        "--amp", "--lr", "0.1", "--x", "a b"]
    assert parse_extra(["--amp --n_epoch 2", "--data_path '/my data'"]) == [
        "--amp", "--n_epoch", "2", "--data_path", "/my data"]
    assert parse_extra(None) == []
    assert reproduce.attach_option_values(["--extra", "--amp", "--grid", "paper"]) == [
        "--extra=--amp", "--grid", "paper"]


def test_setting_labels() -> None:
    assert Setting("cifar10", "symmetric", 0.2).label == "CIFAR-10 Sym-20%"
    assert Setting("cifar100", "pairflip", 0.45).label == "CIFAR-100 Pair-45%"
    assert Setting("mnist", "instance", 0.4).label == "MNIST IDN-40%"
    assert Setting("cifar10", "worst", None).label == "CIFAR-10N Worst"
    assert Setting("clothing1m", "real", None).label == "Clothing1M"


def test_sweep_record_merges_later_seeds(tmp_path: Path) -> None:
    grid = parse_grid(small_grid(), "g", "g.json")
    write_sweep_record(tmp_path, grid, expand_runs(grid, ["memomentum"], [1, 2]))
    write_sweep_record(tmp_path, grid, expand_runs(grid, ["memomentum", "ce"], [3]))
    record = read_sweep_record(tmp_path)
    assert record["seeds"] == [1, 2, 3] and record["methods"] == ["memomentum", "ce"]
    assert len(record["runs"]) == 2 * 2 + 2 * 2
    assert record["grid"]["settings"][0]["paper_test_acc"] == 90.5


# --------------------------------------------------------------------------- reproduce.py


def test_dry_run_prints_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    assert reproduce.main(["--grid", "digits", "--seeds", "1", "--out", str(out), "--dry_run",
                           "--extra", "--n_epoch 2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("start ") == 2 * len(METHODS) and "--n_epoch 2" in printed  # 2 settings x every method
    assert not out.exists()
    assert reproduce.main(["--grid", "digits", "--seeds", "1", "--out", str(out), "--dry_run",
                           "--launcher", "slurm"]) == 0
    assert f"#SBATCH --array=0-{2 * len(METHODS) - 1}" in capsys.readouterr().out
    assert not out.exists()


def test_slurm_launcher_writes_the_script(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    assert reproduce.main(["--grid", "paper", "--seeds", "1", "2", "3", "--out", str(out), "--methods", "memomentum",
                           "ce", "--launcher", "slurm", "--slurm_gres", "none"]) == 0
    script = (out / "slurm" / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-89\n" in script and "--gres" not in script
    assert len((out / "slurm" / "commands.txt").read_text().splitlines()) == 90
    assert len(read_sweep_record(out)["runs"]) == 90
    assert "sbatch" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--grid", "digits"], "give --grid and --out"),
    (["--grid", "nope", "--out", "x"], "no grid 'nope'"),
    (["--grid", "digits", "--out", "x", "--submit"], "--submit needs --launcher slurm"),
    (["--grid", "digits", "--out", "x", "--launcher", "slurm", "--gpus", "0"], "--gpus is for the local"),
    (["--grid", "digits", "--out", "x", "--methods", "mixup"], "runs only memomentum, ce"),
    (["--grid", "digits", "--out", "x", "--seeds", "one"], "invalid int value"),
])
def test_user_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --------------------------------------------------------------------------- end to end (real main.py)


@pytest.mark.skipif(not (REPO / "main.py").is_file(), reason="main.py not written yet")
def test_local_sweep_digits_end_to_end(tmp_path: Path) -> None:
    """Real runs of main.py on digits (one setting, 2 seeds × 2 methods, tiny training), then the summary."""
    out = tmp_path / "sweep"
    argv = [sys.executable, "reproduce.py", "--grid", "digits", "--only", "digits-instance-0.4",
            "--seeds", "1", "2", "--methods", "memomentum", "ce", "--out", str(out), "--jobs", "2",
            "--extra", "--n_epoch 2 --max_outer_loop 1 --max_inner_loop 2 --no_progress", "--no_plots"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    names = [f"digits-instance-0.4-seed{s}-{m}" for m in ("memomentum", "ce") for s in (1, 2)]
    results = {name: json.loads((out / name / "result.json").read_text()) for name in names}
    for name, result in results.items():
        assert result["dataset"] == "digits" and result["noise_type"] == "instance"
        assert result["config"]["n_epoch"] == 2 and (out / name / "run.log").is_file()
    import csv
    import statistics

    (row,) = list(csv.DictReader((out / "table.csv").open()))
    for method in ("memomentum", "ce"):
        accs = [results[f"digits-instance-0.4-seed{s}-{method}"]["test_acc"] for s in (1, 2)]
        assert float(row[f"{method}_mean"]) == pytest.approx(statistics.fmean(accs), abs=1e-9)
        assert float(row[f"{method}_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-9)
        assert row[f"{method}_finished"] == "2" and row[f"{method}_expected"] == "2"
    assert "Digits IDN-40%" in (out / "table.md").read_text()
    # Running the same sweep again skips every finished run and leaves the results untouched.
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("finished already, skipped") == 4
    assert {n: json.loads((out / n / "result.json").read_text()) for n in names} == results
    # Other flags for the same runs: refused, naming the difference, instead of tabling the old results.
    record = (out / "sweep.json").read_bytes()
    other_flags = [*argv[:-3], "--extra", "--n_epoch 3 --max_outer_loop 1 --max_inner_loop 2 --no_progress", "--no_plots"]
    refused = subprocess.run(other_flags, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "finished with other settings" in refused.stderr
    assert "--n_epoch (saved 2, given 3)" in refused.stderr and (out / "sweep.json").read_bytes() == record
    # Another grid (here the same file under another name) would replace sweep.json: refused.
    copy = tmp_path / "my_digits.json"
    copy.write_text((REPO / "configs" / "digits.json").read_text())
    renamed = [*argv[:2], "--grid", str(copy), *argv[4:]]
    refused = subprocess.run(renamed, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "records a sweep of grid 'digits'" in refused.stderr
    assert (out / "sweep.json").read_bytes() == record
