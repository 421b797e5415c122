"""PES-semi (utils/methods/pes_semi.py): its rules against its authors' PES_semi.py as docs/method.md
describes them (the network, the batch split, the MixMatch step, the ramp, Beta's switch, the clipped
class weights, what the SGD updates after the renewal, the symmetric noise, the best-test figure),
the two-view streams it trains on, and exact resumption from a kill inside a MixMatch epoch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models import build_model
from tests.runs import TINY_DIGITS, for_method, kill_on_call, kill_then_resume, main_main, uninterrupted
from utils.experiments import open_vision_loop
from utils.methods.pes_semi import (PesSemi, alpha_at, batch_split, beta_draw, clipped_class_weights,
                                    drawn_noise_type, lambda_u_for, mixmatch_step, network_for, rampup)
from utils.run.config import parse_config
from utils.run.driver import Run, run_training
from utils.train_config import TrainConfig
from utils.vision_task import VisionTask, load_dataset

# 1,438 training examples (no validation set), batches of 64: 22 full batches a warm-up epoch
SEMI_DIGITS = [*for_method(TINY_DIGITS, "pes_semi"), "--n_epoch", "4", "--T1", "1", "--T2", "1",
               "--batch_size", "64", "--iterations_per_epoch", "6", "--output_dir", "run", "--checkpoint_every", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_defaults_are_its_authors():
    config = parse_config(TrainConfig, ["--method", "pes_semi", "--dataset", "cifar10"], "")
    assert (config.n_epoch, config.lr, config.weight_decay, config.data_percent) == (300, 0.02, 5e-4, 1.0)
    assert (config.T1, config.T2, config.PES_lr, config.alpha, config.T, config.optim) == (0, 5, 1e-4, 4.0, 0.5, "cos")
    assert (lambda_u_for(config, "cifar10"), network_for(config, "cifar10")) == (150.0, "preact_resnet18")
    assert parse_config(TrainConfig, ["--method", "pes"], "").T2 == 7  # the shared flag, PES's own default
    with pytest.raises(Exception, match="--T3 is a flag of --method pes,"):
        parse_config(TrainConfig, ["--method", "pes_semi", "--T3", "2"], "")
    with pytest.raises(Exception, match="--alpha must be positive"):
        parse_config(TrainConfig, ["--method", "pes_semi", "--alpha", "0"], "")


def test_cifar_n_is_run_as_pes_noisylabels_runs_it():
    for dataset, noise, weight in (("cifar10", "aggre", 5.0), ("cifar100", "noisy", 75.0)):
        config = parse_config(TrainConfig, ["--method", "pes_semi", "--dataset", dataset, "--noise_type", noise], "")
        assert (lambda_u_for(config, dataset), network_for(config, dataset)) == (weight, "pes_resnet34")
    given = parse_config(TrainConfig, ["--method", "pes_semi", "--dataset", "cifar10", "--noise_type", "worst",
                                       "--lambda_u", "9"], "")
    assert lambda_u_for(given, "cifar10") == 9.0  # their code overwrites the flag; ours keeps what is given
    mnist = parse_config(TrainConfig, ["--method", "pes_semi"], "")
    assert (lambda_u_for(mnist, "mnist"), network_for(mnist, "mnist")) == (150.0, None)


def test_the_preact_resnet_draws_its_weights_in_their_order():
    torch.manual_seed(4)
    model = build_model("preact_resnet18", 10)
    torch.manual_seed(4)
    stem = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    for _ in range(2):  # layer1: two blocks of conv1, conv2
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.Conv2d(64, 64, 3, padding=1, bias=False)
    conv1, conv2 = nn.Conv2d(64, 128, 3, 2, 1, bias=False), nn.Conv2d(128, 128, 3, padding=1, bias=False)
    shortcut = nn.Conv2d(64, 128, 1, 2, bias=False)  # a bare convolution: no BatchNorm in the shortcut
    assert torch.equal(model.conv1.weight, stem.weight)
    assert torch.equal(model.layer2[0].conv1.weight, conv1.weight)
    assert torch.equal(model.layer2[0].conv2.weight, conv2.weight)
    assert torch.equal(model.layer2[0].shortcut[0].weight, shortcut.weight) and len(model.layer2[0].shortcut) == 1
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert model.renew_last_layers(0) == ["linear"]


def test_the_batch_is_split_as_their_update_trainloader_splits_it():
    assert batch_split(100, 300, 128) == (64, 64)        # more unlabelled: half each
    assert batch_split(300, 100, 128) == (96, 32)        # int(100 / 400 * 128) = 32
    assert batch_split(1000, 7, 128) == (128, 0)         # int(0.89) = 0: no unlabelled batch
    assert batch_split(200, 200, 128) == (64, 64)


def test_the_class_weights_are_clipped_at_three():
    labels = np.array([0] + [1] * 100 + [3] * 10)  # counts 1, 100, 0, 10: mean of the nonzero ones 37
    np.testing.assert_allclose(clipped_class_weights(labels, 4), [3.0, 0.37, 0.0, 3.0])


def test_the_ramp_and_beta():
    assert rampup(20.0, 20, 150) == 0 and rampup(28.0, 20, 150) == 75.0 and rampup(40.0, 20, 150) == 150.0
    assert rampup(19.5, 20, 150) == 0.0
    assert [alpha_at(epoch, 300, 4.0) for epoch in (0, 149, 150, 299)] == [4.0, 4.0, 0.75, 0.75]
    generator = torch.Generator().manual_seed(0)
    draws = [beta_draw(4.0, generator) for _ in range(200)]
    assert all(0.5 <= draw <= 1.0 for draw in draws) and len(set(draws)) == 200


def their_mixmatch_loss(net, x1, x2, targets_x, u1, u2, class_weights, perm, mix, ramp, temperature=0.5):
    """PES_semi.py's MixMatch_train arithmetic for one step (its lines, with the draws given)."""
    with torch.no_grad():
        pu = (torch.softmax(net(u1), dim=1) + torch.softmax(net(u2), dim=1)) / 2
        ptu = pu ** (1 / temperature)
        targets_u = ptu / ptu.sum(dim=1, keepdim=True)
    all_inputs = torch.cat([x1, x2, u1, u2], dim=0)
    all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u], dim=0)
    mixed_input = mix * all_inputs + (1 - mix) * all_inputs[perm]
    mixed_target = mix * all_targets + (1 - mix) * all_targets[perm]
    logits = net(mixed_input)
    batch_size = len(x1)
    lx = torch.sum(-torch.mean(F.log_softmax(logits[:batch_size * 2], dim=1) * mixed_target[:batch_size * 2], 0)
                   * class_weights)
    lu = torch.mean((torch.softmax(logits[batch_size * 2:], dim=1) - mixed_target[batch_size * 2:]) ** 2)
    return lx + ramp * lu


def test_the_mixmatch_step_is_their_arithmetic():
    torch.manual_seed(0)
    ours, theirs = build_model("lenet", 10), build_model("lenet", 10)
    theirs.load_state_dict(ours.state_dict())
    x1, x2, u1, u2 = (torch.randn(n, 1, 28, 28) for n in (6, 6, 4, 4))
    labels = torch.randint(0, 10, (6,))
    weights = torch.rand(10) * 3
    generator = torch.Generator().manual_seed(5)
    draws = generator.get_state()
    perm = torch.randperm(20, generator=generator)
    mix = beta_draw(4.0, generator)
    generator.set_state(draws)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1)
    ours.train(), theirs.train()
    sums = mixmatch_step(ours, optimizer, weights, lambda index: 37.5, 4.0, 0.5, generator, False)(
        3, x1, x2, labels, u1, u2)
    expected = their_mixmatch_loss(theirs, x1, x2, F.one_hot(labels, 10).float(), u1, u2, weights, perm, mix, 37.5)
    assert sums["loss"].item() / sums["count"] == pytest.approx(expected.item(), rel=1e-6)
    expected.backward()
    torch.optim.SGD(theirs.parameters(), lr=0.1).step()
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-7)


def test_a_step_without_unlabelled_examples_trains_on_the_labelled_alone():
    model = build_model("lenet", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 1, 28, 28)
    sums = mixmatch_step(model, optimizer, torch.ones(10), lambda index: 150.0, 4.0, 0.5,
                         torch.Generator().manual_seed(0), False)(0, x, x, torch.arange(4), x[:0], x[:0])
    assert sums["count"] == 8 and sums["loss_u"].item() == 0.0 and np.isfinite(sums["loss"].item())


def test_symmetric_noise_is_their_include_noise_unless_asked_otherwise():
    semi = parse_config(TrainConfig, ["--method", "pes_semi", "--dataset", "digits"], "")
    assert drawn_noise_type(semi) == semi.drawn_noise_type == "symmetric_include"
    official = parse_config(TrainConfig, ["--method", "pes_semi", "--symmetric_noise", "official"], "")
    assert official.drawn_noise_type == "symmetric"
    pairflip = parse_config(TrainConfig, ["--method", "pes_semi", "--noise_type", "pairflip"], "")
    assert pairflip.drawn_noise_type == "pairflip"
    assert parse_config(TrainConfig, ["--method", "pes"], "").drawn_noise_type == "symmetric"
    for other in (["--noise_type", "pairflip"], ["--dataset", "cifar10", "--noise_type", "aggre"]):
        with pytest.raises(Exception, match="--symmetric_noise has no effect with --noise_type"):
            parse_config(TrainConfig, ["--method", "pes_semi", *other, "--symmetric_noise", "official"], "")


def test_two_view_streams_give_full_batches_of_each_pass_of_the_subset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config(TrainConfig, SEMI_DIGITS, "")
    task = VisionTask(config, load_dataset(config), torch.device("cpu"))
    subset = torch.arange(0, 100, 3)  # 34 examples: 4 full batches of 8 a pass, 2 left out
    stream = task.two_view_stream(subset, 8)
    seen = []
    for _ in range(8):
        view1, view2, labels = next(stream)
        assert view1.shape == view2.shape == (8, *task.train_images.shape[1:]) and len(labels) == 8
        seen.append(labels)
    first_pass, second_pass = torch.cat(seen[:4]), torch.cat(seen[4:])
    assert len(first_pass) == 32 and len(second_pass) == 32
    with pytest.raises(Exception, match="no full batch"):
        next(task.two_view_stream(subset, 64))


def test_after_refining_the_sgd_never_updates_the_classifier_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loops = []

    class Watched(PesSemi):
        def mixmatch_epoch(self):
            before = {name: value.clone() for name, value in self.trainer.module.state_dict().items()}
            super().mixmatch_epoch()
            loops.append((before, self.trainer.module.state_dict(), self.state.frozen))

    def open_loop(run):
        loop = open_vision_loop(run)
        return Watched(loop.task, run, loop.title)

    assert run_training(lambda: parse_config(TrainConfig, SEMI_DIGITS, ""), open_loop) == 0
    assert len(loops) == 3
    for before, after, frozen in loops:
        assert frozen == ("classifier.5",)
        assert torch.equal(before["classifier.5.weight"], after["classifier.5.weight"])  # never updated
        assert not torch.equal(before["classifier.1.weight"], after["classifier.1.weight"])  # the rest trains


def test_no_validation_set_and_the_best_test_accuracy_over_the_epochs_is_reported(tmp_path, monkeypatch):
    result, metrics = uninterrupted(tmp_path, monkeypatch, SEMI_DIGITS)
    assert result["best_val_acc"] is None and result["selected_on"] == "test"
    epochs = [record for record in metrics if record["kind"] == "epoch" and record["phase"] != "refine"]
    assert [record["phase"] for record in epochs] == ["warmup", "semi", "semi", "semi"]
    assert all(record["val_acc"] is None for record in epochs)
    assert result["test_acc"] in [record["test_acc"] for record in epochs]
    assert result["test_acc_last"] == epochs[-1]["test_acc"]
    assert [round["confident_size"] > 0 for round in result["rounds"]] == [True] * 3
    config = json.loads((tmp_path / "reference" / "run" / "config.json").read_text())
    assert config["data_percent"] == 1.0


@pytest.mark.parametrize("refining_passes, batch", [("2", 50), ("1", 52)])
def test_killed_inside_the_refining_or_a_mixmatch_epoch_it_resumes_bit_for_bit(tmp_path, monkeypatch,
                                                                                refining_passes, batch):
    # 22 warm-up batches, then 22 per refining pass, then 6 MixMatch steps an epoch: batch 50 is in the
    # second refining pass (the checkpoint holds the Adam state of the first), 52 in the second MixMatch epoch
    args = [*SEMI_DIGITS, "--T2", refining_passes]
    reference = uninterrupted(tmp_path, monkeypatch, args)
    resumed = kill_then_resume(tmp_path, monkeypatch, args, lambda patch: kill_on_call(patch, Run, "should_stop", batch))
    assert resumed == reference


@pytest.mark.parametrize("method", ["pes", "pes_semi"])
def test_a_network_that_cannot_renew_is_refused_before_the_run_folder_is_made(tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    assert main_main([*for_method(TINY_DIGITS, method), "--network", "cnn9", "--output_dir", "run"]) == 2
    assert not (tmp_path / "run").exists()
