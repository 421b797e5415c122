"""Interrupted runs resume exactly (issue: resumable runs): kills at several points, SIGTERM,
corrupt checkpoints, NaN losses, config mismatches, a full disk while saving."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import main as main_module
import utils.run.atomic
from tests.end_to_end.test_bad_input import tree_snapshot
from tests.formats import random_vision_arrays, write_mnist
from tests.runs import (MAIN, TINY_DIGITS, SimulatedKill, comparable, kill_on_call, kill_then_resume, run_main,
                        uninterrupted)
from utils.run.atomic import atomic_write_bytes
from utils.methods.memomentum import MeMomentum


KILL_POINTS = {
    # mid-epoch: after some SGD steps changed the in-memory model
    "mid_epoch": lambda p: kill_on_call(p, torch.optim.SGD, "step", 20),
    # mid-save: the temporary checkpoint is written but never renamed over the old one
    "mid_save": lambda p: kill_on_call(p, utils.run.atomic.os, "replace", 9),
    # between rounds: the confident set was extracted and logged, nothing checkpointed since
    "between_rounds": lambda p: kill_on_call(p, MeMomentum, "extract_confident_examples", 2,
                                             after=True),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_digits_run_resumes_bit_identically(tmp_path, monkeypatch, point):
    args = TINY_DIGITS + ["--output_dir", "run", "--checkpoint_every", "0"]
    reference = uninterrupted(tmp_path, monkeypatch, args)
    assert kill_then_resume(tmp_path, monkeypatch, args, KILL_POINTS[point]) == reference


def test_killed_mnist_file_run_resumes_bit_identically(tmp_path, monkeypatch):
    write_mnist(tmp_path / "files", *random_vision_arrays("mnist", 400, 60, 5))
    args = ["--dataset", "mnist", "--data_path", str(tmp_path / "files"), "--noise_type", "pairflip",
            "--noise_rate", "0.45", "--n_epoch", "3", "--max_outer_loop", "2", "--max_inner_loop", "3",
            "--batch_size", "64", "--lr", "0.05", "--no_progress", "--output_dir", "run", "--checkpoint_every", "0"]
    reference = uninterrupted(tmp_path, monkeypatch, args)
    assert kill_then_resume(tmp_path, monkeypatch, args, KILL_POINTS["mid_epoch"]) == reference


class EpochClock:
    """Stands for time.monotonic in the lifecycle: one second passes per reading, so a checkpoint
    interval of a few seconds falls after a few epochs, the same in every run."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def kill_once_epochs_are_unsaved(patch, run_dir, steps=2):
    """Kill at an SGD step once `steps` steps have run while the checkpoint on disk lags
    metrics.jsonl by at least one finished epoch: wherever this CPU's numbers lead the run (its
    confident sets, so its number of steps per epoch), the resumed run has epochs to repeat."""
    original = torch.optim.SGD.step
    unsaved_steps = {"n": 0}

    def step(self, *args, **kwargs):
        checkpoint = run_dir / "checkpoint.pt"
        if checkpoint.exists():
            saved_size = torch.load(checkpoint, weights_only=True)["header"]["metrics_size"]
            if saved_size < (run_dir / "metrics.jsonl").stat().st_size:
                unsaved_steps["n"] += 1
                if unsaved_steps["n"] > steps:
                    raise SimulatedKill
        return original(self, *args, **kwargs)

    patch.setattr(torch.optim.SGD, "step", step)


@pytest.mark.parametrize("point", ["mid_epoch", "between_rounds"])
def test_interval_checkpoints_resume_bit_identically(tmp_path, monkeypatch, point):
    """With --checkpoint_every falling mid-run, a resumed run repeats the epochs after the last written
    checkpoint and still gives the uninterrupted run's metrics and result."""
    import utils.run.lifecycle as lifecycle

    args = TINY_DIGITS + ["--output_dir", "run", "--checkpoint_every", "5"]
    monkeypatch.setattr(lifecycle, "time", EpochClock())
    reference = uninterrupted(tmp_path, monkeypatch, args)
    folder = tmp_path / "interrupted"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(lifecycle, "time", EpochClock())
    with monkeypatch.context() as patch:
        {"mid_epoch": lambda p: kill_once_epochs_are_unsaved(p, folder / "run"),
         "between_rounds": KILL_POINTS["between_rounds"]}[point](patch)
        with pytest.raises(SimulatedKill):
            main_module.main(args)
    saved = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)
    lines = (folder / "run" / "metrics.jsonl").read_text().count("\n")
    assert saved["header"]["metrics_size"] < (folder / "run" / "metrics.jsonl").stat().st_size  # epochs to repeat
    assert 1 <= saved["position"]["epochs_run"] < lines
    assert main_module.main(args + ["--resume", "auto"]) == 0
    assert comparable(folder / "run") == reference


def start_main(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(MAIN), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path, count, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines")


@pytest.mark.parametrize("sig,expected_code", [(signal.SIGKILL, -signal.SIGKILL),
                                               (signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_real_signal_then_resume_equals_uninterrupted(tmp_path, sig, expected_code):
    # the default interval (60 s): a stop request writes the last finished epoch's state from memory
    args = TINY_DIGITS + ["--output_dir", "run"] + (["--checkpoint_every", "0"] if sig == signal.SIGKILL else [])
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert run_main(args, tmp_path / "a").returncode == 0
    process = start_main(args, tmp_path / "b")
    wait_for_lines(tmp_path / "b" / "run" / "metrics.jsonl", 7, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == expected_code, stderr
    if sig != signal.SIGKILL:  # an orderly stop: one line, the last finished epoch written
        assert "--resume auto" in stderr and (tmp_path / "b" / "run" / "checkpoint.pt").is_file()
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    resumed = run_main(args + ["--resume", "auto"], tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(tmp_path / "b" / "run") == comparable(tmp_path / "a" / "run")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    args = TINY_DIGITS + ["--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2",
                          "--output_dir", "run"]
    assert run_main(args, tmp_path).returncode == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    (tmp_path / "run" / "result.json").unlink()
    done = run_main(args + ["--resume", "auto"], tmp_path)
    assert done.returncode == 2
    assert str(checkpoint.name) in done.stderr and "corrupt or truncated" in done.stderr
    assert "Traceback" not in done.stderr


DAMAGED_CHECKPOINTS = {
    "loop state with an unknown field": (lambda saved: saved["position"].update(no_such_field=1),
                                         "does not hold the state of this run's loop"),
    "method state without its network": (lambda saved: saved["method"].pop("model"),
                                         "does not hold the state of this run's loop"),
    "generators missing": (lambda saved: saved.pop("generators"), "is damaged: its section 'generators' is missing"),
    "generators a number": (lambda saved: saved.update(generators=5), "is damaged: its section 'generators' is 5"),
    "generator state not a tensor": (lambda saved: saved["generators"].update(torch=1), "states are not tensors"),
    "metrics size a string": (lambda saved: saved["header"].update(metrics_size="a"),
                              "its entry 'metrics_size' is a str"),
    "metrics size negative": (lambda saved: saved["header"].update(metrics_size=-3), "its entry 'metrics_size' is -3"),
    "elapsed time missing": (lambda saved: saved["header"].pop("elapsed_s"), "its entry 'elapsed_s' is missing"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_CHECKPOINTS))
def test_a_damaged_checkpoint_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, case):
    damage, message = DAMAGED_CHECKPOINTS[case]
    args = TINY_DIGITS + ["--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2", "--output_dir", "run"]
    monkeypatch.chdir(tmp_path)
    assert main_module.main(args) == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=False)
    damage(saved)
    torch.save(saved, checkpoint)
    (tmp_path / "run" / "result.json").unlink()
    before = tree_snapshot(tmp_path)
    capsys.readouterr()
    assert main_module.main(args + ["--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert tree_snapshot(tmp_path) == before  # refused before anything was written


def test_resume_refuses_other_settings(tmp_path):
    args = TINY_DIGITS + ["--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2",
                          "--output_dir", "run"]
    assert run_main(args, tmp_path).returncode == 0
    (tmp_path / "run" / "result.json").unlink()
    done = run_main(args + ["--resume", "auto", "--lr", "0.2"], tmp_path)
    assert done.returncode == 2 and "--lr (saved 0.05, given 0.2)" in done.stderr
    neutral = run_main(args + ["--resume", "auto", "--no_progress"], tmp_path)
    assert neutral.returncode == 0, neutral.stderr


def test_finished_run_is_not_run_again(tmp_path):
    args = TINY_DIGITS + ["--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2",
                          "--output_dir", "run"]
    assert run_main(args, tmp_path).returncode == 0
    again = run_main(args + ["--resume", "auto"], tmp_path)
    assert again.returncode == 0 and "has finished" in again.stdout


def test_existing_run_is_never_overwritten(tmp_path):
    args = TINY_DIGITS + ["--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2",
                          "--output_dir", "run"]
    assert run_main(args, tmp_path).returncode == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = run_main(args, tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_non_finite_loss_names_epoch_and_checkpoint(tmp_path):
    done = run_main(TINY_DIGITS + ["--lr", "1e12", "--output_dir", "run"], tmp_path)
    assert done.returncode == 3, done.stderr
    assert "epoch" in done.stderr and "last good checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_full_disk_while_saving_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    atomic_write_bytes(target, b"previous")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(utils.run.atomic.os, "fsync", no_space)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_runs_of_the_earlier_code_are_recognised(tmp_path, monkeypatch, capsys):
    """A finished run whose config predates today's flags is finished (a missing flag means its
    default); an unfinished one whose checkpoint has another layout is refused in one line."""
    monkeypatch.chdir(tmp_path)
    args = TINY_DIGITS + ["--output_dir", "run", "--max_outer_loop", "1", "--checkpoint_every", "0"]
    assert main_module.main(args) == 0
    result_file = tmp_path / "run" / "result.json"
    result = json.loads(result_file.read_text())
    for newer in ("compile", "checkpoint_every", "save_rounds"):
        del result["config"][newer]
    result_file.write_text(json.dumps(result))
    capsys.readouterr()
    assert main_module.main(args + ["--resume", "auto"]) == 0
    assert "has finished" in capsys.readouterr().out
    result_file.unlink()
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    del checkpoint["format"]  # as the code before the run lifecycle wrote them
    torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    assert main_module.main(args + ["--resume", "auto"]) == 2
    error = capsys.readouterr().err
    assert "checkpoint format 1" in error and len(error.strip().splitlines()) == 1
