"""evaluate.py: a finished run's weights scored again give its result.json's figures to the last digit
(same machine); anything that is not a run folder or a weight file of ours is one line."""
from __future__ import annotations

import json

import pytest
import torch

import evaluate as evaluate_module
from tests.runs import TINY_DIGITS, for_method, run_main
from tests.end_to_end.test_bad_input import assert_one_error_line
from tests.formats import random_vision_arrays, write_cifar
from utils.methods import METHODS
from utils.run.config import parse_config
from utils.train_config import TrainConfig


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    for method in ("memomentum", "coteaching"):
        args = for_method(TINY_DIGITS, method) + ["--output_dir", method, "--num_threads", "1"]
        if method == "coteaching":
            args += ["--n_epoch", "3"]
        done = run_main(args, root)
        assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize("method", ["memomentum", "coteaching"])
@pytest.mark.parametrize("which,field", [("best", "test_acc"), ("last", "test_acc_last")])
def test_the_saved_weights_give_the_figures_of_result_json(finished_runs, monkeypatch, capsys, method, which, field):
    monkeypatch.chdir(finished_runs)
    torch.set_num_threads(1)  # as the run: the same kernels, the same sums
    assert evaluate_module.main([method, "--weights", which]) == 0
    out = capsys.readouterr().out
    result = json.loads((finished_runs / method / "result.json").read_text())
    assert f"test accuracy {result[field]!r} (exact)" in out
    if which == "best":
        assert f"{result['test_acc_official']!r} (as the method's own code prints it)" in out


def test_a_weight_file_of_ours_by_path(finished_runs, monkeypatch, capsys):
    monkeypatch.chdir(finished_runs)
    assert evaluate_module.main(["memomentum", "--weights", "memomentum/latest.pt"]) == 0
    assert "memomentum (memomentum/latest.pt): test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("target,weights,message", [
    ("nowhere", "best", "nowhere is not a folder"),
    ("empty", "best", "it has no config.json"),
    ("memomentum", "memomentum/config.json", "is corrupt or truncated"),
    ("memomentum", "memomentum/nothing.pt", "does not exist"),
    ("memomentum", "foreign.pt", "do not fit this run's network"),
])
def test_anything_else_is_one_line(finished_runs, monkeypatch, capsys, target, weights, message):
    monkeypatch.chdir(finished_runs)
    (finished_runs / "empty").mkdir(exist_ok=True)
    torch.save({"weight": torch.zeros(3)}, finished_runs / "foreign.pt")
    assert evaluate_module.main([target, "--weights", weights]) == 2
    assert_one_error_line(capsys.readouterr().err, message)


def test_a_method_with_its_authors_network_is_scored_with_that_network(tmp_path, monkeypatch, capsys):
    """PES-semi trains its authors' PreAct ResNet-18 on CIFAR-10, not the dataset's ResNet-18: evaluate.py
    builds the same network (and PES its padded-stem ResNet)."""
    write_cifar(tmp_path / "data", "cifar10", *random_vision_arrays("cifar10", 130, 40, seed=0))
    args = ["--dataset", "cifar10", "--data_path", str(tmp_path / "data"), "--method", "pes_semi", "--n_epoch", "1",
            "--T1", "5", "--batch_size", "16", "--no_progress",
            "--output_dir", "semi", "--num_threads", "1"]
    done = run_main(args, tmp_path)
    assert done.returncode == 0, done.stderr
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    assert evaluate_module.main(["semi", "--weights", "last"]) == 0
    result = json.loads((tmp_path / "semi" / "result.json").read_text())
    assert f"test accuracy {result['test_acc_last']!r} (exact)" in capsys.readouterr().out
    pes = METHODS["pes"].network_name(parse_config(TrainConfig, ["--method", "pes", "--dataset", "cifar100"], ""),
                                      "cifar100")
    assert pes == "pes_resnet34"
