"""Every method on every dataset, through the task interface (utils/task.py): each method of the
registry killed at a random batch and resumed bit for bit on digits (CE, Co-teaching and PES also on the
tiny Clothing1M, where Me-Momentum's own resume tests are in tests/end_to_end/test_clothing.py); a
method written here, in a few lines, runs on both; what a task lacks refuses a method in one line."""
from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import time

import pytest
import torch
from torch.nn import functional as F

from tests.clothing_fixture import tiny_with_index
from tests.runs import (REPO, TINY_DIGITS, clothing_main, comparable, for_method, kill_on_call, kill_then_resume,
                        uninterrupted)
from utils.clothing_config import ClothingConfig
from utils.engine import Trainer, train_forward
from utils.experiments import open_clothing_task, open_vision_task
from utils.methods import METHODS
from utils.run.config import parse_config
from utils.run.driver import Run, run_training
from utils.run.loop import Loop
from utils.task import CLEAN_TRAINING_LABELS
from utils.train_config import TrainConfig

SHORT = {"memomentum": [], "ce": ["--n_epoch", "3"],
         "coteaching": ["--n_epoch", "4", "--num_gradual", "2", "--num_iter_per_epoch", "3", "--batch_size", "64"],
         "pes": ["--n_epoch", "5", "--T1", "2", "--T2", "1", "--T3", "1", "--batch_size", "64"],
         "pes_semi": ["--n_epoch", "4", "--T1", "1", "--T2", "1", "--batch_size", "64", "--iterations_per_epoch", "8"]}
LAST_BATCH = {"memomentum": 30, "ce": 30, "coteaching": 12, "pes": 30, "pes_semi": 60}  # a kill falls within the run


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_with_index(tmp_path_factory.mktemp("clothing"))


def clothing_flags(tiny, method: str) -> list[str]:
    return ["--data_root", str(tiny.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain",
            "--num_workers", "0", "--batch_size", "8", "--eval_batch_size", "16", "--no_progress", "--skip_bad_images",
            "--method", method, "--n_epoch", "3", "--output_dir", "run", "--model_dir", "weights",
            "--checkpoint_every", "0"]


def kill_at_a_random_batch(seed: str, last: int):
    """Kill the run after a batch drawn (seeded by `seed`) from 2 .. last: a stop poll follows every batch."""
    batch = random.Random(seed).randint(2, last)
    return lambda patch: kill_on_call(patch, Run, "should_stop", batch)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_killed_at_a_random_batch_resumes_bit_for_bit_on_digits(tmp_path, monkeypatch, method):
    args = for_method(TINY_DIGITS, method) + SHORT[method] + ["--output_dir", "run", "--checkpoint_every", "0"]
    reference = uninterrupted(tmp_path, monkeypatch, args)
    assert kill_then_resume(tmp_path, monkeypatch, args, kill_at_a_random_batch(method, LAST_BATCH[method])) == reference
    assert reference[0]["test_acc"] > 0


CLOTHING_SHORT = {"ce": [], "coteaching": [],
                  "pes": ["--n_epoch", "2", "--T1", "1", "--T2", "2", "--num_iters_epoch", "2"]}
# epochs recorded: CE 3, Co-teaching 2 after its untrained epoch 0; PES 2 networks × (2 epochs of 2 chunks
# + 2 refining chunks) records
CLOTHING_RECORDS = {"ce": 3, "coteaching": 2, "pes": 12}


@pytest.mark.parametrize("method", ["ce", "coteaching", "pes"])
def test_ce_coteaching_and_pes_killed_at_a_random_batch_resume_bit_for_bit_on_clothing1m(tiny, tmp_path, monkeypatch,
                                                                                            method):
    args = clothing_flags(tiny, method) + CLOTHING_SHORT[method]
    reference = uninterrupted(tmp_path, monkeypatch, args, entry=clothing_main)
    resumed = kill_then_resume(tmp_path, monkeypatch, args, kill_at_a_random_batch(method, 12), entry=clothing_main)
    assert resumed == reference
    result, metrics = reference
    assert result["method"] == method and result["dataset"] == "clothing1m"
    assert len([record for record in metrics if record["kind"] == "epoch"]) == CLOTHING_RECORDS[method]
    if method == "pes":  # two networks, tested together
        assert len(result["networks"]) == 2 and result["best_at"] is None


class JointTwoNetworks(Loop):
    """A method of the test suite, written against the task interface only: two networks trained on
    one joint loss (each one's cross-entropy, plus how much they disagree); the first is reported."""

    def __init__(self, task, run, title):
        super().__init__(task, run, title)
        self.networks = None

    def train(self):
        s = self.state
        if self.networks is None:
            self.networks = [self.new_network(), self.new_network()]
        while s.epoch < self.config.n_epoch:
            started = time.time()
            batches = self.task.training_batches(None, "joint")
            sums = self.train_steps(batches, self.step, [network.model for network in self.networks], "joint")
            val_acc = self.task.validate(self.networks[0].model)
            s.count_epoch()
            record = self.epoch_record("joint", sums["loss"] / sums["count"], 100 * sums["correct"] / sums["count"],
                                       val_acc, self.config.lr, sums["count"], started)
            record["test_acc"] = self.keep_best_and_test(val_acc, self.networks[0].module)
            self.end_epoch(record)

    def new_network(self):
        model = self.task.new_model()
        return Trainer(model, torch.optim.SGD(model.parameters(), lr=self.config.lr, momentum=0.9))

    def step(self, images, labels, positions):
        (f, g), amp = self.networks, self.config.amp
        logits_f, logits_g = train_forward(f.model, images, amp), train_forward(g.model, images, amp)
        disagreement = F.kl_div(F.log_softmax(logits_f, 1), F.softmax(logits_g, 1), reduction="batchmean")
        loss = self.task.training_loss(logits_f, labels) + self.task.training_loss(logits_g, labels) + 0.1 * disagreement
        for network in (f, g):
            network.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for network in (f, g):
            network.optimizer.step()
        return {"loss": loss.detach() * len(labels), "correct": (logits_f.detach().argmax(1) == labels).sum(),
                "count": len(labels)}

    def state_dict(self):
        return {"networks": [network.state_dict() for network in self.networks] if self.networks else None}

    def load_state_dict(self, saved):
        if saved["networks"] is not None:
            self.networks = [self.new_network(), self.new_network()]
            for network, state in zip(self.networks, saved["networks"]):
                network.load_state_dict(state)

    def final_model(self):
        return self.networks[0].module if self.networks else None


def test_a_two_network_method_of_a_few_lines_runs_on_digits_and_on_clothing1m(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digits = ["--dataset", "digits", "--n_epoch", "3", "--lr", "0.05", "--output_dir", "digits", "--no_progress"]
    assert run_training(lambda: parse_config(TrainConfig, digits, ""),
                        lambda run: JointTwoNetworks(open_vision_task(run), run, "Joint")) == 0
    clothing = clothing_flags(tiny, "ce")[:-8] + ["--output_dir", "clothing", "--n_epoch", "2"]
    assert run_training(lambda: parse_config(ClothingConfig, clothing, ""),
                        lambda run: JointTwoNetworks(open_clothing_task(run), run, "Joint"), distributed=True) == 0
    for folder, epochs in (("digits", 3), ("clothing", 2)):
        result, metrics = comparable(tmp_path / folder)
        assert result["epochs"] == epochs == len(metrics) and result["test_acc_last"] is not None
    assert comparable(tmp_path / "digits")[0]["test_acc"] > 50


def test_a_method_needing_what_a_task_lacks_is_refused_in_one_line(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(METHODS, "ce", dataclasses.replace(METHODS["ce"], needs=(CLEAN_TRAINING_LABELS,)))
    assert clothing_main(clothing_flags(tiny, "ce")) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("--method ce needs clean training labels, which clothing1m does not have")
    assert len(error.splitlines()) == 1 and not (tmp_path / "run").exists()
    assert uninterrupted(tmp_path, monkeypatch, for_method(TINY_DIGITS, "ce") + SHORT["ce"] + ["--output_dir", "run"])


# Co-teaching, whose step trains two networks; CE's step is Me-Momentum's, whose torchrun runs are
# tests/end_to_end/test_clothing.py's
@pytest.mark.parametrize("method", ["coteaching"])
def test_coteaching_runs_on_clothing1m_under_torchrun_with_two_processes(tiny, tmp_path, method):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "Clothing.py"), *clothing_flags(tiny, method)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result, metrics = comparable(tmp_path / "run")
    assert (result["method"], result["world_size"]) == (method, 2) and result["test_acc_last"] is not None
    assert done.stdout.count("configuration:") == 1 and len(metrics) == (3 if method == "ce" else 2)
    if method == "ce":  # the figures of both processes, added up: every example once
        assert metrics[0]["train_size"] == len(tiny.train_keys)
