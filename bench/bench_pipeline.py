"""Time our device-resident input pipeline against the official DataLoader pipeline, and measure
how much of a real Me-Momentum run is spent outside the network's forward and backward passes.

    python bench/bench_pipeline.py [--device auto|cpu|cuda] [--quick] [--threads N]

Three parts, each printed as a table:

(a, b) Training epochs. LeNet on MNIST-sized data (54,000 images, no augmentation) and ResNet-18
   on CIFAR-sized data (45,000 images, random crop pad 4 + flip), batch 128. "ours" is what
   utils/vision_task.py does (uint8 images on the device, DevicePipeline, train_one_epoch, our
   network and make_sgd). "baseline" is what the official code does: a Dataset applying
   torchvision transforms to one PIL image at a time, a DataLoader with its 8 workers,
   `.to(device)` per batch, and its training epoch (top-1/top-5 accuracy and the loss read back
   per batch) over its network (LeNet written conv → ReLU → pool; ours pools first, which is
   bit-identical, see models/lenet.py) with torch's default SGD kernels (ours: fused, `--sgd`).
   A third line, the baseline's input pipeline feeding our epoch, network and SGD, isolates the
   input pipeline's share of the gain. On CUDA a full epoch is timed; on CPU
   only the first few batches, and the epoch time is extrapolated as
   first batch (start-up included) + mean of the following batches × (batches per epoch - 1).
   Each repeat times every line back to back, alternating which goes first; the table shows
   median times and the median of the per-repeat ratios (the machine may be shared, so only the
   ratios are comparable between runs). "speed-up" = baseline time / our time (> 1: ours faster).
   "data only" is batches prepared per second with no model (after the first batch), which
   isolates the input pipeline; num_workers=0 is shown for reference.
(c) A short real run of main.py's code path (MNIST, LeNet, the run driver, VisionTask + MeMomentum) with hooks
   on the network (a forward pass starts), the training loss (the forward pass ends with the
   loss, and train_one_epoch's next statement is loss.backward()) and the optimizer (backward
   ends when the step begins), splitting wall time into forward/backward (evaluation and extraction
   forwards included) and everything else: input pipeline, optimizer step, zeroing gradients,
   metrics, bookkeeping, checkpoints; the project's goal is < 10 % outside.
   Every stamp syncs the device, so on a GPU the split is indicative (CPU/GPU overlap is lost).

Reading the numbers: on a CPU shared with other jobs, torch's OpenMP threads wait for each other
at every operation and small operations slow down by 10-100x, so absolute times swing widely
between runs; compare ratios from one run, and try --threads 1 on a busy machine.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.device_pipeline import DevicePipeline, images_to_device  # noqa: E402
from tests.formats import random_vision_arrays, write_mnist  # noqa: E402

from data.datasets import DATASETS, Dataset as DatasetPreset  # noqa: E402
from data.datasets import load_vision_data  # noqa: E402
from data.vision import missing_files  # noqa: E402
from models import build_model  # noqa: E402
from models.lenet import LeNet  # noqa: E402
from utils.engine import make_sgd, select_device, synchronize, train_one_epoch, uses_channels_last  # noqa: E402
from utils.vision_task import VisionTask, load_dataset  # noqa: E402
from utils.methods.memomentum import MeMomentum  # noqa: E402
from utils.run.distributed import single_process  # noqa: E402
from utils.run.driver import drive  # noqa: E402
from utils.run.lifecycle import Checkpointer  # noqa: E402
from utils.train_config import TrainConfig  # noqa: E402

BATCH_SIZE = 128
OFFICIAL_WORKERS = 8  # the official DataLoaders' num_workers, whatever the machine
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Workload:
    title: str
    dataset: str        # key of data/datasets.py: network, normalisation, augmentation
    num_train: int      # 90 % of the training set, as with the default --data_percent
    cpu_batches: int    # batches timed per measurement on the CPU (a full epoch on CUDA)
    quick_batches: int


WORKLOADS = (
    Workload("LeNet / MNIST", "mnist", 54_000, cpu_batches=60, quick_batches=12),
    Workload("ResNet-18 / CIFAR-10", "cifar10", 45_000, cpu_batches=5, quick_batches=2),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1 ...")
    parser.add_argument("--quick", action="store_true", help="fewer batches and a shorter loop (~1-2 min on 2 CPUs)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="alternating repeats per workload (0: 3, or 1 with --quick)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--data_path", default="/work/shared/data",
                        help="folder with MNIST/raw or cifar-10-batches-py; random images of the same shape otherwise")
    parser.add_argument("--parts", default="abc",
                        help="which parts to run: a (LeNet/MNIST), b (ResNet-18/CIFAR), c (real loop)")
    return parser.parse_args()


# --------------------------------------------------------------------------- data


def load_arrays(workload: Workload, data_path: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The first `num_train` training images (uint8, native layout) and labels, and where they came from."""
    if not missing_files(workload.dataset, data_path):
        vision = load_vision_data(workload.dataset, data_path)
        images, labels, source = vision.train_images, vision.train_labels, f"{workload.dataset} from {data_path}"
    else:
        images, labels, _, _ = random_vision_arrays(workload.dataset, workload.num_train, 1, seed=0)
        source = f"random {workload.dataset}-shaped images"
    return images[:workload.num_train], labels[:workload.num_train], source


def our_batches(pipeline: DevicePipeline, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator) -> Batches:
    """VisionTask.train_epoch's batches: one epoch's draws, then one gather per batch on the device."""
    draws = pipeline.draw_epoch(len(labels), generator, shuffle=True, augment=True)
    for batch, batch_labels, _ in pipeline.batches(images, labels, BATCH_SIZE, draws):
        yield batch, batch_labels


class OfficialStyleDataset(Dataset):
    """The official code's dataset: a PIL image per example, through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def official_transform(preset: DatasetPreset) -> transforms.Compose:
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if preset.crop_and_flip else []
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(preset.mean, preset.std)])


class OfficialLeNet(LeNet):
    """The official code's LeNet: ReLU before max-pool in each block (same parameters as ours)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        conv1, _, _, conv2, _, _ = self.features
        hidden = nn.functional.max_pool2d(nn.functional.relu(conv1(images)), 2)
        hidden = nn.functional.max_pool2d(nn.functional.relu(conv2(hidden)), 2)
        return self.classifier(hidden)


@dataclass
class Trainee:
    """A network, its optimizer and the epoch function that trains it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_epoch: Callable[[nn.Module, torch.optim.Optimizer, Iterable], object]


def trainees(preset: DatasetPreset, device: torch.device, channels_last: bool) -> tuple[Trainee, Trainee]:
    """Ours (as utils/vision_task.py builds it) and the official network and SGD, from the same weights."""
    torch.manual_seed(0)
    ours = build_model(preset.network, preset.num_classes).to(device)
    official = OfficialLeNet(preset.num_classes) if preset.network == "lenet" else build_model(
        preset.network, preset.num_classes)
    official.load_state_dict(ours.state_dict())
    official.to(device)
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
    return (Trainee(ours, make_sgd(ours.parameters(), lr=0.01, weight_decay=1e-4), train_one_epoch),
            Trainee(official, torch.optim.SGD(official.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4),
                    official_train_epoch))


def official_train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable) -> None:
    """The official code's training epoch: per batch, top-1/top-5 accuracy and the loss read
    back to the host for its running averages."""
    model.train()
    loss_sum = top1_sum = count = 0.0
    for images, labels in batches:
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        top5 = logits.topk(5, 1, True, True).indices.t().eq(labels.view(1, -1))
        top1_sum += float(top5[:1].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / len(labels))[0]) * len(labels)
        loss_sum += loss.item() * len(labels)
        count += len(labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def baseline_batches(loader: DataLoader, device: torch.device) -> Batches:
    for images, labels in loader:
        yield images.to(device), labels.to(device)


# --------------------------------------------------------------------------- timing


def stamped(batches: Iterable, device: torch.device, stamps: list[float]) -> Iterator:
    """Pass batches through, stamping the clock each time the consumer is done with one."""
    for batch in batches:
        yield batch
        synchronize(device)
        stamps.append(time.perf_counter())


def epoch_seconds(make_batches: Callable[[], Batches], trainee: Trainee,
                  limit: int, num_batches: int, device: torch.device) -> float:
    """Seconds for one training epoch; extrapolated from the first `limit` batches when fewer."""
    source, stamps = make_batches(), []
    batches = itertools.islice(source, limit)
    if limit < num_batches:  # stamps (and their syncs) only where the estimate needs them
        batches = stamped(batches, device, stamps)
    synchronize(device)
    start = time.perf_counter()
    trainee.train_epoch(trainee.model, trainee.optimizer, batches)  # both end by reading sums: the device is done
    end = time.perf_counter()
    source.close()  # a DataLoader stopped early shuts its workers down here, outside the timing
    if not stamps:
        return end - start
    return (stamps[0] - start) + (stamps[-1] - stamps[0]) * (num_batches - 1) / (len(stamps) - 1)


def data_rate(make_batches: Callable[[], Batches], limit: int, device: torch.device) -> float:
    """Batches per second after the first (start-up excluded), with no model."""
    source = make_batches()
    next(source)
    synchronize(device)
    start = time.perf_counter()
    count = sum(1 for _ in itertools.islice(source, limit - 1))
    synchronize(device)
    seconds = time.perf_counter() - start
    source.close()
    return count / seconds


def alternating(repeats: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each measurement once per repeat, back to back, in reversed order every other repeat."""
    results: dict[str, list[float]] = defaultdict(list)
    for repeat in range(repeats):
        for name in (list(measures) if repeat % 2 == 0 else list(reversed(measures))):
            results[name].append(measures[name]())
    return results


@dataclass
class Measurements:
    """Per-repeat numbers for one workload, keyed by pipeline name."""

    epoch_s: dict[str, list[float]]
    data_rate: dict[str, list[float]]


def measure_workload(workload: Workload, args: argparse.Namespace, device: torch.device) -> tuple[Measurements, dict]:
    preset = DATASETS[workload.dataset]
    images, labels, source = load_arrays(workload, args.data_path)
    num_batches = -(-len(labels) // BATCH_SIZE)
    on_cpu = device.type == "cpu"
    limit = (workload.quick_batches if args.quick else workload.cpu_batches) if on_cpu else num_batches
    data_limit = min(num_batches, 30 if args.quick else 100)
    workers = OFFICIAL_WORKERS

    synchronize(device)
    setup_start = time.perf_counter()
    device_images = images_to_device(images, device)
    device_labels = torch.from_numpy(labels).long().to(device)
    synchronize(device)
    setup_s = time.perf_counter() - setup_start
    channels_last = uses_channels_last("auto", device)  # main.py's default
    pipeline = DevicePipeline(preset.mean, preset.std, preset.crop_and_flip, device, channels_last)
    generator = torch.Generator().manual_seed(0)
    dataset = OfficialStyleDataset(images, labels, official_transform(preset))

    def ours() -> Batches:
        return our_batches(pipeline, device_images, device_labels, generator)

    def baseline(num_workers: int) -> Callable[[], Batches]:
        # The official 8 workers may exceed this machine's CPUs; DataLoader's warning says so.
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
        return lambda: baseline_batches(loader, device)

    our_net, official_net = trainees(preset, device, channels_last)
    for trainee in (our_net, official_net):  # one warm-up step each: kernels, allocator
        epoch_seconds(ours, trainee, 1, 1, device)

    baseline_name = f"baseline ({workers} workers)"
    epochs = {"ours": (ours, our_net), baseline_name: (baseline(workers), official_net),
              "baseline, our net + SGD": (baseline(workers), our_net)}
    data = {"ours": ours, baseline_name: baseline(workers), "baseline (0 workers)": baseline(0)}
    result = Measurements(
        alternating(args.repeats, {name: partial(epoch_seconds, make, trainee, limit, num_batches, device)
                                   for name, (make, trainee) in epochs.items()}),
        alternating(args.repeats, {name: partial(data_rate, make, data_limit, device)
                                   for name, make in data.items()}))
    info = {"source": source, "num_batches": num_batches, "limit": limit, "data_limit": data_limit,
            "setup_s": setup_s}
    return result, info


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def print_workload(workload: Workload, result: Measurements, info: dict) -> None:
    extrapolated = info["limit"] < info["num_batches"]
    timed = f"extrapolated from {info['limit']} of {info['num_batches']} batches" if extrapolated else "full epoch"
    print(f"\n{workload.title}: {workload.num_train} images ({info['source']}), batch {BATCH_SIZE}, "
          f"{timed}; data only over {info['data_limit']} batches; ours copies the set to the device "
          f"once in {info['setup_s']:.3f}s")
    print(f"  {'pipeline':<28}{'epoch (s)':>12}{'epochs/s':>12}{'data batches/s':>17}")
    for name in {**result.epoch_s, **result.data_rate}:
        times, rates = result.epoch_s.get(name), result.data_rate.get(name)
        epoch = f"{statistics.median(times):12.2f}{1 / statistics.median(times):12.4f}" if times else " " * 24
        rate = f"{statistics.median(rates):17.1f}" if rates else ""
        print(f"  {name:<28}{epoch}{rate}")
    ours = "ours"
    for name in result.epoch_s:
        if name != ours:
            print(f"  speed-up ours vs {name}: epoch x{median_ratio(result.epoch_s[name], result.epoch_s[ours]):.2f}")
    for name in result.data_rate:
        if name != ours:
            print(f"  speed-up ours vs {name}: data only "
                  f"x{median_ratio(result.data_rate[ours], result.data_rate[name]):.1f}")


# --------------------------------------------------------------------------- (c) the real loop


class LoopClock:
    """Accumulates wall time per activity; syncs the device at every stamp so times are real."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.started: dict[str, float] = {}

    def start(self, key: str) -> None:
        synchronize(self.device)
        self.started[key] = time.perf_counter()

    def stop(self, key: str, bucket: str | None = None) -> None:
        if key in self.started:
            synchronize(self.device)
            self.seconds[bucket or key] += time.perf_counter() - self.started.pop(key)

    def timed(self, key: str, function: Callable, *args, **kwargs):
        self.start(key)
        try:
            return function(*args, **kwargs)
        finally:
            self.stop(key)


class TimedPipeline(DevicePipeline):
    """DevicePipeline whose batch preparation is charged to the clock's "input pipeline"."""

    def __init__(self, clock: LoopClock, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def draw_epoch(self, *args, **kwargs):
        return self.clock.timed("input pipeline", super().draw_epoch, *args, **kwargs)

    def batches(self, *args, **kwargs):
        inner = super().batches(*args, **kwargs)
        while True:
            batch = self.clock.timed("input pipeline", next, inner, None)
            if batch is None:
                return
            yield batch


class TimedExperiment(VisionTask):
    """VisionTask whose networks, optimizers and pipeline report to a LoopClock."""

    def __init__(self, clock: LoopClock, config: TrainConfig, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self.clock = clock
        preset = config.preset
        self.pipeline = TimedPipeline(clock, preset.mean, preset.std, preset.crop_and_flip, self.device,
                                      self.channels_last)

    def new_model(self) -> nn.Module:
        model = super().new_model()
        model.register_forward_pre_hook(lambda module, inputs: self.clock.start("forward"))
        model.register_forward_hook(self._forward_done)
        return model

    def _forward_done(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if not output.requires_grad:  # a training forward pass ends with its loss
            self.clock.stop("forward", "evaluation forward")

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = super().training_loss(logits, labels)
        self.clock.stop("forward", "training forward")
        self.clock.start("backward")  # train_one_epoch calls loss.backward() next ...
        return loss

    def new_trainer(self, milestones):
        trainer = super().new_trainer(milestones)
        # ... and has finished when train_one_epoch calls optimizer.step() right after it.
        trainer.optimizer.register_step_pre_hook(self._step_starts)
        trainer.optimizer.register_step_post_hook(lambda *_: self.clock.stop("step", "optimizer step"))
        return trainer

    def _step_starts(self, *_) -> None:  # a pre-hook's return value would replace step's arguments
        self.clock.stop("backward")
        self.clock.start("step")


class TimedCheckpointer(Checkpointer):
    """The run's Checkpointer (--checkpoint_every as configured), its work charged to the clock."""

    def __init__(self, clock: "LoopClock", *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timing = clock

    def save_soon(self, state, on_write=None) -> bool:
        return self.timing.timed("checkpoint + weight files", super().save_soon, state, on_write)

    def write_now(self, state) -> None:
        self.timing.timed("checkpoint + weight files", super().write_now, state)


class TimedMeMomentum(MeMomentum):
    """The Me-Momentum loop, its weight files charged to the clock."""

    def write_weights(self, which: str, weights: dict[str, torch.Tensor]) -> None:
        self.task.clock.timed("checkpoint + weight files", super().write_weights, which, weights)


def mnist_path(data_path: str, scratch: Path) -> tuple[str, str]:
    """Where MNIST is; random MNIST-shaped IDX files in `scratch` when `data_path` lacks it."""
    if not missing_files("mnist", data_path):
        return data_path, f"MNIST from {data_path}"
    write_mnist(scratch, *random_vision_arrays("mnist", 60_000, 10_000, seed=0))
    return str(scratch), "random MNIST-shaped IDX files"


def run_loop(args: argparse.Namespace, device: torch.device) -> None:
    """Part (c): main.py's run through the run driver, with timing hooks, in a temporary run folder."""
    n_epoch, max_inner = (1, 2) if args.quick else (2, 3)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as scratch:
        data_path, source = mnist_path(args.data_path, Path(scratch) / "data")
        config = TrainConfig(dataset="mnist", data_path=data_path, n_epoch=n_epoch, max_outer_loop=1,
                             max_inner_loop=max_inner, output_dir=f"{scratch}/run",
                             model_dir=f"{scratch}/model", device=str(device), no_progress=True)
        clock = LoopClock(device)
        loops, marks = [], {"setup": time.perf_counter()}

        def open_loop(run):
            experiment = TimedExperiment(clock, config, load_dataset(config), device)
            run.checkpointer = TimedCheckpointer(clock, run.files.checkpoint, config.checkpoint_every)
            loops.append(TimedMeMomentum(experiment, run, "Me-Momentum"))
            marks["loop"] = time.perf_counter()
            return loops[-1]

        with contextlib.redirect_stdout(io.StringIO()):
            drive(config, single_process(str(device)), open_loop)
        synchronize(device)
        loop_s = time.perf_counter() - marks["loop"]
        setup_s = marks["loop"] - marks["setup"]
    print_loop(clock.seconds, loop_s, setup_s, loops[0].state.epochs_run, n_epoch, max_inner, source)


def print_loop(seconds: dict[str, float], loop_s: float, setup_s: float, epochs: int,
               n_epoch: int, max_inner: int, source: str) -> None:
    passes = seconds["training forward"] + seconds["backward"] + seconds["evaluation forward"]
    print(f"\n(c) real loop: {source}, LeNet, n_epoch {n_epoch}, 1 outer round, max_inner_loop {max_inner}: "
          f"{epochs} training epochs in {loop_s:.1f}s (+ {setup_s:.1f}s loading data, noise, device copy)")
    print(f"  {'activity':<30}{'seconds':>10}{'% of loop':>11}")
    rest = loop_s - sum(seconds.values())
    for key in ("training forward", "backward", "evaluation forward", "optimizer step", "input pipeline",
                "checkpoint + weight files"):
        print(f"  {key:<30}{seconds[key]:10.2f}{100 * seconds[key] / loop_s:10.1f}%")
    print(f"  {'other (zero_grad, metrics, ...)':<30}{rest:10.2f}{100 * rest / loop_s:10.1f}%")
    outside = loop_s - passes
    print(f"  outside forward/backward: {100 * outside / loop_s:.1f}% of the loop, "
          f"{100 * (outside + setup_s) / (loop_s + setup_s):.1f}% with the set-up; "
          f"{100 * (outside - seconds['optimizer step']) / loop_s:.1f}% of the loop if the optimizer step "
          f"counts as inside (goal: < 10%)")


def main() -> None:
    args = parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {args.repeats} repeat(s); medians shown")
    for part, workload in zip("ab", WORKLOADS):
        if part in args.parts:
            result, info = measure_workload(workload, args, device)
            print_workload(workload, result, info)
    if "c" in args.parts:
        run_loop(args, device)


if __name__ == "__main__":
    main()
