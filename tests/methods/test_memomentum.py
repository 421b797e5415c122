"""The Me-Momentum loop's control flow (docs/method.md, "Me-Momentum") on real tiny runs, checked
against an independent replay of the pseudocode, plus the named quirky rules."""
from collections import Counter

import numpy as np
import pytest
import torch

import main as main_module

from tests.runs import TINY_DIGITS, comparable, read_run
from utils.experiments import open_vision_loop
from utils.run.config import parse_config
from utils.run.driver import run_training
from utils.vision_task import VisionTask, load_dataset
from utils.methods.memomentum import MeMomentum, early_stopping_step, warm_up_finished
from utils.train_config import TrainConfig


def test_margin_accumulates_in_float_steps_and_stops_after_20_epochs():
    best, margin = 50.0, 0.0
    for epoch in range(1, 21):
        best, margin, improved = early_stopping_step(50.0, best, margin)
        assert not improved
        assert warm_up_finished(epoch, margin, n_epoch=100) == (epoch == 20)
    assert margin == 0.1 * 0 + sum([0.1] * 20) and margin > 2


def test_improvement_must_beat_best_plus_margin_and_resets_it():
    assert early_stopping_step(50.3, 50.0, 0.3) == (50.0, 0.4, False)  # tie is no improvement
    assert early_stopping_step(50.31, 50.0, 0.3) == (50.31, 0.0, True)
    accumulated = 0.1 + 0.1 + 0.1  # 0.30000000000000004: the float sum decides the tie
    assert early_stopping_step(50.3, 50.0, accumulated)[2] is False


def replay_pseudocode(val_accs, n_epoch, max_outer, max_inner):
    """The pseudocode of docs/method.md, "Me-Momentum", written out independently: the epochs it
    would run, where it evaluates test."""
    vals = iter(val_accs)
    schedule, test_epochs, best_val = [], [], 0.0
    for outer in range(max_outer):
        inner_best, margin = 0.0, 0.0
        for epoch in range(1, n_epoch + 1):
            v = next(vals)
            schedule.append(("warmup", outer, 0, epoch))
            if v > inner_best + margin:
                inner_best, margin = v, 0.0
            else:
                margin += 0.1
            if margin > 2:
                break
        last_round = 0.0
        for inner in range(1, max_inner):
            for epoch in range(1, n_epoch + 1):
                v = next(vals)
                schedule.append(("inner", outer, inner, epoch))
                if v > inner_best:
                    inner_best = v
                    if v > best_val:
                        best_val = v
                        test_epochs.append(schedule[-1])
            if inner_best > last_round:
                last_round = inner_best
            else:
                break
    return schedule, test_epochs, best_val


def run_in_process(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main_module.main(args) == 0
    return read_run(tmp_path / "run")


@pytest.mark.parametrize("extra", [
    ["--n_epoch", "4", "--max_outer_loop", "2", "--max_inner_loop", "4"],
    # a learning rate so small that validation accuracy stalls: the margin ends the warm-up
    ["--n_epoch", "25", "--max_outer_loop", "1", "--max_inner_loop", "2", "--lr", "1e-6"],
])
def test_loop_follows_the_pseudocode(tmp_path, monkeypatch, extra):
    args = TINY_DIGITS + extra + ["--output_dir", "run"]
    result, metrics = run_in_process(args, tmp_path, monkeypatch)
    cfg = result["config"]
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    schedule, test_epochs, best_val = replay_pseudocode(
        [m["val_acc"] for m in epochs], cfg["n_epoch"], cfg["max_outer_loop"], cfg["max_inner_loop"])
    assert [(m["phase"], m["outer"], m["inner"], m["epoch"]) for m in epochs] == schedule
    if cfg["n_epoch"] == 25:
        assert len([m for m in epochs if m["phase"] == "warmup"]) < 25  # the margin stopped it
    assert [(m["phase"], m["outer"], m["inner"], m["epoch"]) for m in epochs
            if m["test_acc"] is not None] == test_epochs
    assert result["best_val_acc"] == best_val
    tested = [m["test_acc"] for m in epochs if m["test_acc"] is not None]
    assert result["test_acc"] == (tested[-1] if tested else 0.0)
    # one extraction per inner round, logged before the round's first epoch
    rounds = [(m["outer"], m["inner"]) for m in metrics if m["kind"] == "round"]
    assert rounds == sorted({(o, i) for (p, o, i, e) in schedule if p == "inner"})
    assert all(len([r for r in rounds if r[0] == o]) >= 2 for o in range(cfg["max_outer_loop"])
               if cfg["max_inner_loop"] >= 3)


def test_best_checkpoint_reproduces_reported_test_accuracy(tmp_path, monkeypatch):
    result, _ = run_in_process(TINY_DIGITS + ["--output_dir", "run"], tmp_path, monkeypatch)
    config = parse_config(TrainConfig, TINY_DIGITS + ["--output_dir", "run"], "")
    experiment = VisionTask(config, load_dataset(config), torch.device("cpu"))
    model = experiment.new_model()
    model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True))
    assert experiment.test(model).exact == pytest.approx(result["test_acc"], abs=1e-9)
    official = tmp_path / "model" / "digits-instance-0.4-1_best.hdf5"
    assert official.is_file() and (tmp_path / "logs" / "results.txt").read_text().count("Best Test Acc") == 1


class RecordingMeMomentum(MeMomentum):
    """The real loop, recording the weights it keeps as 'latest' and those each round starts from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept, self.round_starts = [], []

    def keep_latest(self):
        super().keep_latest()
        self.kept.append({k: v.clone() for k, v in self.latest_weights.items()})

    def start_inner_round(self):
        super().start_inner_round()
        self.round_starts.append((len(self.kept), {k: v.detach().clone()
                                                   for k, v in self.trainer.model.state_dict().items()}))


def run_loop(loop_class, argv, monkeypatch):
    """main.py's run with `loop_class` in place of the registry's; returns the loop."""
    loops = []

    def open_loop(run):
        loop = open_vision_loop(run)
        loops.append(loop_class(loop.task, run, loop.title))
        return loops[-1]

    assert run_training(lambda: parse_config(TrainConfig, argv, ""), open_loop) == 0
    return loops[0]


def test_each_inner_round_starts_from_the_latest_kept_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loop = run_loop(RecordingMeMomentum, TINY_DIGITS + ["--output_dir", "run"], monkeypatch)
    assert len(loop.round_starts) >= 2
    for kept_so_far, weights in loop.round_starts:
        latest = loop.kept[kept_so_far - 1]
        assert all(torch.equal(weights[name], latest[name]) for name in latest)


class CheckingMeMomentum(RecordingMeMomentum):
    """Also records the first network's initial weights and what each inner round's optimizer holds."""

    def start_warm_up(self):
        super().start_warm_up()
        if self.state.outer == 0:
            self.initial = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}
        self.optimizer_states = getattr(self, "optimizer_states", [])

    def start_inner_round(self):
        super().start_inner_round()
        optimizer = self.trainer.optimizer
        self.optimizer_states.append((len(optimizer.state), optimizer.param_groups[0]["lr"],
                                      optimizer.param_groups[0]["momentum"], self.trainer.scheduler.milestones))


def test_cifar_resnet_rounds_start_from_latest_weights_with_batchnorm_state_and_a_fresh_sgd(tmp_path, monkeypatch):
    """The candidates of a CIFAR-only difference from the official loop (BatchNorm, the reload, the
    optimizer after it, the initial weights), on the real ResNet-18 path."""
    from tests.end_to_end.test_main import write_dataset
    from models import build_model
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "files", "cifar10", 40, 8)
    args = ["--dataset", "cifar10", "--data_path", "files", "--batch_size", "16", "--n_epoch", "2",
            "--max_outer_loop", "1", "--max_inner_loop", "3", "--lr", "0.05", "--seed", "5", "--no_progress",
            "--channels_last", "off", "--output_dir", "run"]
    loop = run_loop(CheckingMeMomentum, args, monkeypatch)
    torch.manual_seed(5)  # the official code seeds torch's generator once, then builds the network
    official_initial = build_model("resnet18", 10).state_dict()
    assert all(torch.equal(loop.initial[name], official_initial[name]) for name in official_initial)
    assert len(loop.round_starts) >= 1
    for kept_so_far, weights in loop.round_starts:
        latest = loop.kept[kept_so_far - 1]
        assert {name for name in latest if "running_" in name or "num_batches" in name}  # BatchNorm's state
        assert all(torch.equal(weights[name], latest[name]) for name in latest)
    assert loop.optimizer_states == [(0, 0.05, 0.9, Counter({40: 1, 80: 1}))] * len(loop.round_starts)


def test_same_seed_same_results_and_other_seed_differs(tmp_path, monkeypatch):
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir(), second.mkdir()
    run_in_process(TINY_DIGITS + ["--output_dir", "run"], first, monkeypatch)
    run_in_process(TINY_DIGITS + ["--output_dir", "run"], second, monkeypatch)
    assert comparable(first / "run") == comparable(second / "run")
    third = tmp_path / "c"
    third.mkdir()
    run_in_process(TINY_DIGITS + ["--output_dir", "run", "--seed", "2"], third, monkeypatch)
    assert comparable(third / "run")[1] != comparable(first / "run")[1]


class NeverAgrees(MeMomentum):
    """The real loop, with 'latest' weights biased to always predict class 0."""

    def keep_latest(self):
        super().keep_latest()
        self.latest_weights["classifier.5.bias"][0] = 1e4


def test_empty_confident_set_is_reported_and_the_previous_set_kept(tmp_path, monkeypatch, capsys):
    from tests.formats import write_mnist

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 28, 28), dtype=np.uint8)
    labels = rng.integers(1, 10, 120)  # no example is labelled 0: nothing can agree
    write_mnist(tmp_path / "files", images, labels, images[:20], labels[:20])
    monkeypatch.chdir(tmp_path)
    loop = run_loop(NeverAgrees, ["--dataset", "mnist", "--data_path", "files", "--noise_rate", "0",
                                  "--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "3",
                                  "--output_dir", "run", "--no_progress"], monkeypatch)
    state = loop.state
    assert state.rounds and all(r["confident_size"] == 0 and r["empty"] for r in state.rounds)
    assert "no prediction agrees" in capsys.readouterr().out
    inner_epochs = [m for m in loop.run.files.read_metric_records() if m["kind"] == "epoch" and m["phase"] == "inner"]
    assert inner_epochs and all(m["train_size"] == loop.task.num_train for m in inner_epochs)


@pytest.mark.parametrize("setting, expected", [("auto", True), ("off", False)])
def test_vision_task_applies_the_kernel_options(setting, expected):
    config = parse_config(TrainConfig, TINY_DIGITS + ["--channels_last", setting], "")
    experiment = VisionTask(config, load_dataset(config), torch.device("cpu"))
    model = experiment.new_model()
    assert model.features[3].weight.is_contiguous(memory_format=torch.channels_last) == expected
    assert experiment.pipeline.channels_last == expected
    assert experiment.new_trainer(milestones=None).optimizer.defaults["fused"]
