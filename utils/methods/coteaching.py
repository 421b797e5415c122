"""Co-teaching (Han et al., NeurIPS 2018; docs/method.md, "Co-teaching"), as its authors' code runs it.

    two networks f and g, each with Adam; both tested at epoch 0 (random weights)
    for epoch t = 1 .. n_epoch - 1:
        Adam's learning rate: lr, then from epoch_decay_start falling linearly to 0 at n_epoch,
            with beta1 0.9, then 0.1 from epoch_decay_start
        forget rate R(t): forget_rate, reached linearly (as forget_rate^exponent) over num_gradual epochs
        for each shuffled batch of batch_size (full batches only; at most num_iter_per_epoch + 1):
            f and g rank the batch by their own cross-entropy; each trains on the
            num_remember = int((1 - R(t)) * batch_size) examples the *other* ranks lowest, with the
            mean cross-entropy divided by num_remember once more (as the authors' loss does)
        validate f on the noisy validation set; test f and g

The data, split, noisy labels, network (by default the dataset's, as for Me-Momentum; --network
cnn9 for the authors' 9-layer CNN) and normalisation are those of every method here; the reported
figures are those every method reports (of network f), plus the paper's: the test accuracy of each
network averaged over the last ten epochs, and each epoch's label precision of the selected
examples ("pure ratio").
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from utils.engine import Step, Trainer, train_forward
from utils.errors import UserError
from utils.metrics import TestAccuracy, accuracy
from utils.run.config import option
from utils.run.loop import Loop, LoopState

GROUP = "Co-teaching (--method coteaching)"
BETA1, BETA1_AFTER_DECAY, BETA2 = 0.9, 0.1, 0.999
DECAY_START, DECAY_START_CIFAR100 = 80, 100
LAST_EPOCHS = 10  # the paper's tables: test accuracy averaged over the last ten epochs
# Clothing.py: its authors' code has no Clothing1M setting, so these are ours (docs/method.md,
# "Co-teaching on Clothing1M"): 15 epochs of Adam at 8e-4, falling linearly to 0 from epoch 5, the
# forget rate rising over 5 epochs to Clothing1M's estimated noise rate, whole epochs (no cut).
CLOTHING_DEFAULTS = {"n_epoch": 15, "lr": 0.0008, "weight_decay": 0.0, "epoch_decay_start": 5, "num_gradual": 5,
                     "num_iter_per_epoch": 0}


@dataclass(frozen=True)
class CoteachingOptions:
    forget_rate: float | None = option(None, "share of each batch a network leaves out of its peer's update "
                                             "(default: --noise_rate; for human noise, the realised rate; "
                                             "on Clothing1M, its estimated 0.3846)", group=GROUP)
    num_gradual: int = option(10, "epochs over which the forget rate rises from 0", minimum=1, group=GROUP)
    exponent: float = option(1.0, "the rise reaches forget_rate ** exponent", group=GROUP)
    epoch_decay_start: int | None = option(None, "epoch from which Adam's learning rate falls linearly to 0 "
                                                 "(default: 80; 100 for CIFAR-100)", minimum=0, group=GROUP)
    num_iter_per_epoch: int = option(400, "batches per epoch are cut at num_iter_per_epoch + 1, as the "
                                          "authors' code does (0: no cut)", minimum=0, group=GROUP)


def check(config: Any) -> None:
    """Settings under which Co-teaching cannot train are refused."""
    if config.forget_rate is not None and not 0.0 <= config.forget_rate < 1.0:
        raise UserError(f"--forget_rate must be in [0, 1), got {config.forget_rate}")
    if not config.exponent > 0:
        raise UserError(f"--exponent must be positive (the forget rate rises to forget_rate ** exponent, which "
                        f"must stay below 1), got {config.exponent}")
    if config.n_epoch < 2:
        raise UserError("--n_epoch 1 trains nothing with Co-teaching (epoch 0 is the test of the untrained "
                        "networks, as in its authors' code); use at least 2 (its default: 200)")



def forget_rates(forget_rate: float, num_gradual: int, exponent: float, n_epoch: int) -> np.ndarray:
    """R(t) for t = 0 .. n_epoch - 1, as the authors' schedule (epoch 0 is never trained)."""
    rates = np.full(n_epoch, forget_rate, dtype=np.float64)
    rates[:num_gradual] = np.linspace(0, forget_rate ** exponent, num_gradual)[:n_epoch]
    return rates


def adam_plan(lr: float, decay_start: int, n_epoch: int) -> tuple[list[float], list[float]]:
    """Learning rate and beta1 of every epoch t = 0 .. n_epoch - 1, as the authors' plan."""
    rates, betas = [lr] * n_epoch, [BETA1] * n_epoch
    for t in range(decay_start, n_epoch):
        rates[t] = float(n_epoch - t) / (n_epoch - decay_start) * lr
        betas[t] = BETA1_AFTER_DECAY
    return rates, betas


def coteaching_losses(logits_f: torch.Tensor, logits_g: torch.Tensor, labels: torch.Tensor,
                      forget_rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each network's update on the examples its peer finds easiest, and which examples each kept."""
    num_remember = max(1, int((1 - forget_rate) * len(labels)))
    kept_by_f = torch.argsort(F.cross_entropy(logits_f.detach(), labels, reduction="none"))[:num_remember]
    kept_by_g = torch.argsort(F.cross_entropy(logits_g.detach(), labels, reduction="none"))[:num_remember]
    loss_f = F.cross_entropy(logits_f[kept_by_g], labels[kept_by_g]) / num_remember
    loss_g = F.cross_entropy(logits_g[kept_by_f], labels[kept_by_f]) / num_remember
    return loss_f, loss_g, kept_by_f, kept_by_g


def losses_with_unreadable(logits_f: torch.Tensor, logits_g: torch.Tensor, labels: torch.Tensor,
                           forget_rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """coteaching_losses for a batch whose unreadable images carry a negative label: they rank after
    every readable one, and a kept one adds nothing to the loss (which keeps the authors' scale)."""
    readable = labels >= 0
    safe = labels.clamp_min(0)
    num_remember = max(1, int((1 - forget_rate) * len(labels)))

    def ranked(logits: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(logits.detach(), safe, reduction="none").masked_fill(~readable, float("inf"))
        return torch.argsort(losses)[:num_remember]

    def loss(logits: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        weights = readable[kept].float()
        return (F.cross_entropy(logits[kept], safe[kept], reduction="none") * weights).sum() \
            / weights.sum().clamp_min(1) / num_remember

    kept_by_f, kept_by_g = ranked(logits_f), ranked(logits_g)
    return loss(logits_f, kept_by_g), loss(logits_g, kept_by_f), kept_by_f, kept_by_g


@dataclass
class CoteachingState(LoopState):
    # per tested epoch (0 = random weights): exact test accuracy of f and g, and as the authors' code
    # measures it (full test batches of batch_size only)
    test_accs: list[list[float]] = field(default_factory=list)


class CoTeaching(Loop):
    State = CoteachingState

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.networks: list[Trainer] | None = None
        config = self.config
        if task.num_train < config.batch_size:
            raise UserError(f"--batch_size {config.batch_size} is larger than the training split ({task.num_train} "
                            f"examples): Co-teaching drops the last partial batch, as its authors' code does, so "
                            f"it would train on nothing; use a --batch_size of at most {task.num_train}")
        self.forget_rate = task.assumed_noise_rate if config.forget_rate is None else config.forget_rate
        decay_start = config.epoch_decay_start
        if decay_start is None:
            decay_start = DECAY_START_CIFAR100 if task.name == "cifar100" else DECAY_START
        self.rates = forget_rates(self.forget_rate, config.num_gradual, config.exponent, config.n_epoch)
        self.lrs, self.beta1s = adam_plan(config.lr, decay_start, config.n_epoch)
        # for the pure ratio, once (None where the true labels are unknown: Clothing1M)
        self.label_is_clean = (None if task.train_clean_labels is None
                               else task.train_clean_labels == task.train_labels)

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        s = self.state
        if self.networks is None:
            self.networks = [self.new_network(), self.new_network()]
            self.test_both()
            self.run.log(f"epoch 0 (random weights): test {s.test_accs[0][0]:.2f} / {s.test_accs[0][1]:.2f}")
        while s.epoch < self.config.n_epoch - 1:
            self.train_epoch(s.epoch + 1)

    def new_network(self) -> Trainer:
        model = self.task.new_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        return Trainer(model, optimizer)

    def train_epoch(self, t: int) -> None:
        s, task, f = self.state, self.task, self.networks[0]
        started = time.time()
        for network in self.networks:
            for group in network.optimizer.param_groups:
                group["lr"], group["betas"] = self.lrs[t], (self.beta1s[t], BETA2)
        totals = self.train_batches(t)
        val_acc = task.validate(f.model)
        s.count_epoch()
        tests = self.test_both()
        batches, count = max(totals.get("batches", 0), 1), max(totals.get("count", 0), 1)
        train_accs = [100.0 * totals.get(key, 0.0) / count for key in ("correct_f", "correct_g")]
        record = self.epoch_record(
            "coteaching", totals["loss"], train_accs[0], val_acc, self.lrs[t], totals.get("count", 0), started,
            forget_rate=float(self.rates[t]), train_acc_networks=[round(acc, 4) for acc in train_accs],
            test_acc_networks=[tests[0].exact, tests[1].exact],
            pure_ratio=([round(totals[key] / batches, 4) for key in ("pure_f", "pure_g")] if "pure_f" in totals
                        else None))
        record["test_acc"] = self.keep_best_and_test(val_acc, f.module, tests[0])
        self.end_epoch(record)

    def train_batches(self, t: int) -> dict[str, float]:
        """One epoch of co-teaching steps (full batches only, cut as the authors' code cuts them); its sums."""
        task, (f, g), config = self.task, self.networks, self.config
        batches = task.training_batches(None, f"coteaching e{t}", drop_last=True)
        if config.num_iter_per_epoch:  # the authors' cut: batches 0 .. num_iter_per_epoch (401)
            batches = itertools.islice(batches, config.num_iter_per_epoch + 1)
        sums = self.train_steps(batches, self.step(float(self.rates[t])), [f.model, g.model], "coteaching")
        count = int(sums.get("count", 0))
        sums["loss"] = sums.get("loss", 0.0) / max(count, 1)
        return sums

    def step(self, forget_rate: float) -> Step:
        """Both networks forward the batch; each trains on the examples its peer finds easiest."""
        (f, g), amp = self.networks, self.config.amp
        # Clothing.py --skip_bad_images: unreadable images come with a negative label
        unreadable_possible = bool(getattr(self.config, "skip_bad_images", False))

        def step(images: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> dict[str, Any]:
            logits_f, logits_g = train_forward(f.model, images, amp), train_forward(g.model, images, amp)
            losses = losses_with_unreadable if unreadable_possible else coteaching_losses
            loss_f, loss_g, kept_by_f, kept_by_g = losses(logits_f, logits_g, labels, forget_rate)
            for network, loss in ((f, loss_f), (g, loss_g)):
                network.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                network.optimizer.step()
            sums = {"loss": loss_f.detach().double() * len(labels),
                    "correct_f": (logits_f.detach().argmax(1) == labels).sum().double(),
                    "correct_g": (logits_g.detach().argmax(1) == labels).sum().double(),
                    "count": len(labels), "batches": 1}
            if self.label_is_clean is not None:
                clean = self.label_is_clean.index_select(0, positions).double()
                sums.update(pure_f=100.0 * clean[kept_by_f].mean(), pure_g=100.0 * clean[kept_by_g].mean())
            return sums

        return step

    def test_both(self) -> list[TestAccuracy]:
        tests = [self.test(network.module) for network in self.networks]
        self.state.test_accs.append([tests[0].exact, tests[1].exact, tests[0].official, tests[1].official])
        return tests

    def test(self, model: nn.Module) -> TestAccuracy:
        """Exact over every (readable) test image; and as the authors' code: over full test batches of
        batch_size."""
        predictions, labels = self.task.test_predictions(model), self.task.test_labels
        full = len(labels) // self.config.batch_size * self.config.batch_size
        readable = predictions >= 0
        return TestAccuracy(accuracy(predictions[readable], labels[readable]),
                            accuracy(predictions[:full][readable[:full]], labels[:full][readable[:full]]))

    # ------------------------------------------------------------------ the protocol
    def final_model(self) -> nn.Module | None:
        return self.networks[0].module if self.networks is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"networks": [network.state_dict() for network in self.networks] if self.networks else None}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["networks"] is not None:
            self.networks = [self.new_network(), self.new_network()]
            for network, state in zip(self.networks, saved["networks"]):
                network.load_state_dict(state)

    def result_fields(self) -> dict[str, Any]:
        """The paper's figure: each network's test accuracy averaged over the last ten epochs."""
        last = np.array(self.state.test_accs[-LAST_EPOCHS:], dtype=np.float64)
        mean = last.mean(axis=0).tolist() if len(last) else [None] * 4
        return {"forget_rate": self.forget_rate, "test_acc_epoch0": self.state.test_accs[0][:2],
                "test_acc_last10": {"exact": mean[:2], "official": mean[2:]}}
