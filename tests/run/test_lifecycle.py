"""The shared run lifecycle (utils/run/lifecycle.py) and its files: how a run starts, the bounded
checkpoint cost, atomic writes with ordinary permissions, and stale temporary files."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from utils.errors import CheckpointError, UserError
from utils.run.atomic import atomic_write_text
from utils.run.checkpoint import load_checkpoint
from utils.run.config import parse_config
from utils.run.files import RunFiles
from utils.run.lifecycle import Checkpointer, cpu_copy, open_run_folder, start_run
from utils.train_config import TrainConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_checkpointer_writes_at_most_every_interval_and_keeps_the_rest_in_memory(tmp_path):
    clock = FakeClock()
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt", every_s=10, clock=clock)
    weights = torch.zeros(3)
    for epoch in range(1, 6):  # epochs end at t = 4, 8, 12, 16, 20
        clock.now += 4
        weights += 1
        checkpointer.save_soon({"epoch": epoch, "weights": weights})
    # written at t = 12 (epoch 3); epochs 4 and 5 end less than 10 s later: kept in memory
    assert checkpointer.writes == 1
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["epoch"] == 3 and torch.equal(saved["weights"], torch.full((3,), 3.0))
    assert checkpointer.pending["epoch"] == 5
    weights += 100  # the copy in memory is the state as of its epoch, not a view of the live tensor
    checkpointer.flush()
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["epoch"] == 5 and torch.equal(saved["weights"], torch.full((3,), 5.0))
    assert checkpointer.pending is None


def test_interval_zero_writes_after_every_epoch_and_a_disabled_one_never(tmp_path):
    every = Checkpointer(tmp_path / "a.pt", every_s=0)
    for epoch in range(3):
        assert every.save_soon({"epoch": epoch})
    assert every.writes == 3
    silent = Checkpointer(tmp_path / "b.pt", every_s=0, enabled=False)
    silent.save_soon({"epoch": 1})
    silent.flush()
    assert not (tmp_path / "b.pt").exists()


def test_cpu_copy_copies_nested_tensors():
    live = torch.ones(2)
    copy = cpu_copy({"a": [live, {"b": live}], "c": 3})
    live.zero_()
    assert torch.equal(copy["a"][0], torch.ones(2)) and torch.equal(copy["a"][1]["b"], torch.ones(2))
    assert copy["c"] == 3


def config_for(tmp_path, *extra):
    return parse_config(TrainConfig, ["--dataset", "digits", "--output_dir", str(tmp_path / "run"),
                                      "--model_dir", str(tmp_path / "model"), *extra], "x")


def test_start_run_decides_fresh_resume_finished_or_refuse(tmp_path, monkeypatch):
    from utils.run.checkpoint import checkpoint_of
    monkeypatch.chdir(tmp_path)
    config = config_for(tmp_path)
    files = RunFiles(config.run_dir)
    assert start_run(config, files).checkpoint is None and not files.run_dir.exists()
    open_run_folder(config, files, start_run(config, files))
    torch.save(checkpoint_of({"config": {}, "metrics_size": 0}, {}, {}, {}), files.checkpoint)
    with pytest.raises(UserError, match="already holds a run"):
        start_run(config, files)
    with pytest.raises(CheckpointError, match="other settings"):
        start_run(config_for(tmp_path, "--resume", "auto"), files)
    resumed = config_for(tmp_path, "--resume", "auto")
    files.write_result({"test_acc": 1.0, "config": dict(vars(resumed))})
    assert start_run(resumed, files).finished
    other = config_for(tmp_path, "--resume", "auto", "--lr", "0.5")
    with pytest.raises(UserError, match=r"finished run made with other settings \(--lr"):
        start_run(other, files)
    neutral = config_for(tmp_path, "--resume", "auto", "--num_threads", "1", "--checkpoint_every", "5")
    assert start_run(neutral, files).finished


def test_start_run_refuses_an_output_dir_that_is_or_lies_below_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    for where in ("file", "file/below"):
        config = parse_config(TrainConfig, ["--dataset", "digits", "--output_dir", str(tmp_path / where)], "x")
        with pytest.raises(UserError, match="is a file, not a folder"):
            start_run(config, RunFiles(config.run_dir))
    config = parse_config(TrainConfig, ["--dataset", "digits", "--model_dir", "file"], "x")
    with pytest.raises(UserError, match="--model_dir"):
        start_run(config, RunFiles(tmp_path / "run"))


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
        with open(tmp_path / "plain.json", "w") as handle:
            handle.write("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "result.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644


def test_temporary_files_left_by_a_kill_are_removed_at_the_next_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_for(tmp_path)
    files = RunFiles(config.run_dir)
    files.create()
    stale = files.run_dir / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    open_run_folder(config, files, start_run(config, files))
    assert not stale.exists()
    # a user's file in the folder: a fresh run refuses to start there; one of ours (same settings,
    # stopped before its first checkpoint) continues with --resume auto and leaves the file alone
    keep = files.run_dir / "notes.tmp"
    keep.write_text("a user's file")
    with pytest.raises(UserError, match="holds files this run would replace"):
        start_run(config, files)
    resumed = config_for(tmp_path, "--resume", "auto")
    open_run_folder(resumed, files, start_run(resumed, files))
    assert keep.read_text() == "a user's file"


def test_a_checkpoints_sections_cannot_shadow_each_other():
    from utils.run.checkpoint import SECTIONS, checkpoint_of
    method_state = {"config": "the method's own", "format": 99, "elapsed_s": -1, "torch": None}
    saved = checkpoint_of({"config": {"lr": 0.1}, "elapsed_s": 3.0}, {"epoch": 2}, method_state, {"torch": "state"})
    assert set(saved) == {"format", *SECTIONS} and saved["format"] == 4
    assert saved["header"] == {"config": {"lr": 0.1}, "elapsed_s": 3.0} and saved["method"] == method_state
