"""Co-teaching (utils/methods/coteaching.py): its schedules and loss against the authors' code as
docs/method.md describes it, its quirks on real runs and its flags (its exact resumption is
tests/methods/test_every_method.py's)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import main as main_module
from tests.runs import TINY_DIGITS, for_method, read_run
from utils.methods.coteaching import adam_plan, coteaching_losses, forget_rates
from utils.run.config import parse_config
from utils.train_config import TrainConfig

COTEACHING = [*for_method(TINY_DIGITS, "coteaching"), "--n_epoch", "6", "--num_gradual", "3",
              "--output_dir", "run"]


def test_forget_rate_rises_linearly_over_num_gradual_epochs_then_stays():
    rates = forget_rates(0.45, num_gradual=10, exponent=1, n_epoch=200)
    assert rates[0] == 0 and rates[9] == pytest.approx(0.45) and np.all(rates[10:] == 0.45)
    np.testing.assert_allclose(rates[:10], np.arange(10) * 0.05)
    assert forget_rates(0.5, 3, 2, 5).tolist() == pytest.approx([0, 0.125, 0.25, 0.5, 0.5])  # to 0.5 ** 2


def test_adam_decays_linearly_to_zero_from_the_decay_epoch_with_beta1_a_tenth():
    rates, betas = adam_plan(0.001, decay_start=80, n_epoch=200)
    assert rates[79] == rates[80] == 0.001 and rates[199] == pytest.approx(0.001 / 120)
    assert betas[79] == 0.9 and set(betas[80:]) == {0.1}


def test_each_network_learns_from_the_examples_its_peer_finds_easiest():
    torch.manual_seed(0)
    logits_f, logits_g = torch.randn(10, 3, requires_grad=True), torch.randn(10, 3, requires_grad=True)
    labels = torch.randint(0, 3, (10,))
    loss_f, loss_g, kept_by_f, kept_by_g = coteaching_losses(logits_f, logits_g, labels, forget_rate=0.3)
    assert len(kept_by_f) == len(kept_by_g) == 7  # int((1 - 0.3) * 10)
    losses_g = F.cross_entropy(logits_g, labels, reduction="none")
    assert set(kept_by_g.tolist()) == set(torch.argsort(losses_g)[:7].tolist())
    # the authors' loss: the mean over the kept examples, divided by their number once more
    assert loss_f.item() == pytest.approx(F.cross_entropy(logits_f[kept_by_g], labels[kept_by_g]).item() / 7)
    loss_g.backward()
    assert logits_f.grad is None and logits_g.grad.abs().sum() > 0


def test_a_run_trains_n_epoch_minus_one_epochs_on_full_batches_and_reports_the_papers_figures(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main_module.main(COTEACHING + ["--batch_size", "32", "--num_iter_per_epoch", "5"]) == 0
    result, metrics = read_run(tmp_path / "run")
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2, 3, 4, 5] and result["epochs"] == 5  # after an epoch-0 test
    assert {m["train_size"] for m in epochs} == {6 * 32}  # batches 0..5: the authors' `i > num_iter` cut
    assert [m["forget_rate"] for m in epochs] == pytest.approx([0.2, 0.4, 0.4, 0.4, 0.4])
    assert all(len(m["pure_ratio"]) == len(m["test_acc_networks"]) == 2 for m in epochs)
    exact_f = [m["test_acc_networks"][0] for m in epochs]
    assert result["test_acc_last"] == exact_f[-1] and result["method"] == "coteaching"
    assert 0 <= result["test_acc_official"] <= 100 and result["rounds"] == []


def test_the_last_ten_average_includes_the_epoch_zero_test_like_the_authors_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main_module.main(COTEACHING) == 0
    result, metrics = read_run(tmp_path / "run")
    trained = [m["test_acc_networks"] for m in metrics if m["kind"] == "epoch"]
    assert len(trained) == 5
    # six tested epochs (0..5), all within the last ten: the average has the random-weight test in it
    for network in (0, 1):
        tested = [result["test_acc_epoch0"][network]] + [accs[network] for accs in trained]
        assert result["test_acc_last10"]["exact"][network] == pytest.approx(np.mean(tested), abs=1e-9)


def test_the_methods_defaults_and_flags():
    config = parse_config(TrainConfig, ["--method", "coteaching"], "")
    assert (config.n_epoch, config.lr, config.weight_decay, config.num_gradual) == (200, 0.001, 0.0, 10)
    assert parse_config(TrainConfig, ["--method", "coteaching", "--n_epoch", "7"], "").n_epoch == 7
    assert parse_config(TrainConfig, [], "").n_epoch == 100  # Me-Momentum keeps the official default
    with pytest.raises(Exception, match="--forget_rate is a flag of --method coteaching"):
        parse_config(TrainConfig, ["--forget_rate", "0.3"], "")
    with pytest.raises(Exception, match=r"--forget_rate must be in \[0, 1\)"):
        parse_config(TrainConfig, ["--method", "coteaching", "--forget_rate", "1"], "")
