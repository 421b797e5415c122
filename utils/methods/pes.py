"""PES (Bai et al., NeurIPS 2021; docs/method.md, "PES"), as its authors' PES_cs.py runs it.

    a fresh network (PES's ResNet-18 for CIFAR-10, ResNet-34 for CIFAR-100; LeNet for MNIST/digits);
        SGD (lr, momentum 0.9, weight decay) with MultiStepLR(100, 150), stepped every epoch
    for epoch in 0 .. n_epoch - 1:
        epoch < T1:   train on every noisy example (full batches only), cross-entropy
        epoch == T1:  progressive early stopping: renew the last stage and the classifier, freeze the
                      rest, train them T2 epochs with Adam(PES_lr) on every noisy example; then renew
                      the classifier alone and train it T3 epochs the same way. The SGD above keeps
                      the parameters it was built with: it never updates the renewed layers again
        epoch > T1:   confident set := the examples whose mean softmax over two augmented views
                      predicts their noisy label; train on it (full batches only) with cross-entropy
                      weighted by mean(nonzero class counts) / class count
        validation accuracy (per-batch mean over the augmented noisy validation set); when it beats the
            best so far, test (reported)

Every step goes through the engine's run_steps; starting, resuming, checkpoints and result files are
the run driver's.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models import network_renews_layers
from utils.engine import Trainer, sgd_trainer, supervised_step
from utils.errors import UserError
from utils.metrics import batch_mean_accuracy
from utils.run.config import option
from utils.run.loop import LoopState, TrainerLoop

GROUP = "PES (--method pes)"
LR_MILESTONES = (100, 150)
T1_DEFAULTS = {"cifar10": 25, "cifar100": 30}   # their per-dataset T1
T1_OURS = 25                                       # MNIST/digits: their code has no setting; ours
# Their networks: PES's ResNets (a padded stem) on CIFAR; LeNet elsewhere (ours)
NETWORKS = {"cifar10": "pes_resnet18", "cifar100": "pes_resnet34"}
# (stages renewed, epochs option) of the two refining stages, in their order
REFINES = ((1, "T2"), (0, "T3"))


@dataclass(frozen=True)
class PesOptions:
    T1: int = option(0, "epochs before progressive early stopping (0: 25 for CIFAR-10, 30 for CIFAR-100, "
                        "as its authors; 25 otherwise, ours; Clothing.py: 3, as its authors)", minimum=0, group=GROUP)
    T2: int = option(7, "Adam epochs of the renewed last stage and classifier (Clothing.py: Adam chunks of the "
                        "renewed classifier)", minimum=0, group=GROUP)
    T3: int = option(5, "Adam epochs of the renewed classifier alone", minimum=0, group=GROUP)
    PES_lr: float = option(1e-4, "Adam's learning rate while refining", group=GROUP)
    num_iters_epoch: int = option(10, "Clothing.py: validation checks (chunks) per epoch", minimum=1, group=GROUP)
    num_networks: int = option(2, "Clothing.py: networks trained one after the other, tested together", minimum=1,
                               group=GROUP)


# Clothing.py's values of the flags (PES_Clothing1M.py's defaults)
CLOTHING_DEFAULTS = {"lr": 0.005, "weight_decay": 1e-3, "batch_size": 64, "T1": 3, "PES_lr": 5e-6}
CLOTHING_ONLY, MAIN_ONLY = ("num_iters_epoch", "num_networks"), ("T3",)


def check_renewable_network(config: Any, method: str, renewed: str) -> None:
    """--network must be one whose last layers can be renewed (refused before the run folder is made)."""
    if config.network and not network_renews_layers(config.network):
        raise UserError(f"--method {method} renews the {renewed} of LeNet or the CIFAR ResNets, not of "
                        f"{config.network}; leave --network out")


def check(config: Any) -> None:
    """Settings PES cannot run are refused."""
    if not config.PES_lr > 0:
        raise UserError(f"--PES_lr must be positive, got {config.PES_lr}")
    clothing = not hasattr(config, "data_percent")
    for name in MAIN_ONLY if clothing else CLOTHING_ONLY:
        if getattr(config, name) != getattr(PesOptions, name):
            raise UserError(f"--{name} has no effect with --method pes in {'Clothing.py' if clothing else 'main.py'}; "
                            f"leave it out")
    if clothing:
        if config.num_networks > 2:
            raise UserError(f"--num_networks {config.num_networks}: PES_Clothing1M.py trains one network or two "
                            f"(tested together); use 1 or 2")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("--method pes runs Clothing1M in one process, as its authors' PES_Clothing1M.py; "
                            "run Clothing.py without torchrun")
        return
    check_renewable_network(config, "pes", "last layers")
    if config.data_percent >= 1.0:
        raise UserError("--data_percent 1 leaves no validation set, on which PES selects its reported model; "
                        "use e.g. 0.9 (its authors' default)")


def pes_loop(task: Any, run: Any, title: str) -> "PES":
    """PES's loop for `task`: PES_cs.py's (this file), or PES_Clothing1M.py's on Clothing1M."""
    if task.name == "clothing1m":
        from utils.methods.pes_clothing1m import PesClothing1M  # its imports only when needed
        return PesClothing1M(task, run, title)
    return PES(task, run, title)


def network_for(config: Any, dataset: str) -> str | None:
    """Their network of the dataset (None: the task's own, LeNet on MNIST/digits), unless --network."""
    return None if config.network else NETWORKS.get(dataset)


def t1_for(config: Any, dataset: str, defaults: dict[str, int] = T1_DEFAULTS, ours: int = T1_OURS) -> int:
    """--T1, or its default for the dataset (0 means the default, as in its authors' code; `ours` where
    their code has no setting)."""
    return config.T1 or defaults.get(dataset, ours)


def confident_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """mean(nonzero class counts) / class count; 0 for an absent class (their code's inf → 0)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = counts[present].mean() / counts[present]
    return weights


@dataclass
class PesState(LoopState):
    refine_passes: int = 0          # refining epochs finished (T2 then T3) within epoch T1
    frozen: tuple[str, ...] = ()    # modules the SGD no longer updates (renewed at T1)


class PES(TrainerLoop):
    State = PesState
    REFINES = REFINES
    REFINING_ENDS_EPOCH = True  # epoch T1 is the refining (PES-semi trains its first MixMatch epoch after it)

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        if task.num_train < self.config.batch_size:  # full batches only: not one to train on
            raise UserError(f"--batch_size {self.config.batch_size} is larger than the {task.num_train} training "
                            f"examples, and {title} trains on full batches only; use a smaller --batch_size")
        self.t1 = t1_for(self.config, task.name)
        self.refiner: torch.optim.Adam | None = None   # Adam of the refining stage in progress

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        s = self.state
        if self.trainer is None:
            self.trainer = self.new_trainer()
        while s.epoch < self.config.n_epoch:
            if s.epoch < self.t1:
                self.epoch_of(self.trainer, None, None, "warmup")
            else:
                self.epoch_from_t1()

    def epoch_from_t1(self) -> None:
        """Epoch T1 refines; each later one trains on the confident set."""
        if self.state.epoch == self.t1:
            self.refine()
        else:
            subset, weights = self.confident_set()
            self.epoch_of(self.trainer, subset, weights, "pes")

    network_for = staticmethod(network_for)  # its authors' network of a dataset (the registry's Method.network)

    def new_trainer(self) -> Trainer:
        """Their network, and the SGD over what it updates (after T1: all but the renewed layers)."""
        model = self.task.new_model(self.network_for(self.config, self.task.name))
        trained = self.sgd_parameters(model)
        self.train_only(model, trained)
        return self.sgd_with_schedule(model, trained)

    def sgd_with_schedule(self, model: nn.Module, trained: list[nn.Parameter]) -> Trainer:
        """torch's own SGD kernels, as its authors' code (--sgd does not apply), with MultiStepLR(100, 150)."""
        config = self.config
        return sgd_trainer(model, config.lr, config.weight_decay, "plain", LR_MILESTONES, parameters=trained)

    @staticmethod
    def train_only(model: nn.Module, parameters: list[nn.Parameter]) -> None:
        """Gradients for `parameters` of `model` only. Their code unfreezes every parameter after refining;
        the renewed ones then get gradients that no optimizer applies, so not computing them changes no value."""
        kept = {id(p) for p in parameters}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in kept)

    def sgd_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """What the SGD updates: every parameter, but for the modules renewed at T1 (their SGD was built
        before the renewal and holds the replaced parameters, which no longer receive gradients)."""
        frozen = self.state.frozen
        return [p for name, p in model.named_parameters() if not any(name.startswith(f"{m}.") for m in frozen)]

    def epoch_of(self, trainer: Trainer, subset: torch.Tensor | None, weights: np.ndarray | None, phase: str) -> None:
        """One SGD epoch (full batches only), the schedule's step, validation, and the test on a new best."""
        s, task = self.state, self.task
        started, lr = time.time(), trainer.lr
        class_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=task.device)
        loss = None if weights is None else lambda logits, labels: F.cross_entropy(logits, labels, weight=class_weights)
        batches = task.training_batches(subset, f"{phase} e{s.epoch + 1}", drop_last=True)
        sums = self.train_steps(batches, supervised_step(trainer.model, trainer.optimizer, loss, self.config.amp),
                                [trainer.model], phase)
        trainer.step_schedule()
        self.finish_epoch(phase, sums, lr, started)

    def refine(self) -> None:
        """Epoch T1: the refining stages (PES: T2 then T3 Adam epochs on every noisy example); under
        REFINING_ENDS_EPOCH the last pass is epoch T1's record, else every pass has its own."""
        s, passes = self.state, [getattr(self.config, option) for _, option in self.REFINES]
        sums: dict[str, float] = {}
        started = time.time()
        while s.refine_passes < sum(passes):
            stage = 0 if s.refine_passes < passes[0] else 1
            if s.refine_passes in (0, passes[0]) and self.refiner is None:
                self.renew(self.REFINES[stage][0])
            started, lr = time.time(), self.config.PES_lr
            batches = self.task.training_batches(None, f"refine {stage + 1} e{s.refine_passes + 1}", drop_last=True)
            step = supervised_step(self.trainer.model, self.refiner, None, self.config.amp)
            sums = self.train_steps(batches, step, [self.trainer.model], "refine")
            s.refine_passes += 1
            if s.refine_passes == passes[0]:
                self.refiner = None  # the next stage renews and builds its own
            if s.refine_passes < sum(passes) or not self.REFINING_ENDS_EPOCH:
                s.epochs_run += 1
                self.end_epoch(self.refine_record(sums, lr, started))
        self.refiner = None
        self.train_only(self.trainer.model, self.sgd_parameters(self.trainer.model))
        if self.REFINING_ENDS_EPOCH:
            self.trainer.step_schedule()
            self.finish_epoch("refine", sums, self.config.PES_lr, started)  # timed from the last pass's start

    def refine_record(self, sums: dict[str, float], lr: float, started: float) -> dict[str, Any]:
        """The record of a refining pass that is not an epoch's last (validated, as its authors' code)."""
        return self.record("refine", sums, lr, started, self.validate())

    def renew(self, stages: int) -> None:
        """Freeze every parameter, renew the last `stages` stages and the classifier, Adam over the rest."""
        model = self.trainer.model
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        renewed = model.renew_last_layers(stages)
        self.task.place(model)  # the new layers on the device, in the network's memory format
        self.state.frozen = tuple(dict.fromkeys([*self.state.frozen, *renewed]))
        self.drop_replaced_parameters()
        self.refiner = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.config.PES_lr)
        self.run.log(f"PES: renewed {', '.join(renewed)}; refining them with Adam (lr {self.config.PES_lr:g})")

    def drop_replaced_parameters(self) -> None:
        """The SGD's view after a renewal: the parameters it still reaches. The replaced ones would
        receive no gradient again, so the SGD would skip them; dropping them keeps its state (and the
        checkpoint) to what matters, the same after a resume."""
        optimizer, kept = self.trainer.optimizer, self.sgd_parameters(self.trainer.model)
        kept_ids = {id(p) for p in kept}
        optimizer.param_groups[0]["params"] = kept
        for parameter in [p for p in optimizer.state if id(p) not in kept_ids]:
            del optimizer.state[parameter]

    def confident_set(self) -> tuple[torch.Tensor, np.ndarray]:
        """The examples whose mean softmax over two augmented views predicts their noisy label, and the
        class weights of the set."""
        s, task, model = self.state, self.task, self.trainer.model
        probabilities = sum(torch.softmax(task.training_set_logits(model), 1) for _ in range(2)) / 2
        agrees = probabilities.argmax(1) == task.train_labels
        subset = agrees.nonzero().squeeze(1)
        labels = task.train_labels[subset].cpu().numpy()
        record = {"kind": "round", "outer": 0, "inner": s.epoch, "confident_size": int(len(subset))}
        if task.train_clean_labels is not None and len(subset):
            record["precision"] = round(100.0 * float((task.train_clean_labels[subset] == task.train_labels[subset])
                                                      .double().mean()), 4)
        if len(subset) == 0:
            raise UserError(f"{self.title} found no confident example before epoch {s.epoch + 1} (no prediction agrees "
                            f"with its noisy label); train longer before refining (--T1) or check the labels")
        self.end_round(record, f"epoch {s.epoch + 1}: {len(subset)} confident examples of {task.num_train}",
                       summary={key: record[key] for key in ("inner", "confident_size")})
        return subset, confident_class_weights(labels, task.num_classes)

    def validate(self) -> float:
        """Their measure: the mean of per-batch accuracies (batches of 2 × batch_size) on the augmented
        noisy validation set."""
        predictions, labels = self.task.validation_predictions(self.trainer.model)
        return batch_mean_accuracy(predictions, labels, 2 * self.config.batch_size)

    def finish_epoch(self, phase: str, sums: dict[str, float], lr: float, started: float) -> None:
        s = self.state
        val_acc = self.validate()
        s.count_epoch()
        record = self.record(phase, sums, lr, started, val_acc)
        record["test_acc"] = self.keep_best_and_test(val_acc, self.trainer.module)
        self.end_epoch(record)

    def record(self, phase: str, sums: dict[str, float], lr: float, started: float, val_acc: float) -> dict[str, Any]:
        count = int(sums.get("count", 0))
        record = self.epoch_record(phase, sums.get("loss", 0.0) / max(count, 1),
                                   100.0 * sums.get("correct", 0) / max(count, 1), val_acc, lr, count, started)
        if phase == "refine":
            record["refine_pass"] = self.state.refine_passes
        return record

    # ------------------------------------------------------------------ the protocol
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "refiner": self.refiner.state_dict() if self.refiner is not None else None}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["model"] is None:
            return
        self.trainer = self.new_trainer()
        model = self.trainer.model
        if saved["refiner"] is not None:  # in a refining stage: only its renewed modules train
            stage_modules = self.refining_modules()
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(any(name.startswith(f"{m}.") for m in stage_modules))
            self.refiner = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.config.PES_lr)
            self.refiner.load_state_dict(saved["refiner"])
        self.trainer.load_state_dict(saved)

    def refining_modules(self) -> tuple[str, ...]:
        """The modules the refining stage in progress trains (renewed last)."""
        s = self.state
        if s.refine_passes < self.config.T2:
            return s.frozen
        return s.frozen[-1:]
