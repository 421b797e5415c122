"""The training engine shared by every entry point: device choice, autocast, SGD, one training
epoch and prediction (the accuracy measures are in utils/metrics.py).

Batches come from any iterable of (images, labels) already on the device, so the device
pipeline (MNIST/CIFAR) and a DataLoader (Clothing1M) use the same code.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import MultiStepLR

from utils.errors import StopRequested, UserError


def select_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; any explicit torch device string overrides, and must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this machine has no usable CUDA GPU; use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                       and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: Apple MPS is not available here; use --device auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: unsupported device type {device.type!r}; use auto, cpu, cuda, "
                        f"cuda:N or mps")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device`, so that wall-clock stamps mean what they say (benchmarks)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast where the device supports it; a no-op otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


MEMORY_FORMATS = ("auto", "on", "off")  # --channels_last


# differs from the official code: `--channels_last auto` (default)
def uses_channels_last(setting: str, device: torch.device) -> bool:
    """Whether images and convolution weights go channels-last.

    "auto" turns it on for the CPU only: there oneDNN's channels-last convolutions and max-pool
    make a LeNet step ~20 % and a ResNet-18 step ~6 % faster (2-core CPU); on GPUs the gain
    depends on the card and --amp, so it is left to the user. The convolutions round
    differently from the default layout in the last bits; nothing else changes.
    """
    if setting not in MEMORY_FORMATS:
        raise ValueError(f"unknown --channels_last setting {setting!r}; choose one of {MEMORY_FORMATS}")
    return setting == "on" or (setting == "auto" and device.type == "cpu")


SGD_KERNELS = ("fused", "plain")
SGD_MOMENTUM = 0.9  # official, for every dataset


# differs from the official code: `--sgd fused` (default)
def make_sgd(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
             kernels: str = "fused") -> torch.optim.SGD:
    """SGD with momentum 0.9, as in the official code.

    "fused" runs the whole update (weight decay, momentum, step) as one kernel per parameter:
    the same arithmetic as torch's default ("plain") kernels, rounded differently in the last
    bit now and then, and about 3× cheaper per step for a small network on the CPU, where the
    per-tensor Python work of the default implementation rivals LeNet's backward pass.
    """
    if kernels not in SGD_KERNELS:
        raise ValueError(f"unknown SGD kernels {kernels!r}; choose one of {SGD_KERNELS}")
    return torch.optim.SGD(parameters, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay,
                           fused=True if kernels == "fused" else None)


LR_GAMMA = 0.1  # every MultiStepLR of the official code multiplies the rate by 0.1 at each milestone


@dataclass
class Trainer:
    """A network with what updates it: its optimizer and learning-rate schedule (None: constant).

    `model` is what trains (DistributedDataParallel under torchrun); `module` the network itself.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: MultiStepLR | None = None
    module: nn.Module | None = None

    EMPTY_STATE: ClassVar[dict[str, Any]] = {"model": None, "optimizer": None, "scheduler": None}

    def __post_init__(self) -> None:
        if self.module is None:
            self.module = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step_schedule(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.module.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])


def sgd_trainer(model: nn.Module, lr: float, weight_decay: float, kernels: str,
                milestones: Sequence[int] | None, module: nn.Module | None = None,
                parameters: Iterable[nn.Parameter] | None = None) -> Trainer:
    """SGD (momentum 0.9) for `model` (or only its `parameters`), with MultiStepLR(milestones, 0.1)
    unless `milestones` is None."""
    optimizer = make_sgd(model.parameters() if parameters is None else parameters, lr, weight_decay, kernels)
    scheduler = MultiStepLR(optimizer, list(milestones), LR_GAMMA) if milestones is not None else None
    return Trainer(model, optimizer, scheduler, module)


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # --compile


def place_network(model: nn.Module, device: torch.device, channels_last: bool, compile_mode: str) -> nn.Module:
    """A new network on `device`, its weights channels-last where `channels_last`, compiled with
    `compile_mode` (compile_network): how every task readies the networks it builds."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return compile_network(model, compile_mode)


def compile_network(model: nn.Module, mode: str = "off") -> nn.Module:
    """The network compiled in place with torch.compile (inductor) for training and inference.

    In place (nn.Module.compile), so that the parameters keep their names: state_dict() has the
    same keys as before and checkpoints and weights files stay interchangeable ("torch.compile(model)"
    would wrap it and prefix every key with "_orig_mod."). The parameters are inputs of the compiled
    graphs, not constants, so a fresh network of the same class and shapes (every Me-Momentum
    round builds one) reuses the compiled code. Each variant costs one compilation: training,
    inference (eval mode, inference_mode), and the first batch of another size, which makes the
    batch dimension dynamic for every later size (dynamic=False would recompile for each new size
    of the last batch, and the selected subsets change size every round). "reduce-overhead" adds
    CUDA graphs on CUDA and is "default" elsewhere. "off" returns the network unchanged.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown --compile mode {mode!r}; choose one of {COMPILE_MODES}")
    if mode != "off":
        model.compile(mode=mode)
    return model


def compiled_graph_count() -> int:
    """Graphs torch.compile has compiled in this process so far (to count recompilations)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


@dataclass
class EpochStats:
    """Sums over one pass (kept as sums so that distributed ranks can add them up)."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / max(self.count, 1)

    @classmethod
    def of(cls, sums: dict[str, float]) -> "EpochStats":
        """From run_steps' sums (an epoch without batches: zeros)."""
        return cls(sums.get("loss", 0.0), int(sums.get("correct", 0)), int(sums.get("count", 0)))


# A training step: called with one batch's items (images, labels, their positions, ...), it trains
# (forward, loss, backward, the optimizers' steps) and returns what the epoch sums: tensors on the
# device or ints. "loss" (summed over the examples) and "count" (examples) are what every step returns.
Step = Callable[..., dict[str, "torch.Tensor | int"]]


def run_steps(batches: Iterable[tuple], step: Step, networks: Sequence[nn.Module],
              should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """One pass of `step` over `batches` with `networks` in training mode: the per-batch mechanics
    every method shares. The step's figures are summed on the device and read once at the end; a
    stop request is honoured after any batch (StopRequested)."""
    for network in networks:
        network.train()
    totals: dict[str, Any] = {}
    for batch in batches:
        for key, value in step(*batch).items():
            totals[key] = totals[key] + value if key in totals else value
        if should_stop is not None and should_stop():
            raise StopRequested
    return read_totals(totals)


def read_totals(totals: dict[str, Any]) -> dict[str, float]:
    """The sums as Python numbers, with one transfer from the device for all of them."""
    tensors = [key for key, value in totals.items() if isinstance(value, torch.Tensor)]
    read = dict(totals)
    if tensors:
        values = torch.stack([totals[key].detach().double().reshape(()) for key in tensors]).tolist()
        read.update(zip(tensors, values))
    return read


def train_forward(model: nn.Module, images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """The training forward pass under autocast when `amp`: float32 logits."""
    device = images.device
    with autocast(device, amp):
        return forward(model, images).float()


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    amp: bool = False) -> Step:
    """The step of one network trained on its batch's labels with `loss_fn` (default: cross-entropy)."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimizer.zero_grad(set_to_none=True)

    def step(images: torch.Tensor, labels: torch.Tensor, *rest: Any) -> dict[str, Any]:
        logits = train_forward(model, images, amp)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        # Clearing the gradients right after the step, not before the next backward, is the same
        # thing and costs less: they are still in the cache (a few % of a LeNet step on a CPU).
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach().double() * labels.numel(), "correct": (logits.detach().argmax(1) == labels).sum(),
                "count": labels.numel()}

    return step


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    amp: bool = False, should_stop: Callable[[], bool] | None = None) -> EpochStats:
    """One pass of SGD over `batches` (supervised_step through run_steps)."""
    return EpochStats.of(run_steps(batches, supervised_step(model, optimizer, loss_fn, amp), [model], should_stop))


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's training forward pass; a batch too small for its BatchNorm is a UserError."""
    try:
        return model(images)
    except ValueError as error:
        if "Expected more than 1 value per channel" not in str(error):
            raise
        raise UserError(f"a training batch of {len(images)} image(s) is too small for the network's BatchNorm "
                        f"(one value per channel); use a larger --batch_size") from None


def predict_logits(model: nn.Module, batches: Iterable[torch.Tensor], amp: bool = False) -> torch.Tensor:
    """Logits for every batch, concatenated in order (float32, on the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode(), autocast(device, amp):
        for images in batches:
            # A copy (of logits only: small) even when they are float32 already: with CUDA graphs
            # (compile mode "reduce-overhead") the next batch's replay overwrites the output buffer.
            outputs.append(model(images).to(torch.float32, copy=True))
    if not outputs:
        return torch.empty(0, 0, device=device)
    return torch.cat(outputs)


def images_only(batches: Iterable[tuple]) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch[0]
