"""Time training with compiled networks (utils/engine.compile_network) against eager ones, and
count compilations.

    python bench/bench_compile.py [--device auto|cpu|cuda] [--modes default,reduce-overhead]
                                  [--parts ab] [--lenet_batches N] [--resnet_steps N] [--repeats N]

Two workloads, batch 128, each network as main.py builds it (channels-last on the CPU, fused SGD):
(a) LeNet on MNIST-sized data (54,000 images: the real MNIST training images when found, random
    ones otherwise), an epoch of 422 batches; on the CPU only --lenet_batches are timed and the
    epoch is extrapolated (mean step × 422).
(b) ResNet-18, one training step on 32×32 CIFAR-sized images (crop + flip as in training).
Batches are prepared beforehand by the device pipeline, so the times are the network's forward,
backward and SGD step.

For each compile mode, in the order a Me-Momentum run meets them: the first training step
(its time minus a steady step is the compile time), the smaller last batch of an epoch, the first
evaluation pass (eval mode, inference_mode), then a fresh network of the same class (a later
round) trained one step and evaluated. "graphs" is how many graphs torch.compile built at each of
these (0 for the fresh network: the compiled code is reused). Each mode starts from an empty
compile cache (as in a run of its own); its steady step time is then measured back to back with
eager's, alternating the order between repeats; "speed-up" is the median of the per-repeat ratios
eager / compiled (> 1: compiled faster), eager's time the median over all modes' repeats. Compile times depend on
inductor's on-disk cache (a second run of this script reads it); --fresh_cache measures a cold start.
The same cache holds dynamo's record that the batch size varies (automatic_dynamic_local_pgo): once
a process has met the smaller last batch, later processes, and later modes of this one, compile the
first step for any batch size, so the last batch costs no graph of its own (2 graphs instead of 3).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.device_pipeline import DevicePipeline, images_to_device  # noqa: E402
from data.datasets import DATASETS  # noqa: E402
from data.datasets import load_vision_data  # noqa: E402
from data.vision import missing_files  # noqa: E402
from models import build_model  # noqa: E402
from tests.formats import random_vision_arrays  # noqa: E402
from utils.engine import (COMPILE_MODES, compile_network, compiled_graph_count, make_sgd,  # noqa: E402
                          predict_logits, select_device, synchronize, train_one_epoch, uses_channels_last)

BATCH_SIZE = 128
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Workload:
    title: str
    dataset: str         # key of data/datasets.py: network, normalisation, augmentation
    num_train: int       # as with the default --data_percent (90 %)
    step_unit: str       # what the table reports: a whole epoch or one step


WORKLOADS = {"a": Workload("LeNet / MNIST", "mnist", 54_000, "epoch"),
             "b": Workload("ResNet-18 / CIFAR-10", "cifar10", 45_000, "step")}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1 ...")
    parser.add_argument("--modes", default="default",
                        help=f"comma-separated compile modes to compare with eager, from {COMPILE_MODES[1:]}")
    parser.add_argument("--parts", default="ab", help="which workloads: a (LeNet/MNIST epoch), b (ResNet-18 step)")
    parser.add_argument("--lenet_batches", type=int, default=0,
                        help="LeNet batches timed per repeat (0: 40 on the CPU, the whole epoch elsewhere)")
    parser.add_argument("--resnet_steps", type=int, default=0,
                        help="ResNet-18 steps timed per repeat (0: 3 on the CPU, 50 elsewhere)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of the steady timings")
    parser.add_argument("--short_firsts", action="store_true",
                        help="time only the first training step and a fresh network's step (skips the "
                             "last-batch and evaluation compilations)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--data_path", default="/work/shared/data",
                        help="folder with MNIST/raw; random images of the same shape otherwise")
    parser.add_argument("--fresh_cache", action="store_true",
                        help="compile into an empty inductor cache (cold-start compile times)")
    return parser.parse_args()


def prepared_batches(workload: Workload, count: int, data_path: str,
                     device: torch.device, channels_last: bool) -> tuple[list[Batch], Batch, str]:
    """`count` full training batches and the epoch's smaller last batch, made by the device pipeline."""
    preset = DATASETS[workload.dataset]
    needed = min(workload.num_train, count * BATCH_SIZE)
    if workload.dataset == "mnist" and not missing_files("mnist", data_path):
        vision = load_vision_data("mnist", data_path)
        images, labels, source = vision.train_images, vision.train_labels, f"MNIST from {data_path}"
    else:
        images, labels, _, _ = random_vision_arrays(workload.dataset, needed, 1, seed=0)
        source = f"random {workload.dataset}-shaped images"
    images = images_to_device(images[:needed], device)
    labels = torch.from_numpy(labels[:needed]).long().to(device)
    pipeline = DevicePipeline(preset.mean, preset.std, preset.crop_and_flip, device, channels_last)
    draws = pipeline.draw_epoch(needed, torch.Generator().manual_seed(0), shuffle=True, augment=True)
    batches = [(batch, batch_labels) for batch, batch_labels, _ in
               pipeline.batches(images, labels, BATCH_SIZE, draws)]
    last_size = workload.num_train % BATCH_SIZE or BATCH_SIZE
    last = (batches[0][0][:last_size].clone(), batches[0][1][:last_size].clone())
    return batches[:count], last, source


def new_network(workload: Workload, device: torch.device, channels_last: bool, mode: str,
                seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(DATASETS[workload.dataset].network, DATASETS[workload.dataset].num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = compile_network(model, mode)
    return model, make_sgd(model.parameters(), lr=0.01, weight_decay=1e-4)


def timed(device: torch.device, function, *args) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = function(*args)
    synchronize(device)
    return time.perf_counter() - start, result


@dataclass
class FirstCalls:
    """One mode's first encounters: seconds and new graphs each, and the fresh network's results."""

    events: dict[str, tuple[float, int]]
    fresh_parameters: list[torch.Tensor]  # after one step from the same initialisation in every mode
    fresh_logits: torch.Tensor | None


def first_calls(workload: Workload, mode: str, batches: list[Batch], last: Batch, device: torch.device,
                channels_last: bool, short: bool) -> tuple[tuple[nn.Module, torch.optim.Optimizer], FirstCalls]:
    """Seconds and new graphs for each first encounter of a run, in a run's order."""
    events: dict[str, tuple[float, int]] = {}

    def record(name: str, function, *args):
        graphs = compiled_graph_count()
        seconds, result = timed(device, function, *args)
        events[name] = (seconds, compiled_graph_count() - graphs)
        return result

    model, optimizer = new_network(workload, device, channels_last, mode, seed=0)
    images = [images for images, _ in batches[:2]]
    record("first training step", train_one_epoch, model, optimizer, batches[:1])
    record("second training step", train_one_epoch, model, optimizer, batches[1:2])
    if not short:
        record(f"last batch ({len(last[1])})", train_one_epoch, model, optimizer, [last])
        record("first evaluation", predict_logits, model, images)
    fresh, fresh_optimizer = new_network(workload, device, channels_last, mode, seed=1)
    record("fresh network: step", train_one_epoch, fresh, fresh_optimizer, batches[:1])
    logits = None if short else record("fresh network: evaluation", predict_logits, fresh, images)
    return (model, optimizer), FirstCalls(events, [p.detach().clone() for p in fresh.parameters()], logits)


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def measure_workload(workload: Workload, args: argparse.Namespace, device: torch.device, modes: list[str]) -> None:
    on_cpu = device.type == "cpu"
    num_batches = -(-workload.num_train // BATCH_SIZE)
    if workload.step_unit == "epoch":
        count = args.lenet_batches or (40 if on_cpu else num_batches)
    else:
        count = args.resnet_steps or (3 if on_cpu else 50)
    channels_last = uses_channels_last("auto", device)  # main.py's default
    batches, last, source = prepared_batches(workload, max(count, 2), args.data_path, device, channels_last)
    eager, eager_firsts = first_calls(workload, "off", batches, last, device, channels_last, args.short_firsts)
    firsts = {"off": eager_firsts}
    steady: dict[str, list[float]] = {"off": []}
    ratios: dict[str, list[float]] = {"off": [1.0]}
    for mode in modes:
        # Forget earlier modes' graphs and the shapes they saw (automatic dynamic shapes are
        # remembered per code object across modes): each mode compiles as in a run of its own.
        torch._dynamo.reset()
        compiled, firsts[mode] = first_calls(workload, mode, batches, last, device, channels_last,
                                             args.short_firsts)
        steady[mode], ratios[mode] = [], []
        for repeat in range(args.repeats):
            pair = {"off": eager, mode: compiled}
            for name in (list(pair) if repeat % 2 == 0 else list(reversed(pair))):
                model, optimizer = pair[name]
                steady[name].append(timed(device, train_one_epoch, model, optimizer, batches[:count])[0] / count)
            ratios[mode].append(steady["off"][-1] / steady[mode][-1])

    scale, unit = (num_batches, "epoch") if workload.step_unit == "epoch" else (1, "step")
    timed_how = f"{count} steps per repeat, {args.repeats} repeats"
    if unit == "epoch" and count < num_batches:
        timed_how += f"; epoch extrapolated as mean step × {num_batches}"
    print(f"\n{workload.title}: batch {BATCH_SIZE}, {source}, {'channels-last, ' if channels_last else ''}"
          f"{timed_how}")
    print(f"  {'mode':<18}{unit + ' (s)':>11}{'speed-up':>10}   first calls: seconds (new graphs)")
    for mode, times in steady.items():
        ratio = statistics.median(ratios[mode])
        print(f"  {mode:<18}{statistics.median(times) * scale:11.3f}{ratio:10.2f}")
        events = firsts[mode].events
        for name, (seconds, graphs) in events.items():
            print(f"      {name:<30}{seconds:9.2f} s ({graphs})")
        if mode != "off":
            compiling = [seconds for seconds, graphs in events.values() if graphs]
            fresh_graphs = sum(graphs for name, (_, graphs) in events.items() if name.startswith("fresh"))
            print(f"      compile time: {events['first training step'][0] - statistics.median(times):.1f} s "
                  f"in the first step; {sum(compiling):.1f} s for the {len(compiling)} calls that compiled "
                  f"(running them included); fresh network: {fresh_graphs} new graphs")
            differences = f"parameters {max_difference(firsts[mode].fresh_parameters, firsts['off'].fresh_parameters):.1e}"
            if firsts[mode].fresh_logits is not None:
                differences += (f", evaluation logits "
                                f"{max_difference([firsts[mode].fresh_logits], [firsts['off'].fresh_logits]):.1e}")
            print(f"      fresh network vs eager after one step, max |difference|: {differences}")


def main() -> None:
    args = parse_args()
    if args.fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = [mode for mode in modes if mode not in COMPILE_MODES[1:]]
    if unknown:
        raise SystemExit(f"unknown compile modes {unknown}; choose from {COMPILE_MODES[1:]}")
    device = select_device(args.device)
    print(f"torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{torch.get_num_threads()} CPU threads; modes: off (eager), {', '.join(modes)}")
    for part in args.parts:
        measure_workload(WORKLOADS[part], args, device, modes)


if __name__ == "__main__":
    main()
