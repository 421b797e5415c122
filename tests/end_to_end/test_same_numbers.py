"""The promise that a change of structure moved no number, kept on any machine: today's entry points
and those of an earlier commit (from git history, tests/reference_code.py), run here with the same
flags, must give the same figures and metrics.jsonl, bit for bit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.clothing_fixture import tiny_with_index
from tests.reference_code import REPO, reference_tree
from tests.runs import MAIN, TINY_DIGITS, comparable, for_method, run_main

# a0495f9: the code before the one training step (utils/engine.py, run_steps) and the task interface,
# which its own tests held to 54243a0 (the code before the run driver and the methods package) for
# Me-Momentum and CE, on digits and on Clothing1M, and to 22c56a4 (before the run-lifecycle redesign).
BEFORE_STEP_INTERFACE = "a0495f9"


def same_numbers_as(commit, args, tmp_path):
    """Run `args` through today's main.py and through `commit`'s, here; both must give equal numbers."""
    reference = reference_tree(commit, tmp_path / "reference-code")
    runs = {}
    for side, script in (("today", MAIN), ("reference", reference / "main.py")):
        folder = tmp_path / side
        folder.mkdir()
        done = run_main(args + ["--output_dir", "run"], folder, script=script)
        assert done.returncode == 0, done.stderr
        runs[side] = comparable(folder / "run")
    (result, metrics), (expected_result, expected_metrics) = runs["today"], runs["reference"]
    assert {key: result[key] for key in expected_result} == expected_result
    assert metrics == expected_metrics
    return result


@pytest.mark.parametrize("method", ["memomentum", "ce", "coteaching"])
def test_main_py_gives_the_numbers_of_the_code_before_the_step_interface(tmp_path, method):
    args = for_method(TINY_DIGITS, method)
    if method == "coteaching":
        args += ["--n_epoch", "5", "--num_gradual", "2", "--num_iter_per_epoch", "3", "--batch_size", "64"]
    result = same_numbers_as(BEFORE_STEP_INTERFACE, args, tmp_path)
    assert result["test_acc"] > 0


def test_clothing_py_gives_the_numbers_of_the_code_before_the_step_interface(tmp_path):
    data = tiny_with_index(tmp_path / "data")
    reference = reference_tree(BEFORE_STEP_INTERFACE, tmp_path / "reference-code")
    records = {}
    for side, script in (("today", REPO / "Clothing.py"), ("reference", reference / "Clothing.py")):
        folder = tmp_path / side
        folder.mkdir()
        flags = ["--data_root", str(data.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain",
                 "--n_epoch", "1", "--max_inner_loop", "2", "--max_outer_loop", "2", "--num_workers", "0",
                 "--batch_size", "4", "--eval_batch_size", "16", "--output_dir", "run", "--no_progress",
                 "--skip_bad_images"]
        done = subprocess.run([sys.executable, str(script), *flags], cwd=folder, capture_output=True, text=True,
                              timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        records[side] = [{key: value for key, value in record.items()
                          if key not in ("seconds", "weights_file", "checkpoint_of_class")} for record in lines]
    for record in records["reference"]:  # today's log rounds the loss and training accuracy as main.py's does
        if record["kind"] == "epoch":
            record["train_loss"], record["train_acc"] = round(record["train_loss"], 6), round(record["train_acc"], 4)
    assert records["today"] == records["reference"] and len(records["today"]) == 7
