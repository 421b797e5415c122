"""Hostile input to main.py, Clothing.py and Clothing1m-data.py: every case ends with exit code 2, one
`error: ...` line on stderr, no traceback, and nothing already on disk changed.
(reproduce.py and plot.py have their own table in tests/sweeps/test_bad_input.py.)"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import main as main_module
from tests.clothing_fixture import make_tiny_clothing1m
from tests.formats import random_vision_arrays, write_idx, write_mnist

DIGITS = ["--dataset", "digits", "--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2",
          "--no_progress"]


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with a hash of its contents (a link that leads nowhere: its target)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else
            f"link to {os.readlink(path)}" if path.is_symlink() and not path.exists() else "dir"
            for path in sorted(root.rglob("*"))}


def prepare_files(tmp: Path) -> None:
    """What the hostile cases point at: a plain file, a folder, a finished run, broken MNIST folders."""
    (tmp / "a_file").write_text("not a folder")
    (tmp / "a_folder").mkdir()
    (tmp / "a_link").symlink_to(tmp / "a_file")
    (tmp / "loop1").symlink_to(tmp / "loop2")
    (tmp / "loop2").symlink_to(tmp / "loop1")
    finished = tmp / "finished"
    finished.mkdir()
    (finished / "result.json").write_text(json.dumps({"test_acc": 50.0, "config": {"lr": 0.5}}))
    write_mnist(tmp / "dir_data", *random_vision_arrays("mnist", 20, 5, 0))
    images = tmp / "dir_data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.unlink()
    images.with_suffix("").mkdir()  # a folder where the image file should be
    write_mnist(tmp / "empty_data", *random_vision_arrays("mnist", 20, 5, 0))
    raw = tmp / "empty_data" / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (raw / name).unlink()
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8), gzip=False)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros((0,), np.uint8), gzip=False)


MAIN_CASES = {
    "rate 1": (["--noise_rate", "1.0"], "--noise_rate must be in [0, 1)"),
    "unknown dataset": (["--dataset", "svhn"], "invalid choice"),
    "unknown flag": (["--learning_rate", "0.1"], "unrecognized arguments"),
    "not a number": (["--lr", "fast"], "invalid float value"),
    "negative seed": (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    "huge seed": (["--seed", str(2**32)], "--seed must be in [0, 2**32)"),
    "zero batch": (["--batch_size", "0"], "--batch_size must be at least 1"),
    "negative interval": (["--checkpoint_every", "-1"], "--checkpoint_every must be >= 0"),
    "negative threads": (["--num_threads", "-2"], "--num_threads must be between 0"),
    "one inner loop": (["--max_inner_loop", "1"], "--max_inner_loop 1 runs no inner round"),
    "symmetric_all rate": (["--noise_type", "symmetric_all", "--noise_rate", "1.5"], "--noise_rate"),
    "unknown device": (["--device", "tpu9"], "--device tpu9"),
    "absent cuda device": (["--device", "cuda:99"], "--device cuda:99"),
    "absent mps": (["--device", "mps"], "--device mps") if not torch.backends.mps.is_available() else
                  (["--device", "cuda:99"], "--device cuda:99"),
    "output dir is a file": (["--output_dir", "a_file"], "is a file, not a folder"),
    "output dir below a file": (["--output_dir", "a_file/run"], "is a file, not a folder"),
    "model dir is a file": (["--model_dir", "a_file"], "--model_dir"),
    "labels export to a folder": (["--save_noisy_labels", "a_folder"], "is a folder"),
    "labels export to a link": (["--save_noisy_labels", "a_link"], "--save_noisy_labels a_link is a link"),
    "resume from a folder": (["--resume", "a_folder"], "is a directory"),
    "resume from nothing": (["--resume", "missing.pt"], "no such checkpoint"),
    "finished with other flags": (["--output_dir", "finished", "--resume", "auto"],
                                  "finished run made with other settings"),
    "data file is a folder": (["--dataset", "mnist", "--data_path", "dir_data"], "is a directory"),
    "no examples": (["--dataset", "mnist", "--data_path", "empty_data"], "train-images-idx3-ubyte"),
    "missing data": (["--dataset", "mnist", "--data_path", "nowhere"], "pass --download"),
    "unwritable output": (["--output_dir", "/proc/forbidden/run"], "/proc/forbidden"),
    "nan learning rate": (["--lr", "nan"], "--lr must be a finite number, got nan"),
    "infinite interval": (["--checkpoint_every", "inf"], "--checkpoint_every must be a finite number"),
    "huge epoch count": (["--n_epoch", "1" + "0" * 30], "--n_epoch must be at most 1000000"),
    "huge batch": (["--batch_size", str(2 ** 63)], "--batch_size must be at most 1000000"),
}

# Settings under which a method cannot train, and flags it never reads (no Me-Momentum-only flags here).
METHOD_CASES = {
    "co-teaching, one epoch": (["--method", "coteaching", "--n_epoch", "1"], "--n_epoch 1 trains nothing with Co-teaching"),
    "co-teaching, exponent 0": (["--method", "coteaching", "--exponent", "0"], "--exponent must be positive"),
    "co-teaching, nan exponent": (["--method", "coteaching", "--exponent", "nan"], "--exponent must be a finite number"),
    "co-teaching, batch above the split": (["--method", "coteaching", "--batch_size", "5000", "--tensorboard"],
                                           "--batch_size 5000 is larger than the training split (1294 examples)"),
    "co-teaching, huge ramp": (["--method", "coteaching", "--num_gradual", str(10 ** 12)], "--num_gradual must be at most"),
    "co-teaching, --sgd": (["--method", "coteaching", "--sgd", "plain"], "--sgd has no effect with --method coteaching"),
    "co-teaching, --select": (["--method", "coteaching", "--select", "small_loss"], "--select has no effect"),
    "ce, --max_inner_loop": (["--method", "ce", "--max_inner_loop", "5"], "--max_inner_loop has no effect with --method ce"),
    "ce, --max_outer_loop": (["--method", "ce", "--max_outer_loop", "1"], "--max_outer_loop has no effect"),
}


@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_main_py_refuses_what_a_method_cannot_train_or_never_reads(tmp_path, monkeypatch, capsys, case):
    args, message = METHOD_CASES[case]
    monkeypatch.chdir(tmp_path)
    base = ["--dataset", "digits", "--n_epoch", "2", "--no_progress", "--output_dir", "run"]
    assert_refused_leaving_all_as_it_was(lambda: main_module.main(base + args), message, capsys, tmp_path)


@pytest.mark.parametrize("case", sorted(MAIN_CASES))
def test_main_py_hostile_input(tmp_path, monkeypatch, capsys, case):
    args, message = MAIN_CASES[case]
    monkeypatch.chdir(tmp_path)
    prepare_files(tmp_path)
    assert_refused_leaving_all_as_it_was(lambda: main_module.main(DIGITS + args), message, capsys, tmp_path)


def assert_refused_leaving_all_as_it_was(entry_point: Callable[[], int], message: str, capsys, *roots: Path) -> None:
    """`entry_point()` exits with 2 and one error line holding `message`; nothing under `roots` changed."""
    before = [tree_snapshot(root) for root in roots]
    assert entry_point() == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert [tree_snapshot(root) for root in roots] == before


def assert_one_error_line(stderr: str, message: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0] and "Traceback" not in stderr


def test_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data is read (no handler installed yet): no traceback, exit 130."""
    import utils.experiments as experiments

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "load_dataset", interrupted)
    assert main_module.main(DIGITS) == 130
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and "interrupted" in stderr and "Traceback" not in stderr


def test_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import utils.run.atomic as atomic

    monkeypatch.chdir(tmp_path)
    assert main_module.main(DIGITS + ["--output_dir", "run", "--checkpoint_every", "0"]) == 0
    before = tree_snapshot(tmp_path / "run")

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "run/.checkpoint.pt.tmp")

    monkeypatch.setattr(atomic.os, "replace", full)
    (tmp_path / "run" / "result.json").unlink()  # so that --resume auto runs again and saves
    before.pop("result.json")
    before.pop(".lock")  # the resumed run signs the lock with its own start time
    assert main_module.main(DIGITS + ["--output_dir", "run", "--resume", "auto", "--checkpoint_every", "0"]) == 2
    assert_one_error_line(capsys.readouterr().err, "No space left on device")
    assert {name: digest for name, digest in tree_snapshot(tmp_path / "run").items()
            if name in before} == before


@pytest.fixture(scope="module")
def tiny_clothing(tmp_path_factory):
    return make_tiny_clothing1m(tmp_path_factory.mktemp("clothing") / "Clothing1M")


@pytest.fixture(scope="module")
def clothing_index(tiny_clothing):
    assert importlib.import_module("Clothing1m-data").main(["--data_root", str(tiny_clothing.root),
                                                            "--drop_unlabelled", "--no_progress"]) == 0
    return tiny_clothing.root


def clothing_main(argv: list[str]) -> int:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        return importlib.import_module("Clothing").main(argv)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


CLOTHING_CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "too few classes": (lambda root, tmp: ["--data_root", str(root), "--num_classes", "3"], "--num_classes"),
    "no index": (lambda root, tmp: ["--data_root", str(tmp / "a_folder")], "Clothing1m-data.npy"),
    "unknown device": (lambda root, tmp: ["--data_root", str(root), "--device", "tpu9"], "--device tpu9"),
    "negative seed": (lambda root, tmp: ["--data_root", str(root), "--seed", "-3"], "--seed"),
    "output dir is a file": (lambda root, tmp: ["--data_root", str(root), "--output_dir", str(tmp / "a_file")],
                             "is a file, not a folder"),
    "resume from a folder": (lambda root, tmp: ["--data_root", str(root), "--resume", str(tmp / "a_folder")],
                             "is a directory"),
    "beta out of range": (lambda root, tmp: ["--data_root", str(root), "--beta", "1.5"], "--beta"),
    "zero image size": (lambda root, tmp: ["--data_root", str(root), "--image_size", "0"], "--image_size"),
    "nan beta": (lambda root, tmp: ["--data_root", str(root), "--beta", "nan"], "--beta must be a finite number"),
    "infinite learning rate": (lambda root, tmp: ["--data_root", str(root), "--lr", "inf"],
                               "--lr must be a finite number"),
    "huge epoch count": (lambda root, tmp: ["--data_root", str(root), "--n_epoch", str(10 ** 20)],
                         "--n_epoch must be at most 1000000"),
    "huge image size": (lambda root, tmp: ["--data_root", str(root), "--image_size", str(10 ** 12)],
                        "--image_size must be at most 1000000"),
    "output dir a link loop": (lambda root, tmp: ["--data_root", str(root), "--output_dir", str(tmp / "loop1")],
                               "loop1 is a link that leads nowhere (or back to itself)"),
}


@pytest.mark.parametrize("case", sorted(CLOTHING_CASES))
def test_clothing_py_hostile_input(clothing_index, tmp_path, monkeypatch, capsys, case):
    make_args, message = CLOTHING_CASES[case]
    monkeypatch.chdir(tmp_path)
    prepare_files(tmp_path)
    flags = ["--arch", "resnet18", "--image_size", "40", "--no_pretrain", "--num_workers", "0", "--no_progress"]
    assert_refused_leaving_all_as_it_was(lambda: clothing_main(flags + make_args(clothing_index, tmp_path)),
                                         message, capsys, tmp_path, clothing_index)


INDEX_CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "no annotations": (lambda root, tmp: ["--data_root", str(tmp / "a_folder")], "does not exist"),
    "output is a folder": (lambda root, tmp: ["--data_root", str(root), "--output", str(tmp / "a_folder")],
                           "is a folder"),
    "list below a file": (lambda root, tmp: ["--data_root", str(root), "--missing_images_list",
                                             str(tmp / "a_file" / "missing.txt")], "is a file, not a folder"),
    "unlabelled keys": (lambda root, tmp: ["--data_root", str(root), "--output", str(tmp / "index.npy")],
                        "--drop_unlabelled"),
    "no classes": (lambda root, tmp: ["--data_root", str(root), "--num_classes", "0"], "--num_classes"),
    "huge class count": (lambda root, tmp: ["--data_root", str(root), "--num_classes", str(10 ** 30)],
                         "--num_classes must be at most 1000000"),
    "negative workers": (lambda root, tmp: ["--data_root", str(root), "--num_workers", "-5"], "--num_workers must be -1"),
    "huge workers": (lambda root, tmp: ["--data_root", str(root), "--num_workers", str(10 ** 12)],
                     "--num_workers must be at most 1000000"),
    "output a link": (lambda root, tmp: ["--data_root", str(root), "--output", str(tmp / "a_link")], "is a link"),
    "data root a link loop": (lambda root, tmp: ["--data_root", str(tmp / "loop1")], "loop1"),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_clothing1m_data_py_hostile_input(tiny_clothing, tmp_path, monkeypatch, capsys, case):
    make_args, message = INDEX_CASES[case]
    monkeypatch.chdir(tmp_path)
    prepare_files(tmp_path)
    index_main = importlib.import_module("Clothing1m-data").main
    assert_refused_leaving_all_as_it_was(lambda: index_main(make_args(tiny_clothing.root, tmp_path) + ["--no_progress"]),
                                         message, capsys, tmp_path)
