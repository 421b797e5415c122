"""Hostile input for reproduce.py and plot.py, as a table: every row must end in one "error: ..."
line on stderr, exit code 2, no traceback, and the files already on disk unchanged.

Then the inputs that are not errors but must not vanish: a corrupt result.json is a note naming
the run (and is set aside when the sweep runs again); odd values in metrics.jsonl draw as gaps.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import pytest

import plot
import reproduce
from utils.sweeps.grid import expand_runs, parse_grid, write_sweep_record
from utils.sweeps.outcomes import run_state

GOOD_SETTING = {"dataset": "mnist", "noise_type": "symmetric", "noise_rate": 0.2}
GARBAGE = bytes(range(256)) * 4


def grid_file(content: bytes | dict | list) -> Callable[[Path], list[str]]:
    """A grid file holding `content` (raw bytes, or an object/list written as JSON)."""
    def setup(tmp: Path) -> list[str]:
        path = tmp / "grid.json"
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        return ["--grid", str(path), "--out", str(tmp / "out"), "--seeds", "1"]
    return setup


def grid_with(**change: object) -> Callable[[Path], list[str]]:
    return grid_file({"settings": [GOOD_SETTING], **change})


def setting_with(**change: object) -> Callable[[Path], list[str]]:
    return grid_file({"settings": [{**GOOD_SETTING, **change}]})


def sweep_args(*extra: str) -> Callable[[Path], list[str]]:
    """A valid sweep on the bundled digits grid, with `extra` arguments appended."""
    return lambda tmp: ["--grid", "digits", "--out", str(tmp / "out"), "--seeds", "1", *extra]


def sweep_json(content: bytes | dict | list) -> Callable[[Path], list[str]]:
    """--summarize of a folder whose sweep.json holds `content`, next to a finished run."""
    def setup(tmp: Path) -> list[str]:
        out = tmp / "out"
        (out / "mnist-symmetric-0.2-seed1-ce").mkdir(parents=True)
        (out / "mnist-symmetric-0.2-seed1-ce" / "result.json").write_text('{"test_acc": 90.0}')
        (out / "sweep.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        return ["--summarize", str(out)]
    return setup


def valid_record(**change: object) -> dict:
    return {"grid": {"name": "g", "entry_point": "main.py", "methods": ["ce"], "settings": [
        {**GOOD_SETTING, "flags": {}, "paper_test_acc": None, "paper_source": None}]},
        "runs": [{"name": "mnist-symmetric-0.2-seed1-ce", "setting": "mnist-symmetric-0.2", "method": "ce",
                  "seed": 1}], **change}


def summarize_folder(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        out = tmp / "out"
        out.mkdir()
        make(out)
        return ["--summarize", str(out)]
    return setup


def bad_config(out: Path) -> None:
    (out / "run1").mkdir()
    (out / "run1" / "config.json").write_bytes(GARBAGE)


def non_run_folders(out: Path) -> None:
    (out / "logs").mkdir()
    (out / "notes.txt").write_text("hello")


def corrupt_previous_record(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "sweep.json").write_bytes(b"{\"grid\": ")
    return sweep_args()(tmp)


def out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "out").write_text("not a folder")
    return sweep_args()(tmp)


def summarize_a_file(tmp: Path) -> list[str]:
    (tmp / "out").write_text("not a folder")
    return ["--summarize", str(tmp / "out")]


def digits_sweep(*extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        return ["--grid", "digits", "--seeds", "1", "--out", str(tmp / "out"), *extra]
    return setup


REPRODUCE_CASES = {
    "huge --jobs": (digits_sweep("--jobs", str(10 ** 11)), "--jobs must be between 1 and 1000000"),
    # grid files: any bytes, any JSON, any field type
    "grid binary garbage": (grid_file(GARBAGE), "not valid JSON"),
    "grid empty file": (grid_file(b""), "not valid JSON"),
    "grid truncated": (grid_file(b'{"settings": [{"dataset": "mn'), "not valid JSON"),
    "grid not UTF-8": (grid_file('{"description": "caf\u00e9"}'.encode("latin-1")), "not valid JSON"),
    "grid nested too deep": (grid_file(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
    "grid huge integer": (grid_file(b'{"settings": [], "x": ' + b"9" * 5000 + b"}"), "not valid JSON"),
    "grid a JSON list": (grid_file([GOOD_SETTING]), "expected a JSON object"),
    "grid a JSON string": (grid_file(b'"paper"'), "expected a JSON object"),
    "grid null": (grid_file(b"null"), "expected a JSON object"),
    "methods a number": (grid_with(methods=5), "methods must be"),
    "methods a string": (grid_with(methods="ce"), "methods must be"),
    "methods repeated": (grid_with(methods=["ce", "ce"]), "methods must be"),
    "methods hold a list": (grid_with(methods=[["ce"]]), "methods must be"),
    "entry point a list": (grid_with(entry_point=["main.py"]), "entry_point must be"),
    "description a number": (grid_with(description=5), "'description' must be a string"),
    "settings an object": (grid_file({"settings": GOOD_SETTING}), "non-empty list"),
    "flags a list": (grid_with(flags=["--amp"]), "'flags' must be an object"),
    "flag value null": (grid_with(flags={"n_epoch": None}), "string, number or boolean"),
    "flag value infinite": (grid_file(b'{"flags": {"lr": Infinity}, "settings": [{"dataset": "mnist", '
                                      b'"noise_type": "symmetric", "noise_rate": 0.2}]}'), "finite number"),
    "flag value with newline": (grid_with(flags={"data_path": "a\nb"}), "control character"),
    "flag name with a space": (grid_with(flags={"n epoch": 2}), "not a flag name"),
    "flag name empty": (grid_with(flags={"": 2}), "not a flag name"),
    "dataset a number": (setting_with(dataset=10), "'dataset' is required and must be a string"),
    "noise rate a string": (setting_with(noise_rate="0.2"), "noise_rate must be a number"),
    "noise rate NaN": (grid_file(b'{"settings": [{"dataset": "mnist", "noise_type": "symmetric", '
                                 b'"noise_rate": NaN}]}'), "noise_rate must be a number"),
    "paper number a string": (setting_with(paper_test_acc="high", paper_source="x"), "paper_test_acc must be"),
    # --extra, --gpus, --seeds, SLURM numbers, --out
    "extra unclosed quote": (sweep_args("--extra", "--data_path 'a b"), "No closing quotation"),
    "extra not a flag": (sweep_args("--extra", "amp"), "must start with a flag"),
    "extra sets the seed": (sweep_args("--extra", "--seed 3"), "sets --seed"),
    "extra sets the run folder": (sweep_args("--extra", "--output_dir=/tmp/x"), "sets --output_dir"),
    "extra with newline": (sweep_args("--extra", "--amp\n--lr 1"), "control character"),
    "gpus a word": (sweep_args("--gpus", "abc"), "--gpus 'abc'"),
    "gpus negative": (sweep_args("--gpus", "-1"), "--gpus '-1'"),
    "gpus empty": (sweep_args("--gpus", ""), "--gpus ''"),
    "gpus shell text": (sweep_args("--gpus", "0;reboot"), "--gpus '0;reboot'"),
    "seed negative": (sweep_args("--seeds", "-1"), "0 <= seed < 2**32"),
    "seed too large": (sweep_args("--seeds", str(2 ** 32)), "0 <= seed < 2**32"),
    "seed not whole": (sweep_args("--seeds", "1.5"), "invalid int value"),
    "seed repeated": (sweep_args("--seeds", "2", "2"), "must not repeat"),
    "slurm cpus zero": (sweep_args("--launcher", "slurm", "--slurm_cpus_per_task", "0"), "must be between 1 and"),
    "slurm throttle negative": (sweep_args("--launcher", "slurm", "--slurm_max_parallel", "-2"), "must be between 1 and"),
    "slurm time with newline": (sweep_args("--launcher", "slurm", "--slurm_time", "1:00\n#SBATCH -x"),
                                "control character"),
    "out is a file": (out_is_a_file, "is a file"),
    "previous sweep.json corrupt": (corrupt_previous_record, "delete it"),
    # sweep folders
    "summarize a missing folder": (lambda tmp: ["--summarize", str(tmp / "nope")], "no sweep folder"),
    "summarize a file": (summarize_a_file, "no sweep folder"),
    "summarize an empty folder": (summarize_folder(lambda out: None), "holds no runs"),
    "summarize folders that are no runs": (summarize_folder(non_run_folders), "holds no runs"),
    "summarize only a corrupt config.json": (summarize_folder(bad_config), "could not be read"),
    "sweep.json binary garbage": (sweep_json(GARBAGE), "not valid JSON"),
    "sweep.json empty": (sweep_json(b""), "not valid JSON"),
    "sweep.json a list": (sweep_json([1, 2]), "is corrupt"),
    "sweep.json runs a string": (sweep_json(valid_record(runs="all")), "is corrupt"),
    "sweep.json run escapes the folder": (sweep_json(valid_record(runs=[
        {"name": "../elsewhere", "setting": "mnist-symmetric-0.2", "method": "ce", "seed": 1}])), "run 0"),
    "sweep.json run of no setting": (sweep_json(valid_record(runs=[
        {"name": "x", "setting": "cifar10-worst", "method": "ce", "seed": 1}])), "run 0"),
    "sweep.json seed a string": (sweep_json(valid_record(runs=[
        {"name": "x", "setting": "mnist-symmetric-0.2", "method": "ce", "seed": "1"}])), "run 0"),
    "sweep.json settings wrong": (sweep_json(valid_record(grid={"name": "g", "settings": [{"dataset": 1}]})),
                                  "must be a string"),
    "unknown flag": (lambda tmp: ["--summarise", str(tmp)], "unrecognized arguments"),
}


def metrics_file(content: bytes) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "run").mkdir()
        (tmp / "run" / "metrics.jsonl").write_bytes(content)
        return [str(tmp / "run")]
    return setup


EPOCH = json.dumps({"kind": "epoch", "outer": 0, "inner": 0, "val_acc": 50.0, "test_acc": None}).encode()


def good_then_bad_run(tmp: Path) -> list[str]:
    """Two folders: the first fine, the second corrupt; nothing may be drawn for either."""
    metrics_file(EPOCH + b"\n")(tmp)
    (tmp / "bad").mkdir()
    (tmp / "bad" / "metrics.jsonl").write_bytes(GARBAGE)
    return [str(tmp / "run"), str(tmp / "bad")]


PLOT_CASES = {
    "no metrics.jsonl": (lambda tmp: [str(tmp)], "not found"),
    "metrics empty": (metrics_file(b""), "no epoch records"),
    "metrics blank lines": (metrics_file(b"\n\n  \n"), "no epoch records"),
    "metrics binary garbage": (metrics_file(GARBAGE), "corrupt"),
    "metrics not UTF-8": (metrics_file(EPOCH + b"\n" + '{"note": "caf\u00e9"}'.encode("latin-1") + b"\n"), "corrupt"),
    "metrics only a torn line": (metrics_file(b'{"kind": "epo'), "no epoch records"),
    "metrics corrupt mid-file": (metrics_file(EPOCH + b"\n{oops\n" + EPOCH + b"\n"), "line 2 is not JSON"),
    "metrics line a list": (metrics_file(b"[1, 2]\n" + EPOCH + b"\n"), "line 1 is not a JSON object"),
    "metrics line a number": (metrics_file(EPOCH + b"\n42\n" + EPOCH + b"\n"), "line 2 is not a JSON object"),
    "metrics rounds only": (metrics_file(b'{"kind": "round", "outer": 0, "inner": 1}\n'), "no epoch records"),
    "second run corrupt": (good_then_bad_run, "corrupt"),
    "no run folder given": (lambda tmp: [], "the following arguments are required"),
    "unknown flag": (lambda tmp: ["--bogus", str(tmp)], "unrecognized arguments"),
}


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under `root` with a hash of its content (folders as 'dir')."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def assert_one_error_line(err: str, message: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]


@pytest.mark.parametrize("setup, message", REPRODUCE_CASES.values(), ids=REPRODUCE_CASES.keys())
def test_reproduce_refuses_hostile_input(tmp_path: Path, setup, message: str,
                                         capsys: pytest.CaptureFixture) -> None:
    argv = setup(tmp_path)
    before = tree_digest(tmp_path)
    assert reproduce.main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert tree_digest(tmp_path) == before


def test_a_symlink_loop_as_the_sweep_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    assert reproduce.main(["--grid", "digits", "--seeds", "1", "--out", str(tmp_path / "loop1"), "--dry_run"]) == 2
    assert_one_error_line(capsys.readouterr().err, "a link that leads back to itself")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop1", "loop2"]


@pytest.mark.parametrize("setup, message", PLOT_CASES.values(), ids=PLOT_CASES.keys())
def test_plot_refuses_hostile_input(tmp_path: Path, setup, message: str, capsys: pytest.CaptureFixture) -> None:
    argv = setup(tmp_path)
    before = tree_digest(tmp_path)
    assert plot.main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert tree_digest(tmp_path) == before


# --------------------------------------------------------------------------- not errors, never silent


CORRUPT_RESULTS = {
    "empty": (b"", "not JSON"),
    "truncated": (b'{"test_acc": 9', "not JSON"),
    "binary garbage": (GARBAGE, "not JSON"),
    "a list": (b"[90.0]", "not an object"),
    "a string": (b'"90"', "not an object"),
    "no test_acc": (b"{}", "it has no test_acc"),
    "test_acc null": (b'{"test_acc": null}', "test_acc is None"),
    "test_acc a string": (b'{"test_acc": "high"}', "test_acc is 'high'"),
    "test_acc NaN": (b'{"test_acc": NaN}', "test_acc is nan"),
    "test_acc infinite": (b'{"test_acc": 1e999}', "test_acc is inf"),
    "test_acc above 100": (b'{"test_acc": 150}', "test_acc is 150"),
    "test_acc huge": (b'{"test_acc": 1' + b"0" * 400 + b"}", "test_acc is 1000"),
    "last-epoch accuracy a string": (b'{"test_acc": 80, "test_acc_last": "x"}', "test_acc_last is 'x'"),
    "best_at a list": (b'{"test_acc": 80, "best_at": [1, 2, 3]}', "best_at is [1, 2, 3]"),
    "best_at negative": (b'{"test_acc": 80, "best_at": {"outer": -1, "inner": 0, "epoch": 1}}', "best_at"),
    "rounds a string": (b'{"test_acc": 80, "rounds": "abc"}', "rounds is not a list"),
    "round precision a string": (b'{"test_acc": 80, "rounds": [{"precision": "x"}]}', "precision is 'x'"),
}


def one_run_sweep(out: Path, result: bytes) -> Path:
    grid = parse_grid({"settings": [GOOD_SETTING], "methods": ["ce"]}, "g", "g.json")
    write_sweep_record(out, grid, expand_runs(grid, None, [1]))
    run_dir = out / "mnist-symmetric-0.2-seed1-ce"
    run_dir.mkdir()
    (run_dir / "result.json").write_bytes(result)
    return run_dir


@pytest.mark.parametrize("content, why", CORRUPT_RESULTS.values(), ids=CORRUPT_RESULTS.keys())
def test_a_corrupt_result_is_a_named_note(tmp_path: Path, content: bytes, why: str,
                                          capsys: pytest.CaptureFixture) -> None:
    run_dir = one_run_sweep(tmp_path, content)
    assert run_state(run_dir) == "corrupt"
    assert reproduce.main(["--summarize", str(tmp_path), "--no_plots"]) == 0
    assert "1 corrupt" in capsys.readouterr().out
    table = (tmp_path / "table.md").read_text()
    assert "Standard (CE) seed 1: corrupt: result.json" in table and why in table
    assert "| 0/1 |" in table
    assert (run_dir / "result.json").read_bytes() == content  # summarising repairs nothing


def test_a_new_sweep_sets_a_corrupt_result_aside(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    run_dir = out / "digits-instance-0.4-seed1-ce"
    run_dir.mkdir()
    (run_dir / "result.json").write_bytes(b'{"test_acc": ')
    argv = ["--grid", "digits", "--only", "digits-instance-0.4", "--methods", "ce", "--seeds", "1",
            "--out", str(out), "--launcher", "slurm"]
    assert reproduce.main([*argv, "--dry_run"]) == 0
    assert "run again (corrupt result.json" in capsys.readouterr().out
    assert (run_dir / "result.json").is_file()  # a dry run touches nothing
    assert reproduce.main(argv) == 0
    assert "set aside as result.json.corrupt" in capsys.readouterr().out
    assert not (run_dir / "result.json").exists()
    assert (run_dir / "result.json.corrupt").read_bytes() == b'{"test_acc": '
    assert run_state(run_dir) == "new"


def test_summary_lists_run_folders_it_cannot_place(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, config in ((good, {"dataset": "mnist", "noise_type": "pairflip", "noise_rate": 0.45, "seed": 1,
                                   "method": "ce"}),
                           (bad, {"dataset": "mnist", "noise_type": "pairflip", "seed": "one"})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
    (good / "result.json").write_text('{"test_acc": 90.0}')
    assert reproduce.main(["--summarize", str(tmp_path), "--no_plots"]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| MNIST Pair-45% | 90.00 |" in table
    assert "Not in the table: bad (seed 'one' is out of range" in table


def test_odd_values_in_metrics_draw_as_gaps(tmp_path: Path) -> None:
    records = [{"kind": "epoch", "outer": "x", "inner": None, "val_acc": "high", "test_acc": 10 ** 400},
               {"kind": "epoch", "outer": 0, "inner": 1, "val_acc": 50.0, "test_acc": 60.0},
               {"kind": "epoch", "outer": 0, "inner": 1, "val_acc": -1.7e308, "test_acc": 1.7e308},  # near the limits
               {"kind": "epoch", "outer": 0, "inner": 1, "val_acc": 5e-324, "test_acc": 55.0},
               {"kind": "round", "outer": "a", "inner": [1], "confident_size": "big", "precision": "x",
                "recall": None, "per_class_precision": 5},
               {"kind": "round", "outer": 0, "inner": 2, "confident_size": 10, "precision": 90.0,
                "per_class_precision": [90.0, "x", None]}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert plot.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "accuracy.png", "per_class_precision.png", "rounds.png"]


def test_summarize_warns_about_a_finished_run_it_cannot_plot(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    run_dir = one_run_sweep(tmp_path, b'{"test_acc": 90.0}')
    (run_dir / "metrics.jsonl").write_bytes(GARBAGE)
    assert reproduce.main(["--summarize", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: no plots for mnist-symmetric-0.2-seed1-ce" in err and "error:" not in err
    assert (tmp_path / "plots" / "test_accuracy.png").is_file()
