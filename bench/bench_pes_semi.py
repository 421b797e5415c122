"""Time one PES-semi MixMatch epoch (utils/methods/pes_semi.py) against its authors' PES_semi.py pipeline.

    python bench/bench_pes_semi.py [--workload cifar|mnist] [--device auto|cpu|cuda] [--steps K]
                                   [--repeats N] [--workers N] [--threads N] [--quick]

Random uint8 images of the real shapes and random labels (CIFAR-10: 50,000 × 32×32×3, PreAct ResNet-18;
MNIST: 60,000 × 28×28, LeNet); the first 60 % of a seeded permutation is labelled, the rest unlabelled,
and batch 128 is split between them as batch_split does (77 + 51). An epoch is 50,000 // 128 = 390 steps
on CIFAR (their constant), 60,000 // 128 = 468 on MNIST. "ours": PesSemi.mixmatch_batches over
VisionTask.two_view_stream (uint8 images on the device, DevicePipeline's batched crops, flips and
normalisation) and mixmatch_step through the engine's run_steps, the network channels-last on the CPU as
main.py places it. "baseline": their update_trainloader + MixMatch_train: two DataLoaders (shuffle,
drop_last, --workers; theirs 8) of two-view PIL items through torchvision transforms, re-iterated when
exhausted, `.to(device)` per batch, and their step written out, on the same network class from the same
weights in the default layout. Both use torch's plain SGD (lr 0.02, weight decay 5e-4). On CUDA a whole
epoch is timed (or --steps); on the CPU only --steps, and the epoch is extrapolated as first step
(start-up included: DataLoader workers, our first passes drawn) + mean of the following steps × (steps
per epoch − 1). Each repeat times both lines back to back, alternating which goes first; the table shows
median epoch times and the median of the per-repeat ratios, "speed-up" = baseline time / our time (> 1:
ours faster). On a shared CPU absolute times swing between runs: compare ratios, and try --threads 1.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pipeline import (OfficialStyleDataset, alternating, median_ratio, official_transform,  # noqa: E402
                                  stamped)
from data.datasets import DATASETS  # noqa: E402
from data.device_pipeline import DevicePipeline, images_to_device  # noqa: E402
from models import build_model  # noqa: E402
from tests.formats import random_vision_arrays  # noqa: E402
from utils.engine import (make_sgd, place_network, run_steps, select_device, synchronize,  # noqa: E402
                          uses_channels_last)
from utils.methods.pes import confident_class_weights  # noqa: E402
from utils.methods.pes_semi import (LAMBDA_U, MAX_CLASS_WEIGHT, T1_OURS, PesSemi, PesSemiOptions,  # noqa: E402
                                    batch_split, mixmatch_step, rampup)
from utils.vision_task import VisionTask  # noqa: E402

BATCH_SIZE, LR, WEIGHT_DECAY = 128, 0.02, 5e-4  # PES_semi.py's defaults
LABELLED_SHARE = 0.6


@dataclass(frozen=True)
class Workload:
    title: str
    dataset: str     # key of data/datasets.py: normalisation and augmentation
    network: str
    num_images: int  # also sets the epoch: num_images // BATCH_SIZE steps


WORKLOADS = {"cifar": Workload("PreAct ResNet-18 / CIFAR-10", "cifar10", "preact_resnet18", 50_000),
             "mnist": Workload("LeNet / MNIST", "mnist", "lenet", 60_000)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="cifar", choices=WORKLOADS, help="network and image shape")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1 ...")
    parser.add_argument("--steps", type=int, default=0, help="steps timed per line (0: 4 on the CPU, an epoch on CUDA)")
    parser.add_argument("--repeats", type=int, default=0, help="alternating repeats (0: 3, or 1 with --quick)")
    parser.add_argument("--workers", type=int, default=2, help="num_workers of each baseline DataLoader (theirs: 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat of 2 steps")
    return parser.parse_args()


class TwoViewDataset(OfficialStyleDataset):
    """Their Semi_Labeled_Dataset ((view, view, label)) or, with labels None, Semi_Unlabeled_Dataset
    ((view, view)): the transform applied twice to one PIL image."""

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple:
        image = Image.fromarray(self.images[index])
        views = (self.transform(image), self.transform(image))
        return views if self.labels is None else (*views, int(self.labels[index]))


def official_batches(labelled: DataLoader, unlabelled: DataLoader, steps: int) -> Iterator[tuple]:
    """MixMatch_train's batches: each loader re-iterated (new workers, new shuffle) where it runs out."""
    labelled_batches, unlabelled_batches = (itertools.chain.from_iterable(itertools.repeat(loader))
                                            for loader in (labelled, unlabelled))
    for index in range(steps):
        yield (index, *next(labelled_batches), *next(unlabelled_batches))


def official_step(model: nn.Module, optimizer: torch.optim.Optimizer, class_weights: torch.Tensor,
                  ramp: Callable[[int], float], alpha: float, temperature: float, device: torch.device) -> Callable:
    """Their MixMatch_train step on CPU batches, written out as theirs (global generators included)."""
    num_classes = len(class_weights)

    def step(index: int, inputs_x, inputs_x2, labels, inputs_u, inputs_u2) -> dict:
        batch = inputs_x.size(0)
        targets_x = torch.zeros(batch, num_classes).scatter_(1, labels.view(-1, 1), 1)  # one-hot on the host
        inputs_x, inputs_x2, targets_x = inputs_x.to(device), inputs_x2.to(device), targets_x.to(device)
        inputs_u, inputs_u2 = inputs_u.to(device), inputs_u2.to(device)
        with torch.no_grad():
            guess = (torch.softmax(model(inputs_u), 1) + torch.softmax(model(inputs_u2), 1)) / 2
            sharpened = guess ** (1 / temperature)
            targets_u = sharpened / sharpened.sum(1, keepdim=True)
        all_inputs = torch.cat([inputs_x, inputs_x2, inputs_u, inputs_u2])
        all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
        partner = torch.randperm(all_inputs.size(0))
        mix = np.random.beta(alpha, alpha)
        mix = max(mix, 1 - mix)
        mixed_input = mix * all_inputs + (1 - mix) * all_inputs[partner]
        mixed_target = mix * all_targets + (1 - mix) * all_targets[partner]
        logits = model(mixed_input)
        loss_x = torch.sum(-torch.mean(F.log_softmax(logits[:2 * batch], 1) * mixed_target[:2 * batch], 0)
                           * class_weights)
        loss_u = torch.mean((torch.softmax(logits[2 * batch:], 1) - mixed_target[2 * batch:]) ** 2)
        loss = loss_x + ramp(index) * loss_u
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_x.item(), loss_u.item(), loss.item()  # their AverageMeters read each loss back every step
        return {}

    return step


@dataclass
class Line:
    """One timed pipeline: what starts an epoch's batches, the step that trains on them, its network."""

    batches: Callable[[], Iterator[tuple]]
    step: Callable
    model: nn.Module


@dataclass
class Setting:
    """What both lines share: the images, the two sets, their batches, the loss weights."""

    workload: Workload
    images: np.ndarray
    labels: np.ndarray
    labelled: np.ndarray
    unlabelled: np.ndarray
    labelled_batch: int
    unlabelled_batch: int
    steps_per_epoch: int
    class_weights: torch.Tensor

    def ramp(self, index: int) -> float:
        """lambda_u's ramp in the first MixMatch epoch (epoch T1), as mixmatch_epoch computes it."""
        return rampup(T1_OURS + index / self.steps_per_epoch, T1_OURS, LAMBDA_U)


def synthetic_setting(workload: Workload, device: torch.device) -> Setting:
    """Random images and labels of the real shapes; the first 60 % of a seeded permutation labelled."""
    images, labels, _, _ = random_vision_arrays(workload.dataset, workload.num_images, 0, seed=0)
    order = np.random.default_rng(1).permutation(len(labels))
    cut = int(LABELLED_SHARE * len(labels))
    labelled, unlabelled = np.sort(order[:cut]), np.sort(order[cut:])
    num_classes = DATASETS[workload.dataset].num_classes
    weights = np.minimum(confident_class_weights(labels[labelled], num_classes), MAX_CLASS_WEIGHT)
    return Setting(workload, images, labels, labelled, unlabelled,
                   *batch_split(len(labelled), len(unlabelled), BATCH_SIZE), workload.num_images // BATCH_SIZE,
                   torch.tensor(weights, dtype=torch.float32, device=device))


def our_line(setting: Setting, model: nn.Module, device: torch.device) -> Line:
    """PesSemi.mixmatch_batches over VisionTask.two_view_stream, and mixmatch_step with plain SGD."""
    preset, generator = DATASETS[setting.workload.dataset], torch.Generator().manual_seed(0)
    pipeline = DevicePipeline(preset.mean, preset.std, preset.crop_and_flip, device, uses_channels_last("auto", device))
    # the attributes VisionTask.two_view_stream reads, and that method: PesSemi's streams without a whole
    # VisionTask (which reads a real dataset's files); PesSemi.mixmatch_batches reads only self.task
    images = images_to_device(setting.images, device)
    task = SimpleNamespace(pipeline=pipeline, generator=generator, train_images=images,
                           train_labels=torch.from_numpy(setting.labels).to(device))
    task.two_view_stream = partial(VisionTask.two_view_stream, task)
    labelled, unlabelled = (torch.from_numpy(part).to(device) for part in (setting.labelled, setting.unlabelled))
    batches = partial(PesSemi.mixmatch_batches, SimpleNamespace(task=task), labelled, setting.labelled_batch,
                      unlabelled, setting.unlabelled_batch, setting.steps_per_epoch)
    options = PesSemiOptions()
    step = mixmatch_step(model, make_sgd(model.parameters(), LR, WEIGHT_DECAY, "plain"), setting.class_weights,
                         setting.ramp, options.alpha, options.T, generator, amp=False)
    return Line(batches, step, model)


def baseline_line(setting: Setting, model: nn.Module, workers: int, device: torch.device) -> Line:
    """Their update_trainloader's two DataLoaders, MixMatch_train's loop and step, torch's SGD."""
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than CPUs
    transform = official_transform(DATASETS[setting.workload.dataset])
    labelled = TwoViewDataset(setting.images[setting.labelled], setting.labels[setting.labelled], transform)
    unlabelled = TwoViewDataset(setting.images[setting.unlabelled], None, transform)
    loaders = [DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                          pin_memory=device.type == "cuda", drop_last=True)
               for dataset, batch in ((labelled, setting.labelled_batch), (unlabelled, setting.unlabelled_batch))]
    options = PesSemiOptions()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=WEIGHT_DECAY)
    step = official_step(model, optimizer, setting.class_weights, setting.ramp, options.alpha, options.T, device)
    return Line(partial(official_batches, *loaders, setting.steps_per_epoch), step, model)


def epoch_seconds(line: Line, limit: int, steps_per_epoch: int, device: torch.device) -> float:
    """Seconds for one epoch of the line's steps through run_steps (train mode, as their net.train());
    extrapolated from the first `limit` steps when fewer."""
    source, stamps = line.batches(), []
    batches = itertools.islice(source, limit)
    if limit < steps_per_epoch:  # stamps (and their syncs) only where the estimate needs them
        batches = stamped(batches, device, stamps)
    synchronize(device)
    start = time.perf_counter()
    run_steps(batches, line.step, [line.model])
    synchronize(device)
    end = time.perf_counter()
    source.close()  # the baseline's DataLoader workers shut down here, outside the timing
    if not stamps:
        return end - start
    return (stamps[0] - start) + (stamps[-1] - stamps[0]) * (steps_per_epoch - 1) / (len(stamps) - 1)


def measure(setting: Setting, args: argparse.Namespace, device: torch.device) -> tuple[dict[str, list[float]], int]:
    """Per-repeat epoch seconds of both lines, and how many steps each measurement timed."""
    num_classes = DATASETS[setting.workload.dataset].num_classes
    torch.manual_seed(0)  # ours placed as VisionTask.new_model places it; the baseline's from the same weights
    ours = place_network(build_model(setting.workload.network, num_classes), device,
                         uses_channels_last("auto", device), "off")  # "auto": main.py's default
    baseline = build_model(setting.workload.network, num_classes)
    baseline.load_state_dict(ours.state_dict())
    baseline.to(device)
    lines = {"ours": our_line(setting, ours, device),
             f"baseline ({args.workers} workers)": baseline_line(setting, baseline, args.workers, device)}
    for line in lines.values():  # one untimed step each: kernels, allocator, the workers' first start
        epoch_seconds(line, 1, 1, device)
    steps = setting.steps_per_epoch
    limit = min(args.steps or (4 if device.type == "cpu" else steps), steps)
    return alternating(args.repeats, {name: partial(epoch_seconds, line, limit, steps, device)
                                      for name, line in lines.items()}), limit


def print_table(setting: Setting, seconds: dict[str, list[float]], limit: int) -> None:
    workload, steps = setting.workload, setting.steps_per_epoch
    print(f"\n{workload.title}: {workload.num_images} random {workload.dataset}-shaped images "
          f"({len(setting.labelled)} labelled, {len(setting.unlabelled)} unlabelled), batch {BATCH_SIZE} = "
          f"{setting.labelled_batch} + {setting.unlabelled_batch}, {steps} steps per epoch, "
          f"{f'extrapolated from {limit} steps' if limit < steps else 'whole epoch'}")
    print(f"  {'line':<24}{'epoch (s)':>12}{'steps/s':>10}")
    for name, times in seconds.items():
        print(f"  {name:<24}{statistics.median(times):12.1f}{steps / statistics.median(times):10.2f}")
    baseline = next(name for name in seconds if name != "ours")
    ratios = ", ".join(f"{b / o:.2f}" for b, o in zip(seconds[baseline], seconds["ours"]))
    print(f"  speed-up ours vs {baseline}: x{median_ratio(seconds[baseline], seconds['ours']):.2f} "
          f"(per repeat: {ratios})")


def main() -> None:
    args = parse_args()
    if args.quick:
        args.repeats, args.steps = args.repeats or 1, args.steps or 2
    args.repeats = args.repeats or 3
    if args.steps == 1 or args.steps < 0:
        sys.exit("--steps must be 0 (the default) or at least 2: the first step (start-up included) is timed "
                 "apart from the rest")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    print(f"PES-semi MixMatch epoch; device {device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} "
          f"CPUs, torch {torch.__version__}; {args.repeats} repeat(s), medians shown")
    setting = synthetic_setting(WORKLOADS[args.workload], device)
    print_table(setting, *measure(setting, args, device))


if __name__ == "__main__":
    main()
