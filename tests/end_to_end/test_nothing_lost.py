"""Nothing lost, nothing silently wrong: one writer per run folder, launchers that stop their runs,
files we did not make never replaced, weight files never shared, flags never guessed, a resumed run
on its own data, and stop requests at any moment. Each hostile case ends with its exit code, one
line on stderr and no traceback, and leaves every file already on disk byte for byte as it was."""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.clothing_fixture import tiny_with_index
from tests.end_to_end.test_bad_input import assert_one_error_line, tree_snapshot
from tests.formats import random_vision_arrays, write_mnist
from tests.runs import MAIN, TINY_DIGITS, for_method, run_main

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2"]  # a run that ends in seconds
LONG_DIGITS = [*TINY_DIGITS, "--n_epoch", "15", "--max_outer_loop", "2", "--max_inner_loop", "3",
               "--checkpoint_every", "0"]


def start(script: Path, args: list[str], cwd: Path, own_group: bool = False) -> subprocess.Popen:
    """`own_group`: in a process group of its own, as a terminal's foreground job is (Ctrl-C reaches all of it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, process_group=0 if own_group else None)


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}): {process.stderr.read()[-800:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def lines_of(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main_in_process(args: list[str], cwd: Path, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """main.py's main() in this process (seconds faster than a new interpreter), as a finished process."""
    import main as main_module

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main_module.main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line_exit(done: subprocess.CompletedProcess, code: int, message: str) -> None:
    """The process ended with `code` and one line on stderr, `error: ...` holding `message`."""
    assert done.returncode == code, done.stderr
    assert_one_error_line(done.stderr, message)


# ------------------------------------------------------------------ one writer per run folder

def test_a_second_writer_on_a_run_folder_is_refused_naming_the_first(tmp_path):
    first = start(MAIN, LONG_DIGITS + ["--output_dir", "run"], tmp_path)
    wait_for(lambda: lines_of(tmp_path / "run" / "metrics.jsonl") >= 2, first)
    before = (tmp_path / "run" / "config.json").read_bytes()
    second = run_main(LONG_DIGITS + ["--output_dir", "run", "--resume", "auto"], tmp_path)
    one_line_exit(second, 2, f"is in use by another run (process {first.pid}")
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 75
    resumed = run_main(LONG_DIGITS + ["--output_dir", "run", "--resume", "auto", "--n_epoch", "4"], tmp_path)
    assert resumed.returncode == 2 and "other settings" in resumed.stderr  # the lock died with its process


def sweep_grid(folder: Path) -> Path:
    grid = folder / "grid.json"
    grid.write_text(json.dumps({"description": "a long digits run", "methods": ["memomentum"],
                                "flags": {"n_epoch": 15, "max_outer_loop": 2, "max_inner_loop": 3, "lr": 0.05,
                                          "checkpoint_every": 0, "no_progress": True},
                                "settings": [{"dataset": "digits", "noise_type": "instance", "noise_rate": 0.4}]}))
    return grid


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 75), (signal.SIGINT, 130), (signal.SIGKILL, -9)])
def test_a_stopped_launcher_stops_its_runs_after_they_save(tmp_path, sig, code):
    grid = sweep_grid(tmp_path)
    launcher = start(REPO / "reproduce.py", ["--grid", str(grid), "--seeds", "1", "--out", "sweep", "--no_plots"],
                     tmp_path)
    run_dir = tmp_path / "sweep" / "digits-instance-0.4-seed1-memomentum"
    wait_for(lambda: lines_of(run_dir / "metrics.jsonl") >= 3, launcher)
    holder = json.loads((run_dir / ".lock").read_text())
    launcher.send_signal(sig)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == code, stderr
    if sig != signal.SIGKILL:
        assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("stopped")
    wait_for(lambda: not pid_alive(holder["pid"]), timeout=120)  # the run did not outlive its launcher
    assert (run_dir / "checkpoint.pt").is_file()  # ... and it saved before it stopped
    if sig != signal.SIGTERM:
        return
    again = subprocess.run([sys.executable, str(REPO / "reproduce.py"), "--grid", str(grid), "--seeds", "1",
                            "--out", "sweep", "--no_plots"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming" in again.stdout and (run_dir / "result.json").is_file()


def test_ctrl_c_at_a_terminal_reaches_launcher_and_runs_once_and_they_save(tmp_path):
    grid = sweep_grid(tmp_path)
    launcher = start(REPO / "reproduce.py", ["--grid", str(grid), "--seeds", "1", "--out", "sweep", "--no_plots",
                                             "--extra=--checkpoint_every 100000"], tmp_path, own_group=True)
    run_dir = tmp_path / "sweep" / "digits-instance-0.4-seed1-memomentum"
    wait_for(lambda: lines_of(run_dir / "metrics.jsonl") >= 2, launcher)
    assert not (run_dir / "checkpoint.pt").exists()  # only the stop writes one
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C does: the launcher and its runs each get SIGINT
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, stderr
    assert (run_dir / "checkpoint.pt").is_file(), stderr  # the run was not asked twice, so it saved


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped) is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


# ------------------------------------------------------------------ files we did not make

@pytest.mark.parametrize("files", [{"metrics.jsonl": "{}\n"}, {"config.json": "{}"}, {"weights.pt": "x"}])
def test_a_fresh_run_never_replaces_files_it_did_not_make(tmp_path, files):
    (tmp_path / "run").mkdir()
    for name, text in files.items():
        (tmp_path / "run" / name).write_text(text)
    before = tree_snapshot(tmp_path)
    done = run_main(TINY_DIGITS + ["--output_dir", "run"], tmp_path)
    one_line_exit(done, 2, "holds files this run would replace")
    assert tree_snapshot(tmp_path) == before


def test_saved_noisy_labels_never_replace_a_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"precious")
    before = tree_snapshot(tmp_path)
    done = run_main(["--dataset", "digits", "--noise_only", "--save_noisy_labels", "run/checkpoint.pt"], tmp_path)
    one_line_exit(done, 2, "--save_noisy_labels run/checkpoint.pt exists already")
    assert tree_snapshot(tmp_path) == before


def test_saved_noisy_labels_are_kept_when_a_run_writes_the_same_again(tmp_path, monkeypatch, capsys):
    flags = ["--dataset", "digits", "--noise_only", "--save_noisy_labels", "labels.npz"]
    assert main_in_process(flags, tmp_path, monkeypatch, capsys).returncode == 0
    first = (tmp_path / "labels.npz").read_bytes()
    again = main_in_process(flags, tmp_path, monkeypatch, capsys)  # as a resumed run does
    assert again.returncode == 0 and "noisy labels already in labels.npz" in again.stdout
    assert (tmp_path / "labels.npz").read_bytes() == first
    other_seed = main_in_process(flags + ["--seed", "2"], tmp_path, monkeypatch, capsys)
    one_line_exit(other_seed, 2, "exists already and holds something else")
    assert (tmp_path / "labels.npz").read_bytes() == first


def test_foreign_or_damaged_run_files_are_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "result.json").write_text('{"accuracy": 99}')
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "config.json").mkdir()
    before = tree_snapshot(tmp_path)
    done = main_in_process(TINY_DIGITS + ["--output_dir", "foreign", "--resume", "auto"], tmp_path, monkeypatch, capsys)
    one_line_exit(done, 2, "is not a result of this project")
    done = main_in_process(TINY_DIGITS + ["--output_dir", "dir"], tmp_path, monkeypatch, capsys)
    one_line_exit(done, 2, "config.json is a folder")
    assert tree_snapshot(tmp_path) == before
    # a checkpoint whose metrics.jsonl is gone: resuming would report epochs that are not there
    args = TINY_DIGITS + SHORT + ["--output_dir", "run", "--checkpoint_every", "0"]
    assert main_in_process(args, tmp_path, monkeypatch, capsys).returncode == 0
    (tmp_path / "run" / "result.json").unlink()
    (tmp_path / "run" / "metrics.jsonl").unlink()
    before = tree_snapshot(tmp_path)
    done = main_in_process(args + ["--resume", "auto"], tmp_path, monkeypatch, capsys)
    one_line_exit(done, 2, "metrics.jsonl holds less than")
    assert tree_snapshot(tmp_path) == before


def test_a_run_resumed_in_another_folder_cuts_nothing_there_and_brings_its_record(tmp_path, monkeypatch, capsys):
    args = TINY_DIGITS + SHORT + ["--checkpoint_every", "0"]
    assert main_in_process(args + ["--output_dir", "a"], tmp_path, monkeypatch, capsys).returncode == 0
    (tmp_path / "a" / "result.json").unlink()
    record = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.jsonl").write_text('{"another": "run"}\n')
    before = tree_snapshot(tmp_path)
    moved = args + ["--resume", "a/checkpoint.pt"]
    one_line_exit(main_in_process(moved + ["--output_dir", "b"], tmp_path, monkeypatch, capsys),
                  2, "continues a run of another folder in b, which holds files of its own (metrics.jsonl)")
    assert tree_snapshot(tmp_path) == before
    assert main_in_process(moved + ["--output_dir", "c"], tmp_path, monkeypatch, capsys).returncode == 0
    assert (tmp_path / "c" / "metrics.jsonl").read_bytes() == record  # its epochs, none run again
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == record
    assert (tmp_path / "c" / "checkpoint.pt").is_file()  # a folder that stands on its own
    weights = [path.name for path in (tmp_path / "a").glob("*.pt") if path.name != "checkpoint.pt"]
    assert weights and all((tmp_path / "c" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
                           for name in weights)
    owner = json.loads((tmp_path / "model" / "digits-instance-0.4-1.owner.json").read_text())
    assert owner["run_dir"] == str((tmp_path / "c").resolve())  # c took over the run's weight files
    # the same command again (a requeued job) is pointed at the run that now goes on in c
    (tmp_path / "c" / "result.json").unlink()
    one_line_exit(main_in_process(moved + ["--output_dir", "c"], tmp_path, monkeypatch, capsys),
                  2, "continue that one with --output_dir c --resume auto")


def test_a_copy_of_a_checkpoint_in_its_own_folder_resumes_there(tmp_path, monkeypatch, capsys):
    args = TINY_DIGITS + SHORT + ["--checkpoint_every", "0", "--output_dir", "a"]
    assert main_in_process(args, tmp_path, monkeypatch, capsys).returncode == 0
    (tmp_path / "a" / "result.json").unlink()
    (tmp_path / "a" / "backup.pt").write_bytes((tmp_path / "a" / "checkpoint.pt").read_bytes())
    done = main_in_process(args + ["--resume", "a/backup.pt"], tmp_path, monkeypatch, capsys)
    assert done.returncode == 0 and "resumed from a/backup.pt" in done.stdout, done.stderr


def test_a_run_is_not_moved_while_it_goes_on_or_without_its_record(tmp_path, monkeypatch, capsys):
    args = TINY_DIGITS + SHORT + ["--checkpoint_every", "0"]
    assert main_in_process(args + ["--output_dir", "a"], tmp_path, monkeypatch, capsys).returncode == 0
    moved = args + ["--resume", "a/checkpoint.pt", "--output_dir", "c"]
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open('a/.lock', 'a'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
                              cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_exit(main_in_process(moved, tmp_path, monkeypatch, capsys), 2, "is still going")
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / "a" / "metrics.jsonl").unlink()
    one_line_exit(main_in_process(moved, tmp_path, monkeypatch, capsys), 2, "a/metrics.jsonl holds less than")
    assert not (tmp_path / "c").exists()


def test_the_index_builder_never_replaces_its_own_inputs(tmp_path, monkeypatch, capsys):
    import importlib

    data = tiny_with_index(tmp_path)
    key_list = data.root / "annotations" / "noisy_label_kv.txt"
    monkeypatch.chdir(tmp_path)
    before = tree_snapshot(tmp_path)
    index_main = importlib.import_module("Clothing1m-data").main
    for flags, message in ((["--output", str(key_list)], "is the annotation file noisy_label_kv.txt"),
                           (["--missing_images_list", str(key_list)], "is the annotation file"),
                           (["--missing_images_list", "same.txt", "--unreadable_list", "same.txt"], "the same file")):
        assert index_main(["--data_root", str(data.root), *flags]) == 2
        assert_one_error_line(capsys.readouterr().err, message)
    assert tree_snapshot(tmp_path) == before


# ------------------------------------------------------------------ weight files

def test_official_weight_files_no_run_of_ours_wrote_are_never_overwritten(tmp_path, monkeypatch, capsys):
    (tmp_path / "model").mkdir()
    theirs = tmp_path / "model" / "digits-instance-0.4-1_best.hdf5"  # as a checkout of the official code has
    theirs.write_bytes(b"the official code's weights")
    done = main_in_process(TINY_DIGITS + SHORT + ["--output_dir", "a"], tmp_path, monkeypatch, capsys)
    one_line_exit(done, 2, "digits-instance-0.4-1_best.hdf5 exists and no run of this project wrote it")
    assert theirs.read_bytes() == b"the official code's weights" and not (tmp_path / "a").exists()


def test_two_runs_never_share_official_weight_files(tmp_path, monkeypatch, capsys):
    assert main_in_process(TINY_DIGITS + SHORT + ["--output_dir", "a"], tmp_path, monkeypatch, capsys).returncode == 0
    before = tree_snapshot(tmp_path / "model")
    done = main_in_process(TINY_DIGITS + SHORT + ["--output_dir", "b", "--lr", "0.01"], tmp_path, monkeypatch, capsys)
    one_line_exit(done, 2, "belong to the run in")
    assert tree_snapshot(tmp_path / "model") == before and not (tmp_path / "b").exists()
    # another method has names of its own, beside Me-Momentum's official ones
    ce = for_method(TINY_DIGITS + SHORT, "ce") + ["--output_dir", "c"]
    assert main_in_process(ce, tmp_path, monkeypatch, capsys).returncode == 0
    assert (tmp_path / "model" / "digits-instance-0.4-1-ce_best.hdf5").is_file()


# ------------------------------------------------------------------ flags and settings

def test_shortened_flags_are_refused_everywhere(tmp_path, monkeypatch, capsys):
    import main as main_module
    import reproduce

    monkeypatch.chdir(tmp_path)
    assert main_module.main(["--dataset", "digits", "--noise_r", "0.0", "--noise_only"]) == 2
    assert_one_error_line(capsys.readouterr().err, "unrecognized arguments: --noise_r")
    assert reproduce.main(["--grid", "digits", "--seeds", "1", "--out", "s", "--extra=--noise_r 0.0", "--dry_run"]) == 2
    assert_one_error_line(capsys.readouterr().err, "main.py has no flag --noise_r")
    assert reproduce.main(["--grid", "digits", "--see", "7", "--out", "s"]) == 2
    assert_one_error_line(capsys.readouterr().err, "unrecognized arguments: --see")
    assert not (tmp_path / "s").exists()


def test_the_summary_refuses_a_result_of_other_settings_than_its_folder(tmp_path):
    from utils.sweeps.grid import expand_runs, parse_grid, write_sweep_record
    from utils.sweeps.summary import collect_summary

    grid = parse_grid({"settings": [{"dataset": "digits", "noise_type": "instance", "noise_rate": 0.4}]}, "g", "g")
    write_sweep_record(tmp_path, grid, expand_runs(grid, ["memomentum"], [1]))
    run_dir = tmp_path / "digits-instance-0.4-seed1-memomentum"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"test_acc": 90.0, "dataset": "digits", "noise_type": "instance",
                                                     "noise_rate": 0.0, "seed": 1, "method": "memomentum"}))
    (outcome,) = collect_summary(tmp_path).rows[0].cells["memomentum"].outcomes
    assert outcome.status == "corrupt" and "digits-instance-0.0 seed 1 memomentum" in outcome.problem


def test_a_split_with_nothing_to_train_or_validate_on_is_refused(tmp_path, monkeypatch, capsys):
    import main as main_module

    monkeypatch.chdir(tmp_path)
    before = tree_snapshot(tmp_path)
    assert main_module.main(TINY_DIGITS + ["--data_percent", "0.0001", "--output_dir", "run"]) == 2
    assert_one_error_line(capsys.readouterr().err, "leaves none of the 1438 training examples to train on")
    assert main_module.main(for_method(TINY_DIGITS, "ce") + ["--data_percent", "1", "--output_dir", "run"]) == 2
    assert_one_error_line(capsys.readouterr().err, "for validation")
    assert tree_snapshot(tmp_path) == before


def test_a_resumed_run_refuses_other_data_whatever_the_path(tmp_path, monkeypatch, capsys):
    for folder, seed in (("one", 0), ("two", 1)):
        write_mnist(tmp_path / folder, *random_vision_arrays("mnist", 200, 40, seed=seed))
    args = ["--dataset", "mnist", "--n_epoch", "2", "--max_outer_loop", "1", "--max_inner_loop", "2",
            "--batch_size", "32", "--output_dir", "run", "--checkpoint_every", "0", "--no_progress"]
    assert main_in_process(args + ["--data_path", "one"], tmp_path, monkeypatch, capsys).returncode == 0
    (tmp_path / "run" / "result.json").unlink()
    before = tree_snapshot(tmp_path / "run")
    done = main_in_process(args + ["--data_path", "two", "--resume", "auto"], tmp_path, monkeypatch, capsys)
    one_line_exit(done, 2, "was made from other data")
    assert tree_snapshot(tmp_path / "run") == before
    resumed = main_in_process(args + ["--data_path", "one", "--resume", "auto"], tmp_path, monkeypatch, capsys)
    assert resumed.returncode == 0


def test_a_resumed_clothing_run_refuses_another_index(tmp_path):
    first, second = tiny_with_index(tmp_path / "a"), tiny_with_index(tmp_path / "b")
    index = np.load(second.root / "Clothing1m-data.npy", allow_pickle=True).item()
    index["train_labels"] = (index["train_labels"] + 1) % 14
    from data.clothing_index import index_to_bytes
    (second.root / "Clothing1m-data.npy").write_bytes(index_to_bytes(index))
    flags = ["--arch", "resnet18", "--image_size", "32", "--no_pretrain", "--n_epoch", "1", "--max_inner_loop", "1",
             "--max_outer_loop", "2", "--num_workers", "0", "--batch_size", "8", "--eval_batch_size", "16",
             "--output_dir", "run", "--no_progress", "--skip_bad_images", "--checkpoint_every", "0"]
    clothing = REPO / "Clothing.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert subprocess.run([sys.executable, str(clothing), "--data_root", str(first.root), *flags], cwd=tmp_path,
                          capture_output=True, timeout=300, env=env).returncode == 0
    (tmp_path / "run" / "result.json").unlink()
    done = subprocess.run([sys.executable, str(clothing), "--data_root", str(second.root), *flags, "--resume", "auto"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    one_line_exit(done, 2, "was made from other data")


# ------------------------------------------------------------------ annotation files as people save them

@pytest.mark.parametrize("edit,message", [
    (lambda lines: [lines[0], lines[0], *lines[1:]], "is listed a second time"),
    (lambda lines: ["../outside.jpg", *lines], "leaves the data root"),
    (lambda lines: ["/etc/passwd", *lines], "leaves the data root"),
])
def test_key_lists_as_people_save_them(tmp_path, edit, message, monkeypatch, capsys):
    data = tiny_with_index(tmp_path)
    key_list = data.root / "annotations" / "clean_test_key_list.txt"
    key_list.write_text("\n".join(edit(key_list.read_text().splitlines())) + "\n")
    monkeypatch.chdir(tmp_path)
    before = tree_snapshot(tmp_path)
    assert importlib.import_module("Clothing1m-data").main(["--data_root", str(data.root), "--drop_unlabelled"]) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize("label,accepted", [("٣", False), ("+3", False), ("3_0", False), ("3.0", False), ("03", True)])
def test_labels_written_in_other_digit_forms(tmp_path, label, accepted):
    from data.clothing_index import parse_label_kv
    from utils.errors import DatasetError

    if accepted:
        assert parse_label_kv([f"images/a.jpg {label}"], "kv") == {"images/a.jpg": 3}
    else:
        with pytest.raises(DatasetError, match="not a whole number written with the digits 0-9"):
            parse_label_kv([f"images/a.jpg {label}"], "kv")


def test_a_byte_order_mark_and_an_image_in_two_splits(tmp_path, monkeypatch, capsys):
    data = tiny_with_index(tmp_path)
    annotations = data.root / "annotations"
    kv = annotations / "clean_label_kv.txt"
    kv.write_bytes(b"\xef\xbb\xbf" + kv.read_bytes())  # as some editors save UTF-8
    test_keys = annotations / "clean_test_key_list.txt"
    train_first = (annotations / "noisy_train_key_list.txt").read_text().splitlines()[0]
    test_keys.write_text(test_keys.read_text() + train_first + "\n")
    (annotations / "clean_label_kv.txt").write_bytes(kv.read_bytes() + f"{train_first} 3\n".encode())
    monkeypatch.chdir(tmp_path)
    assert importlib.import_module("Clothing1m-data").main(["--data_root", str(data.root), "--drop_unlabelled",
                                                            "--no_progress"]) == 0
    assert "1 image(s) are listed both for train and for test" in capsys.readouterr().out


# ------------------------------------------------------------------ stops at any moment, unusual environments

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 75), (signal.SIGUSR1, 75), (signal.SIGINT, 130)])
def test_a_stop_during_the_imports_is_one_line_and_the_documented_code(tmp_path, sig, code):
    process = start(MAIN, ["--dataset", "digits"], tmp_path)
    time.sleep(0.4)  # torch takes seconds to import
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("stopped (") and "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()


def test_unusual_but_legal_environments(tmp_path, monkeypatch, capsys):
    before = tree_snapshot(tmp_path)
    one_line_exit(main_in_process(["--dataset", "digits", "--num_threads", "100000"], tmp_path, monkeypatch, capsys),
                  2, "--num_threads must be between 0")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="ascii")
    done = subprocess.run([sys.executable, str(MAIN), "--dataset", "mnist", "--data_path", "données"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "donn\\xe9es" in done.stderr
    assert tree_snapshot(tmp_path) == before
    # a batch of one image anywhere in the epoch, for a network whose last BatchNorm sees 1x1 values
    batch_of_one = TINY_DIGITS + ["--network", "cnn9", "--batch_size", "1", "--n_epoch", "1", "--output_dir", "run"]
    one_line_exit(main_in_process(batch_of_one, tmp_path, monkeypatch, capsys), 2,
                  "too small for the network's BatchNorm")
    assert not (tmp_path / "run" / "result.json").exists()


def test_an_index_of_another_shape_is_one_line(tmp_path, monkeypatch, capsys):
    data = tiny_with_index(tmp_path)
    np.save(data.root / "Clothing1m-data.npy", np.arange(6))
    monkeypatch.chdir(tmp_path)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        code = importlib.import_module("Clothing").main(["--data_root", str(data.root), "--no_pretrain",
                                                          "--arch", "resnet18", "--output_dir", "run"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "index file")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("recorded_rate", [None, 0.2])
def test_the_summary_accepts_a_human_noise_result_whatever_rate_it_records(tmp_path, recorded_rate):
    from utils.sweeps.grid import expand_runs, parse_grid, write_sweep_record
    from utils.sweeps.summary import collect_summary

    grid = parse_grid({"settings": [{"dataset": "cifar10", "noise_type": "worst", "noise_rate": None}]}, "g", "g")
    (run,) = expand_runs(grid, ["memomentum"], [1])
    write_sweep_record(tmp_path, grid, [run])
    run_dir = tmp_path / run.name
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"test_acc": 80.0, "dataset": "cifar10", "noise_type": "worst",
                                                     "noise_rate": recorded_rate, "seed": 1, "method": "memomentum"}))
    (outcome,) = collect_summary(tmp_path).rows[0].cells["memomentum"].outcomes
    assert outcome.status == "finished" and outcome.test_acc == 80.0, outcome.problem
