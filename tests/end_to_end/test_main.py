"""main.py end to end: both methods on digits, MNIST and CIFAR from small files in the real
formats, the noisy-label export, and one-line errors with exit code 2 for bad input."""

import numpy as np
import pytest
import torch

import main as main_module
from tests.formats import random_vision_arrays, write_cifar, write_mnist
from data.noise import make_noisy_labels
from data.split import train_val_split
from data.datasets import load_vision_data
from tests.runs import TINY_DIGITS, for_method, read_run, run_main

SMALL_LOOP = ["--n_epoch", "2", "--max_outer_loop", "1", "--max_inner_loop", "2", "--no_progress"]
RUN_FILES = ("config.json", "metrics.jsonl", "result.json", "checkpoint.pt", "latest.pt", "best.pt")


def write_dataset(root, name, n_train, n_test, seed=0):
    arrays = random_vision_arrays(name, n_train, n_test, seed)
    (write_mnist if name == "mnist" else lambda *a: write_cifar(a[0], name, *a[1:]))(root, *arrays)
    return arrays


def assert_complete_run(run_dir, method):
    result, metrics = read_run(run_dir)
    for name in RUN_FILES:
        if name == "latest.pt" and method == "ce":  # the baseline has no "latest" model
            continue
        if name == "best.pt":  # as officially: only an inner-round epoch that beats the warm-up
            assert (run_dir / name).is_file() == (result["best_val_acc"] > 0), name
            continue
        assert (run_dir / name).is_file(), name
    for key in ("method", "dataset", "noise_type", "noise_rate", "seed", "best_val_acc", "test_acc",
                "rounds", "wall_time_s", "device", "git_commit", "versions"):
        assert key in result, key
    assert result["method"] == method
    assert set(result["versions"]) == {"python", "torch", "numpy"}
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert epochs and all({"phase", "outer", "inner", "epoch", "train_loss", "train_acc", "val_acc",
                           "test_acc", "lr", "seconds"} <= set(m) for m in epochs)
    return result, metrics


@pytest.mark.parametrize("method", ["memomentum", "ce"])
def test_digits_end_to_end(tmp_path, method):
    done = run_main(for_method(TINY_DIGITS, method) + ["--output_dir", "run"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "configuration:" in done.stdout and "test accuracy" in done.stdout
    result, metrics = assert_complete_run(tmp_path / "run", method)
    if method == "memomentum":
        assert result["rounds"] and all(r["precision"] is not None for r in result["rounds"])
        assert all(len(r["per_class_precision"]) == 10 for r in result["rounds"])
    else:
        assert {m["phase"] for m in metrics} == {"ce"} and len(metrics) == 4
    assert (tmp_path / "logs" / "results.txt").exists()


def test_mnist_files_end_to_end(tmp_path):
    write_dataset(tmp_path / "files", "mnist", 300, 50)
    done = run_main(["--dataset", "mnist", "--data_path", "files", "--output_dir", "run",
                     "--batch_size", "32"] + SMALL_LOOP, tmp_path)
    assert done.returncode == 0, done.stderr
    assert_complete_run(tmp_path / "run", "memomentum")
    assert (tmp_path / "model" / "mnist-symmetric-0.2-1_latest.hdf5").is_file()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_end_to_end(tmp_path, name):
    write_dataset(tmp_path / "files", name, 20, 6)
    done = run_main(["--dataset", name, "--data_path", "files", "--output_dir", "run",
                     "--batch_size", "16", "--n_epoch", "1", "--max_outer_loop", "1",
                     "--max_inner_loop", "2", "--no_progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    result, _ = assert_complete_run(tmp_path / "run", "memomentum")
    assert result["rounds"][0]["confident_size"] >= 0


def test_a_cifar_n_run_records_no_noise_rate(tmp_path):
    from tests.data.test_cifarn import human_file

    write_dataset(tmp_path / "files", "cifar10", 20, 6)
    human_file(tmp_path / "cifarn", "cifar10", load_vision_data("cifar10", tmp_path / "files").train_labels)
    done = run_main(["--dataset", "cifar10", "--noise_type", "worst", "--data_path", "files", "--cifarn_path",
                     "cifarn", "--output_dir", "run", "--batch_size", "16", "--n_epoch", "1", "--max_outer_loop",
                     "1", "--max_inner_loop", "2", "--no_progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    result, _ = assert_complete_run(tmp_path / "run", "memomentum")
    assert result["noise_type"] == "worst" and result["noise_rate"] is None  # people's labels have no rate


def test_a_cifar_n_run_refuses_a_noise_rate_and_has_one_name(tmp_path, capsys):
    from utils.run.config import parse_config
    from utils.train_config import TrainConfig

    assert main_module.main(["--dataset", "cifar10", "--noise_type", "worst", "--noise_rate", "0.7",
                             "--output_dir", str(tmp_path / "run")]) == 2
    assert "--noise_rate plays no part with cifar10's human labels" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    config = parse_config(TrainConfig, ["--dataset", "cifar10", "--noise_type", "worst"], "")
    # the sweep's name for the same run (utils/sweeps/grid.py) has no rate either
    assert config.run_name == "cifar10-worst-seed1-memomentum"
    assert config.official_checkpoint_stem == "cifar10-worst-1"
    synthetic = parse_config(TrainConfig, ["--dataset", "cifar10", "--noise_rate", "0.4"], "")
    assert synthetic.run_name == "cifar10-symmetric-0.4-seed1-memomentum"


@pytest.mark.parametrize("name,noise", [("mnist", "instance"), ("cifar10", "pairflip"),
                                        ("cifar100", "symmetric")])
def test_export_noisy_labels_matches_the_noise_functions(tmp_path, monkeypatch, name, noise):
    write_dataset(tmp_path / "files", name, 120, 10, seed=4)
    out = tmp_path / "out.npz"
    monkeypatch.chdir(tmp_path)
    assert main_module.main(["--dataset", name, "--data_path", "files", "--noise_type", noise,
                             "--noise_rate", "0.3", "--seed", "3", "--save_noisy_labels", str(out),
                             "--noise_only"]) == 0
    assert not (tmp_path / "runs").exists()  # --noise_only trains nothing
    saved = np.load(out)
    vision = load_vision_data(name, tmp_path / "files")
    expected = make_noisy_labels(vision.train_labels, vision.train_images, noise, 0.3,
                                 vision.num_classes, 3)
    train_index, val_index = train_val_split(120, 0.9, 3)
    np.testing.assert_array_equal(saved["noisy_labels"], expected.labels)
    np.testing.assert_array_equal(saved["clean_labels"], vision.train_labels)
    np.testing.assert_array_equal(saved["train_index"], train_index)
    np.testing.assert_array_equal(saved["val_index"], val_index)
    assert float(saved["actual_noise_rate"]) == pytest.approx(expected.actual_rate)
    assert ("transition_matrix" in saved) == (noise != "instance")


@pytest.mark.parametrize("args,message", [
    (["--noise_rate", "1.0"], "--noise_rate must be in [0, 1)"),
    (["--noise_rate", "-0.1"], "--noise_rate must be in [0, 1)"),
    (["--dataset", "svhn"], "invalid choice"),
    (["--noise_type", "uniform"], "noise type 'uniform' is not available"),
    (["--data_percent", "0"], "--data_percent must be in (0, 1]"),
    (["--data_percent", "1.5"], "--data_percent must be in (0, 1]"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--dataset", "mnist", "--data_path", "nowhere"], "pass --download"),
    (["--resume", "missing.pt"], "no such checkpoint"),
])
def test_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    base = ["--dataset", "digits", "--noise_only"] if "--dataset" not in args else ["--noise_only"]
    if "--resume" in args:
        base = ["--dataset", "digits", "--n_epoch", "1"]
    assert main_module.main(base + args) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_bad_input_exit_code_of_the_real_process(tmp_path):
    done = run_main(["--dataset", "digits", "--noise_rate", "1.0"], tmp_path)
    assert done.returncode == 2 and "--noise_rate must be in [0, 1)" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_truncated_dataset_file_is_a_clear_error(tmp_path):
    write_dataset(tmp_path / "files", "mnist", 50, 10)
    images = tmp_path / "files" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-40])
    done = run_main(["--dataset", "mnist", "--data_path", "files", "--noise_only"], tmp_path)
    assert done.returncode == 2 and "train-images-idx3-ubyte" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_explains_every_flag(tmp_path):
    done = run_main(["--help"], tmp_path)
    assert done.returncode == 0
    for flag in ("--seed", "--lr", "--weight_decay", "--batch_size", "--n_epoch", "--model_dir",
                 "--dataset", "--data_percent", "--data_path", "--noise_type", "--noise_rate",
                 "--max_outer_loop", "--max_inner_loop", "--method", "--select", "--resume"):
        assert flag in done.stdout


def test_options_run_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = TINY_DIGITS + ["--amp", "--channels_last", "--predict_clean", "--select", "small_loss",
                          "--tensorboard", "--num_threads", "1", "--max_outer_loop", "1",
                          "--output_dir", "run"]
    assert main_module.main(args) == 0
    result, _ = assert_complete_run(tmp_path / "run", "memomentum")
    assert result["config"]["select"] == "small_loss" and result["rounds"]
    from tests.run.test_tensorboard import read_scalars

    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    epoch_steps = [step for step, _ in scalars["val/accuracy"]]
    assert epoch_steps == list(range(1, len(epoch_steps) + 1))  # one step per epoch
    # each extraction sits on the epoch axis, after the epochs that led to it
    _, metrics = read_run(tmp_path / "run")
    epochs_before_each_round = [sum(m["kind"] == "epoch" for m in metrics[:i]) for i, m in enumerate(metrics)
                                if m["kind"] == "round"]
    assert [step for step, _ in scalars["confident/size"]] == epochs_before_each_round


def test_result_labels_each_accuracy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main_module.main(TINY_DIGITS + ["--output_dir", "run"]) == 0
    result, metrics = read_run(tmp_path / "run")
    best = result["best_at"]
    epoch = next(m for m in metrics if m["kind"] == "epoch" and
                 (m["outer"], m["inner"], m["epoch"]) == (best["outer"], best["inner"], best["epoch"]))
    assert epoch["val_acc"] == result["best_val_acc"] and epoch["test_acc"] == result["test_acc"]
    assert 0 <= result["test_acc_official"] <= 100 and 0 <= result["test_acc_last"] <= 100
    # 359 test images in batches of 256 and 103: the per-batch mean weighs the small batch up
    assert result["test_acc_official"] != pytest.approx(result["test_acc"], abs=1e-9) or \
        result["test_acc"] in (0.0, 100.0)


def test_saved_rounds_hold_the_extraction(tmp_path, monkeypatch):
    from utils.vision_task import VisionTask

    recorded = []
    original = VisionTask.training_set_logits
    monkeypatch.setattr(VisionTask, "training_set_logits",
                        lambda self, model: recorded.append(original(self, model)) or recorded[-1])
    monkeypatch.chdir(tmp_path)
    args = TINY_DIGITS + ["--output_dir", "run", "--save_rounds", "--save_noisy_labels", "labels.npz"]
    assert main_module.main(args) == 0
    _, metrics = read_run(tmp_path / "run")
    rounds = [m for m in metrics if m["kind"] == "round"]
    exported = np.load(tmp_path / "labels.npz")
    assert len(rounds) == len(recorded) >= 2
    for record, logits in zip(rounds, recorded):
        saved = np.load(tmp_path / "run" / "rounds" / f"outer{record['outer']}_inner{record['inner']}.npz")
        assert saved["index"].dtype == np.int64 and saved["pred_probs"].dtype == np.float32
        np.testing.assert_array_equal(saved["index"], exported["train_index"])
        np.testing.assert_array_equal(saved["noisy_labels"], exported["noisy_labels"][saved["index"]])
        np.testing.assert_array_equal(saved["clean_labels"], exported["clean_labels"][saved["index"]])
        np.testing.assert_allclose(saved["pred_probs"].sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(saved["pred_probs"], torch.softmax(logits, 1).numpy(), atol=1e-6)
        assert int(saved["confident"].sum()) == record["confident_size"]
        np.testing.assert_array_equal(saved["confident"],
                                      saved["pred_probs"].argmax(1) == saved["noisy_labels"])
        precision = 100 * np.mean(saved["noisy_labels"][saved["confident"]] == saved["clean_labels"][saved["confident"]])
        assert precision == pytest.approx(record["precision"], abs=1e-3)


def test_a_network_that_cannot_take_the_images_is_refused_in_one_line(tmp_path):
    write_dataset(tmp_path / "files", "cifar10", 20, 6)
    done = run_main(["--dataset", "cifar10", "--network", "lenet", "--data_path", "files", "--output_dir", "run",
                     "--n_epoch", "1", "--no_progress"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --network lenet cannot take cifar10's 3×32×32 images (LeNet is sized for 28×28); leave --network "
        "out for cifar10's own (resnet18) or choose another"]
    assert "Traceback" not in done.stderr
