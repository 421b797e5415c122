"""PES on Clothing1M (docs/method.md, "PES on Clothing1M"), as its authors' PES_Clothing1M.py runs it.

    w := class weights (mean n / n_c) · (v_c / mean v) of the noisy labels n and the clean validation v
    for network k in 1 .. num_networks (one after the other):
        a fresh pretrained network; SGD (lr, momentum 0.9, weight decay) with MultiStepLR at
            T1 · K and (T1 + 1) · K, stepped after every chunk (K := num_iters_epoch chunks an epoch)
        for epoch in 0 .. n_epoch - 1:
            epoch == T1: renew the classifier, freeze the rest, train it with Adam(PES_lr) on T2 chunks
                         of one pass over every noisy example (w-weighted cross-entropy); then the
                         training set := the examples whose mean softmax over two augmented views
                         predicts their noisy label, w recomputed on it. The SGD never updates the
                         renewed classifier again
            one shuffled pass over the training set in K chunks of (batches − 1) // K batches; after
                each chunk: the clean validation accuracy; the schedule's step; when it beats network
                k's best: its test accuracy, and its weights kept
    reported: the test accuracy of the mean softmax of the networks' kept weights (num_networks 1: the
        first network's best)

The data, network and passes are the task's (utils/clothing_task.py); starting, resuming, checkpoints
and result files are the run driver's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from data.clothing_index import class_counts
from utils.engine import EpochStats, Trainer, sgd_trainer, supervised_step
from utils.errors import UserError
from utils.metrics import TestAccuracy, batch_mean_accuracy, readable_accuracy
from utils.methods.memomentum_clothing1m import class_weights
from utils.run.atomic import atomic_torch_save
from utils.run.loop import LoopState, TrainerLoop, cpu_weights


@dataclass
class PesClothingState(LoopState):
    """`outer`: the network in training (0-based); `epoch`: its epochs done; `inner`: chunks done in the
    epoch; `refine_chunks`: Adam chunks done at epoch T1; `pass_order`: the epoch's shuffled training
    positions; `train_positions`: the training set (every example until T1, then the confident set)."""

    refine_chunks: int = 0
    selected: bool = False          # the confident set of this network is chosen (epoch T1)
    pass_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    train_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    network_bests: list[dict[str, Any]] = field(default_factory=list)  # per finished or running network

    ARRAY_FIELDS: ClassVar[tuple[str, ...]] = ("pass_order", "train_positions")


def chunk_loss(loss_fn: Any, stats: EpochStats) -> float:
    """The chunk's weighted loss; 0 for a chunk without a batch (a confident set too small for one)."""
    return loss_fn.epoch_loss() if stats.count else 0.0


class PesClothing1M(TrainerLoop):
    State = PesClothingState

    def __init__(self, task: Any, run: Any, title: str) -> None:
        super().__init__(task, run, title)
        self.t1 = self.config.T1            # 0 refines before the first epoch, as theirs
        if self.chunk_batches_of(task.num_train) == 0:
            raise UserError(f"{task.num_train} training examples in batches of {self.config.batch_size} leave no batch "
                            f"for each of --num_iters_epoch {self.config.num_iters_epoch} chunks: nothing would "
                            f"train; use a smaller --num_iters_epoch or --batch_size")
        self.refiner: torch.optim.Adam | None = None

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        s, config = self.state, self.config
        while True:
            if self.trainer is None:
                self.start_network()
            while s.epoch < config.n_epoch:
                if s.epoch == self.t1 and s.inner == 0 and not s.selected:
                    self.refine()
                self.train_epoch()
            if s.outer + 1 == config.num_networks:  # the last network stays: the run's last model
                break
            s.outer, s.epoch, s.inner, s.refine_chunks, s.selected = s.outer + 1, 0, 0, 0, False
            self.trainer = None
        self.report()

    def report(self) -> None:
        """The reported figures: the networks' ensemble (their last printout), or the one network's best."""
        s = self.state
        if self.config.num_networks == 1:
            best = s.network_bests[0]
            s.best_val_acc, s.test_acc = best["best_val_acc"], best["test_acc"]
            s.test_acc_official = best["test_acc_official"]
            s.best_at = best["best_at"]
            return
        val, test = self.ensemble()
        s.best_val_acc, s.test_acc, s.test_acc_official, s.best_at = val, test.exact, test.official, None

    def start_network(self) -> None:
        s, config = self.state, self.config
        s.train_positions = np.arange(self.task.num_train, dtype=np.int64)
        s.network_bests.append({"best_val_acc": 0.0, "test_acc": 0.0, "test_acc_official": 0.0, "best_at": None})
        self.trainer = self.new_trainer(frozen=False)
        self.run.log(f"PES: network {s.outer + 1} of {config.num_networks}")

    def new_trainer(self, frozen: bool) -> Trainer:
        """A fresh pretrained network with their SGD and schedule; `frozen`: the SGD without the classifier
        (after T1, where theirs holds the replaced one)."""
        config = self.config
        model = self.task.new_model()
        parameters = [p for name, p in model.named_parameters() if not (frozen and name.startswith("fc."))]
        milestones = (self.t1 * config.num_iters_epoch, (self.t1 + 1) * config.num_iters_epoch)
        return sgd_trainer(model, config.lr, config.weight_decay, "plain", milestones, parameters=parameters)

    def renewed(self) -> bool:
        """Whether this network's classifier was renewed (their noisy_refine does nothing with T2 = 0)."""
        s = self.state
        return self.config.T2 > 0 and (s.epoch > self.t1 or (s.epoch == self.t1 and s.refine_chunks > 0))

    def chunk_batches(self) -> int:
        return self.chunk_batches_of(len(self.state.train_positions))

    def chunk_batches_of(self, examples: int) -> int:
        """Their `train`'s batches per chunk: (full batches of the pass − 1) // num_iters_epoch."""
        full_batches = examples // self.config.batch_size
        return max(full_batches - 1, 0) // self.config.num_iters_epoch  # their int() of a negative: 0

    def chunk(self, index: int, positions: np.ndarray) -> np.ndarray:
        size = self.chunk_batches() * self.config.batch_size
        return positions[index * size:(index + 1) * size]

    def loss(self) -> Any:
        noisy_labels = self.task.train_labels.cpu().numpy()[self.state.train_positions]
        return self.task.class_weighted_loss(class_weights(class_counts(noisy_labels, self.config.num_classes),
                                                           self.task.val_counts))

    def train_epoch(self) -> None:
        """The epoch's chunks (resumed from the chunk after the last one recorded)."""
        s, trainer = self.state, self.trainer
        if s.inner == 0:
            s.pass_order = self.new_pass_order()
        loss_fn = self.loss()
        while s.inner < self.config.num_iters_epoch:
            started, lr = time.time(), trainer.lr
            batches = self.task.training_batches(self.chunk(s.inner, s.pass_order),
                                                 f"network {s.outer + 1} epoch {s.epoch + 1} chunk {s.inner + 1}",
                                                 drop_last=True)
            step = supervised_step(trainer.model, trainer.optimizer, loss_fn, self.config.amp)
            stats = EpochStats.of(self.train_steps(batches, step, [trainer.model], "pes"))
            self.finish_chunk(stats, chunk_loss(loss_fn, stats), lr, started)
            if s.inner == 0:
                break

    def new_pass_order(self) -> np.ndarray:
        positions = self.state.train_positions
        return positions[torch.randperm(len(positions), generator=self.task.generator).numpy()]

    def finish_chunk(self, stats: EpochStats, loss: float, lr: float, started: float) -> None:
        """Validate, step the schedule, test and keep the weights on a new best of this network (the
        first chunk's in any case, so that every network has weights to test together); then the
        position moves on and the chunk's record ends it."""
        s, trainer = self.state, self.trainer
        self.require_finite(loss, "pes")
        val_acc = self.validate(trainer.model)
        trainer.step_schedule()
        best = s.network_bests[s.outer]
        record = self.epoch_record("pes", loss, stats.accuracy, val_acc, lr, stats.count, started,
                                   network=s.outer + 1, chunk=s.inner + 1)
        record["epoch"] = s.epoch + 1  # the epoch this chunk belongs to
        if val_acc > best["best_val_acc"] or best["best_at"] is None:
            test = self.test(trainer.module)
            best.update(best_val_acc=val_acc, test_acc=test.exact, test_acc_official=test.official,
                        best_at={"network": s.outer + 1, "epoch": s.epoch + 1, "chunk": s.inner + 1})
            record["test_acc"] = test.exact
            if self.run.is_main:
                atomic_torch_save(self.best_file(s.outer), cpu_weights(trainer.module))
        s.inner = (s.inner + 1) % self.config.num_iters_epoch
        s.epoch += s.inner == 0
        s.epochs_run += 1
        self.end_epoch(record)

    def refine(self) -> None:
        """Epoch T1: renew the classifier and train it with Adam on T2 chunks of one pass over the training
        set (none with T2 = 0, as theirs); then the confident set."""
        s, config, task = self.state, self.config, self.task
        model = self.trainer.module
        if s.refine_chunks < config.T2:
            if self.refiner is None:
                if s.refine_chunks == 0:
                    self.renew_classifier(model)
                self.refiner = torch.optim.Adam(model.fc.parameters(), lr=config.PES_lr)
            loss_fn = self.loss()
        while s.refine_chunks < config.T2:
            started = time.time()
            batches = task.training_batches(self.chunk(s.refine_chunks, s.pass_order),
                                            f"refine {s.refine_chunks + 1}", drop_last=True)
            step = supervised_step(self.trainer.model, self.refiner, loss_fn, config.amp)
            stats = EpochStats.of(self.train_steps(batches, step, [self.trainer.model], "refine"))
            record = self.epoch_record("refine", chunk_loss(loss_fn, stats), stats.accuracy, None, config.PES_lr,
                                       stats.count, started, network=s.outer + 1, refine_chunk=s.refine_chunks + 1)
            s.refine_chunks += 1
            s.epochs_run += 1
            if s.refine_chunks == config.T2:
                self.refiner = None
                self.train_all_but_classifier(model)
            self.end_epoch(record)
        self.select_confident()

    def renew_classifier(self, model: nn.Module) -> None:
        """A new classifier, the only trained parameters; the SGD drops the replaced one (which no longer
        gets gradients: theirs skips it); a new pass over the training set for the Adam chunks."""
        s = self.state
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.fc = nn.Linear(model.fc.in_features, self.config.num_classes)
        self.task.place(model)
        self.drop_classifier_from_sgd()
        s.pass_order = self.new_pass_order()
        self.run.log(f"PES: renewed the classifier of network {s.outer + 1}; refining it with Adam "
                     f"(lr {self.config.PES_lr:g})")

    @staticmethod
    def train_all_but_classifier(model: nn.Module) -> None:
        """After refining: every parameter trains again, but no optimizer holds the classifier's (their
        SGD was built before the renewal), so it gets no gradient here."""
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(not name.startswith("fc."))

    def drop_classifier_from_sgd(self) -> None:
        optimizer = self.trainer.optimizer
        kept = [p for name, p in self.trainer.module.named_parameters() if not name.startswith("fc.")]
        kept_ids = {id(p) for p in kept}
        optimizer.param_groups[0]["params"] = kept
        for parameter in [p for p in optimizer.state if id(p) not in kept_ids]:
            del optimizer.state[parameter]

    def select_confident(self) -> None:
        """The training set := the examples whose mean softmax over two augmented views predicts their
        noisy label (an unreadable image never does)."""
        s, task, model = self.state, self.task, self.trainer.model
        probabilities = sum(torch.softmax(task.training_set_logits(model), 1) for _ in range(2)) / 2
        agrees = (probabilities.argmax(1) == task.train_labels) & probabilities.isfinite().all(1)
        s.train_positions = agrees.nonzero().squeeze(1).cpu().numpy()
        s.selected = True
        if self.chunk_batches() == 0:  # their `train` fails here (a loop that never runs, then its index read)
            self.run.log(f"WARNING: PES kept {len(s.train_positions)} confident examples for network "
                         f"{s.outer + 1}, too few for a batch in each of {self.config.num_iters_epoch} chunks: its "
                         f"chunks from here on train nothing (train longer before refining: --T1)")
        record = {"kind": "round", "outer": s.outer, "inner": s.epoch, "confident_size": len(s.train_positions)}
        self.end_round(record, f"network {s.outer + 1}: {len(s.train_positions)} confident examples of "
                               f"{task.num_train}",
                       summary={"network": s.outer + 1, "confident_size": len(s.train_positions)})

    # ------------------------------------------------------------------ measuring
    def validate(self, model: nn.Module) -> float:
        """Their evaluate: the mean of per-batch accuracies over batches of 2 × batch_size."""
        predictions, labels = self.task.validation_predictions(model)
        readable = predictions >= 0
        return batch_mean_accuracy(torch.from_numpy(predictions[readable]), torch.from_numpy(labels[readable]),
                                   2 * self.config.batch_size)

    def test(self, model: nn.Module) -> TestAccuracy:
        return self.accuracy_of(torch.softmax(self.task.test_logits(model), 1))

    def accuracy_of(self, probabilities: torch.Tensor) -> TestAccuracy:
        readable = probabilities.isfinite().all(1)
        predictions = probabilities.argmax(1).masked_fill(~readable, -1).cpu().numpy()
        labels = self.task.test_labels.cpu().numpy()
        return TestAccuracy(readable_accuracy(predictions, labels),
                            batch_mean_accuracy(torch.from_numpy(predictions[predictions >= 0]),
                                                torch.from_numpy(labels[predictions >= 0]), 2 * self.config.batch_size))

    def best_file(self, network: int) -> str:
        return str(self.run.files.run_dir / f"best_network{network + 1}.pt")

    def ensemble(self) -> tuple[float, TestAccuracy]:
        """The validation and test accuracy of the mean softmax of every network's kept weights."""
        model = self.task.network_for_weights()
        val_total = test_total = 0.0
        for network in range(self.config.num_networks):
            model.load_state_dict(self.task.load_weights(self.best_file(network)))
            val_total = val_total + torch.softmax(self.task.validation_logits(model), 1)
            test_total = test_total + torch.softmax(self.task.test_logits(model), 1)
        val_probabilities = val_total / self.config.num_networks
        readable = val_probabilities.isfinite().all(1)
        labels = self.task.val_labels[readable]
        val_acc = batch_mean_accuracy(val_probabilities[readable].argmax(1).cpu(), labels.cpu(),
                                      2 * self.config.batch_size)
        return val_acc, self.accuracy_of(test_total / self.config.num_networks)

    # ------------------------------------------------------------------ the protocol
    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        return {**saved, "refiner": self.refiner.state_dict() if self.refiner is not None else None}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["model"] is None:
            return
        renewed = self.renewed()
        self.trainer = self.new_trainer(frozen=renewed)
        self.trainer.load_state_dict(saved)
        model = self.trainer.module
        if renewed and self.state.refine_chunks < self.config.T2:  # within the Adam chunks
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.startswith("fc."))
            self.refiner = torch.optim.Adam(model.fc.parameters(), lr=self.config.PES_lr)
            self.refiner.load_state_dict(saved["refiner"])
        elif renewed:
            self.train_all_but_classifier(model)

    def result_fields(self) -> dict[str, Any]:
        return {"networks": self.state.network_bests}
