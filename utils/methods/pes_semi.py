"""PES-semi (Bai et al., NeurIPS 2021; docs/method.md, "PES-semi"), as its authors' PES_semi.py runs it.

    a fresh network (their PreAct ResNet-18 on CIFAR, ResNet-34 on CIFAR-N as PES_noisylabels.py; LeNet
        on MNIST/digits, ours), SGD (lr, momentum
        0.9, weight decay) with a cosine schedule to lr / 100 over n_epoch (--optim step: MultiStepLR
        150, 250), stepped every epoch; every training example (--data_percent 1: no validation set)
    for epoch in 0 .. n_epoch - 1:
        epoch < T1:   train on every noisy example (full batches only), cross-entropy
        epoch == T1:  progressive early stopping: renew the classifier, freeze the rest, train it T2
                      epochs with Adam(PES_lr) on every noisy example (the SGD never updates it again)
        epoch >= T1:  labelled := the examples whose mean softmax over two augmented views predicts
                      their noisy label; unlabelled := the rest; the batch split by the sets' sizes;
                      50,000 / batch_size MixMatch steps (CIFAR), each on two augmented views of a labelled
                      and an unlabelled batch: sharpened guesses for the unlabelled, one mix of all of
                      it (Beta(alpha, alpha), alpha 0.75 from half the epochs on), the labelled loss
                      weighted per class (mean(nonzero counts) / count, at most 3), the unlabelled
                      squared error ramped up to lambda_u over 16 epochs from T1
        test (their figure: the best test accuracy over all epochs; beside it the last epoch's)

Every step goes through the engine's run_steps; starting, resuming, checkpoints and result files are
the run driver's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR

from utils.engine import Step, Trainer, autocast, make_sgd, train_forward
from utils.errors import UserError
from utils.methods.pes import PES, check_renewable_network, confident_class_weights, t1_for
from utils.run.config import option
from utils.run.loop import cpu_weights
from utils.run.progress import with_progress

GROUP = "PES-semi (--method pes_semi)"
T1_DEFAULTS = {"cifar10": 20, "cifar100": 35}   # their per-dataset T1
T1_OURS = 20                                      # MNIST/digits: their code has no setting; ours
NETWORKS = {"cifar10": "preact_resnet18", "cifar100": "preact_resnet18"}
CIFAR_DATASETS = ("cifar10", "cifar100")
# CIFAR-N, as PES_noisylabels.py runs PES-semi there: ResNet-34 and its own lambda_u
HUMAN_NOISE_NETWORK = "pes_resnet34"
LAMBDA_U, HUMAN_NOISE_LAMBDA_U = 150.0, {"cifar10": 5.0, "cifar100": 75.0}
STEP_MILESTONES = (150, 250)                      # --optim step
CIFAR_EXAMPLES = 50_000  # their steps per epoch: 50,000 / batch_size on CIFAR, whatever the sets' sizes
RAMPUP_EPOCHS = 16                                # lambda_u's linear ramp
LATE_ALPHA = 0.75                                 # Beta's parameter from half the epochs on
MAX_CLASS_WEIGHT = 3.0
OPTIMS = ("cos", "step")
SYMMETRIC_NOISE = ("include", "official")


@dataclass(frozen=True)
class PesSemiOptions:
    T1: int = option(0, "epochs before progressive early stopping (0: 20 for CIFAR-10, 35 for CIFAR-100, "
                        "as its authors; 20 otherwise, ours)", minimum=0, group=GROUP)
    T2: int = option(5, "Adam epochs of the renewed classifier", minimum=0, group=GROUP)
    PES_lr: float = option(1e-4, "Adam's learning rate while refining", group=GROUP)
    lambda_u: float | None = option(None, "weight of the unlabelled loss, reached 16 epochs after T1 (default: "
                                          "150; CIFAR-N: 5 for CIFAR-10N, 75 for CIFAR-100N, as its authors)",
                                    minimum=0, group=GROUP)
    alpha: float = option(4.0, "Beta(alpha, alpha) of the mix until half the epochs (then 0.75)", group=GROUP)
    T: float = option(0.5, "sharpening temperature of the unlabelled guesses", group=GROUP)
    optim: str = option("cos", "learning-rate schedule: cos (cosine to lr / 100) or step (0.1 at 150, 250)",
                        choices=OPTIMS, group=GROUP)
    iterations_per_epoch: int = option(0, "MixMatch steps per epoch (0: 50,000 / batch_size on CIFAR, as its "
                                          "authors; training examples / batch_size otherwise, ours)", minimum=0,
                                       group=GROUP)
    symmetric_noise: str = option("include", "how --noise_type symmetric draws the labels: include (as "
                                             "PES_semi.py: the rate scaled by 1 - 1/classes, correct labels "
                                             "included) or official (the labels of the other methods)",
                                  choices=SYMMETRIC_NOISE, group=GROUP)


def check(config: Any) -> None:
    """Settings PES-semi cannot run are refused."""
    if config.T2:
        check_renewable_network(config, "pes_semi", "classifier")
    synthetic_symmetric = config.noise_type == "symmetric" and not getattr(config, "human_noise", False)
    if config.symmetric_noise != PesSemiOptions.symmetric_noise and not synthetic_symmetric:
        raise UserError(f"--symmetric_noise has no effect with --noise_type {config.noise_type}; leave it out")
    for name in ("PES_lr", "alpha", "T"):
        if not getattr(config, name) > 0:
            raise UserError(f"--{name} must be positive, got {getattr(config, name)}")


def lambda_u_for(config: Any, dataset: str) -> float:
    """--lambda_u, or its authors' value: 150 (PES_semi.py), on CIFAR-N 5 or 75 (PES_noisylabels.py)."""
    if config.lambda_u is not None:
        return config.lambda_u
    return HUMAN_NOISE_LAMBDA_U.get(dataset, LAMBDA_U) if getattr(config, "human_noise", False) else LAMBDA_U


def network_for(config: Any, dataset: str) -> str | None:
    """Their network of the dataset (None: the task's own, LeNet on MNIST/digits), unless --network."""
    if config.network:
        return None
    if getattr(config, "human_noise", False):
        return HUMAN_NOISE_NETWORK
    return NETWORKS.get(dataset)


def drawn_noise_type(config: Any) -> str:
    """The noise function that draws the labels: their include_noise for symmetric noise."""
    if config.noise_type == "symmetric" and config.symmetric_noise == "include":
        return "symmetric_include"
    return config.noise_type


def clipped_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Their update_trainloader's weights: mean(nonzero class counts) / count, 0 for an absent class,
    at most 3 ("avoid too large numbers")."""
    return np.minimum(confident_class_weights(labels, num_classes), MAX_CLASS_WEIGHT)


def batch_split(labelled: int, unlabelled: int, batch_size: int) -> tuple[int, int]:
    """(labelled, unlabelled) batch sizes as their update_trainloader splits the batch: half each when
    the unlabelled set is the larger, else in proportion to the sets (rounded down for the unlabelled)."""
    if unlabelled > labelled:
        unlabelled_batch = batch_size // 2
    else:
        unlabelled_batch = int(unlabelled / (labelled + unlabelled) * batch_size)
    return batch_size - unlabelled_batch, unlabelled_batch


def rampup(progress: float, t1: int, lambda_u: float) -> float:
    """lambda_u × clip((epochs so far − T1) / 16, 0, 1): their linear_rampup."""
    return lambda_u * float(np.clip((progress - t1) / RAMPUP_EPOCHS, 0.0, 1.0))


def alpha_at(epoch: int, n_epoch: int, alpha: float) -> float:
    """Beta's parameter in epoch `epoch` (0-based): --alpha, then 0.75 from half the epochs on (their code
    sets args.alpha = 0.75 there, for good)."""
    return LATE_ALPHA if epoch >= n_epoch / 2 else alpha


def beta_draw(alpha: float, generator: torch.Generator) -> float:
    """max(λ, 1 − λ) for λ ~ Beta(alpha, alpha), drawn from `generator` (through a numpy generator it
    seeds: torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
    draw = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(draw, 1.0 - draw)


def mixmatch_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, class_weights: torch.Tensor,
                  ramp: Callable[[int], float], alpha: float, temperature: float, generator: torch.Generator,
                  amp: bool) -> Step:
    """Their MixMatch_train step, called with (step index, two views and labels of the labelled batch,
    two views of the unlabelled batch). The guesses run in training mode, as theirs (BatchNorm's
    running statistics see both unlabelled views)."""
    num_classes = len(class_weights)

    def step(index: int, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor,
             u1: torch.Tensor, u2: torch.Tensor) -> dict[str, Any]:
        labelled = len(labels)
        targets_x = F.one_hot(labels, num_classes).float()
        with torch.no_grad(), autocast(x1.device, amp):
            if len(u1):
                guess = (torch.softmax(model(u1).float(), 1) + torch.softmax(model(u2).float(), 1)) / 2
                sharpened = guess ** (1 / temperature)
                targets_u = sharpened / sharpened.sum(1, keepdim=True)
            else:  # no unlabelled example (their code fails here): the labelled part alone
                targets_u = targets_x[:0]
        inputs = torch.cat([x1, x2, u1, u2])
        targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
        partner = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        mix = beta_draw(alpha, generator)
        mixed_inputs = mix * inputs + (1 - mix) * inputs[partner]
        mixed_targets = mix * targets + (1 - mix) * targets[partner]
        logits = train_forward(model, mixed_inputs, amp)
        logits_x, targets_mx = logits[:2 * labelled], mixed_targets[:2 * labelled]
        loss_x = torch.sum(-torch.mean(F.log_softmax(logits_x, 1) * targets_mx, 0) * class_weights)
        logits_u = logits[2 * labelled:]
        loss_u = (torch.mean((torch.softmax(logits_u, 1) - mixed_targets[2 * labelled:]) ** 2) if len(logits_u)
                  else logits.new_zeros(()))
        loss = loss_x + ramp(index) * loss_u
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        count = len(inputs)
        return {"loss": loss.detach().double() * count, "count": count,
                "loss_x": loss_x.detach().double() * count, "loss_u": loss_u.detach().double() * count,
                # agreement with the dominant class of each labelled mixed target
                "correct": (logits_x.detach().argmax(1) == targets_mx.argmax(1)).sum(), "labelled": 2 * labelled}

    return step


class PesSemi(PES):
    REFINES = ((0, "T2"),)       # noisy_refine(model, train_loader, 0, T2): the classifier alone
    REFINING_ENDS_EPOCH = False  # epoch T1 refines, then trains its first MixMatch epoch

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.t1 = t1_for(self.config, task.name, T1_DEFAULTS, T1_OURS)
        self.lambda_u = lambda_u_for(self.config, task.name)

    # ------------------------------------------------------------------ the loop
    network_for = staticmethod(network_for)

    def epoch_from_t1(self) -> None:
        """Epoch T1 refines, then, as every later epoch, trains MixMatch steps."""
        if self.state.epoch == self.t1:
            self.refine()
        self.mixmatch_epoch()

    def sgd_with_schedule(self, model: nn.Module, trained: list[nn.Parameter]) -> Trainer:
        """torch's own SGD kernels, as its authors' code, with the cosine schedule to lr / 100 (or --optim step)."""
        config = self.config
        optimizer = make_sgd(trained, config.lr, config.weight_decay, "plain")
        if config.optim == "cos":
            scheduler: Any = CosineAnnealingLR(optimizer, config.n_epoch, config.lr / 100)
        else:
            scheduler = MultiStepLR(optimizer, list(STEP_MILESTONES), 0.1)
        return Trainer(model, optimizer, scheduler)

    def mixmatch_epoch(self) -> None:
        """One epoch of MixMatch steps on the confident (labelled) and other (unlabelled) examples."""
        s, task, config = self.state, self.task, self.config
        started, lr = time.time(), self.trainer.lr
        labelled, _ = self.confident_set()
        unconfident = torch.ones(task.num_train, dtype=torch.bool, device=labelled.device)
        unconfident[labelled] = False
        unlabelled = unconfident.nonzero().squeeze(1)
        labelled_batch, unlabelled_batch = batch_split(len(labelled), len(unlabelled), config.batch_size)
        if len(labelled) < labelled_batch:
            raise UserError(f"PES-semi's labelled set before epoch {s.epoch + 1} has {len(labelled)} examples, "
                            f"fewer than its batch of {labelled_batch}; use a smaller --batch_size or train longer "
                            f"before refining (--T1)")
        iterations = config.iterations_per_epoch or self.default_iterations()
        batches = with_progress(self.mixmatch_batches(labelled, labelled_batch, unlabelled, unlabelled_batch,
                                                      iterations), iterations, f"mixmatch e{s.epoch + 1}",
                                self.run.show_progress)
        weights = clipped_class_weights(task.train_labels[labelled].cpu().numpy(), task.num_classes)
        class_weights = torch.tensor(weights, dtype=torch.float32, device=task.device)
        alpha = alpha_at(s.epoch, config.n_epoch, config.alpha)
        epoch = s.epoch

        def ramp(index: int) -> float:
            return rampup(epoch + index / iterations, self.t1, self.lambda_u)

        step = mixmatch_step(self.trainer.model, self.trainer.optimizer, class_weights, ramp, alpha, config.T,
                             task.generator, config.amp)
        sums = self.train_steps(batches, step, [self.trainer.model], "semi")
        self.trainer.step_schedule()
        self.finish_epoch("semi", sums, lr, started, labelled=int(len(labelled)),
                          loss_x=round(sums["loss_x"] / sums["count"], 6),
                          loss_u=round(sums["loss_u"] / sums["count"], 6))

    def default_iterations(self) -> int:
        """50,000 / batch_size on CIFAR (their constant: CIFAR's training set), else the training set's size /
        batch_size (ours); at least one."""
        examples = CIFAR_EXAMPLES if self.task.name in CIFAR_DATASETS else self.task.num_train
        return max(examples // self.config.batch_size, 1)

    def mixmatch_batches(self, labelled: torch.Tensor, labelled_batch: int, unlabelled: torch.Tensor,
                         unlabelled_batch: int, iterations: int) -> Iterator[tuple]:
        """(step index, x1, x2, labels, u1, u2) for each step: two streams each re-shuffled where it ends."""
        labelled_stream = self.task.two_view_stream(labelled, labelled_batch)
        unlabelled_stream = self.task.two_view_stream(unlabelled, unlabelled_batch) if unlabelled_batch else None
        for index in range(iterations):
            x1, x2, labels = next(labelled_stream)
            u1, u2 = next(unlabelled_stream)[:2] if unlabelled_stream is not None else (x1[:0], x2[:0])
            yield index, x1, x2, labels, u1, u2

    # ------------------------------------------------------------------ measuring: the test set, every epoch
    def finish_epoch(self, phase: str, sums: dict[str, float], lr: float, started: float, **extra: Any) -> None:
        """Count the epoch and test it; the best test accuracy so far is their reported figure."""
        s = self.state
        s.count_epoch()
        tested = self.test(self.trainer.module)
        record = {**self.record(phase, sums, lr, started, None), "test_acc": tested.exact, **extra}
        if phase == "semi":
            record["train_acc"] = round(100.0 * sums["correct"] / max(sums["labelled"], 1), 4)
        if tested.official > s.test_acc_official:
            s.test_acc, s.test_acc_official = tested.exact, tested.official
            s.best_at = {"outer": s.outer, "inner": s.inner, "epoch": s.epoch}
            if self.run.is_main:
                self.write_weights("best", cpu_weights(self.trainer.module))
        self.end_epoch(record)

    def refine_record(self, sums: dict[str, float], lr: float, started: float) -> dict[str, Any]:
        """A refining pass: tested, as their noisy_refine does after each."""
        return {**self.record("refine", sums, lr, started, None), "test_acc": self.test(self.trainer.module).exact}

    def result_fields(self) -> dict[str, Any]:
        # no validation set: the reported model is the best on the test set, as its authors report it
        return {"best_val_acc": None, "selected_on": "test"}
