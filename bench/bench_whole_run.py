"""Whole runs as a user runs them, timed from process start to exit.

    python bench/bench_whole_run.py [--data_path ../shared/data] [--threads 2] [--repeats 3] [--parts ab]
    python bench/bench_whole_run.py --parts c --before COMMIT

(a) Five MNIST epochs as a whole process: `main.py --dataset mnist --method ce --n_epoch 5` (start-up,
    reading MNIST, noise, split, five epochs each with validation, the test passes, checkpoints,
    result files) against an official-style process doing the same work the way the official code
    does it: a Dataset of PIL images through torchvision transforms, DataLoaders with 8 workers for
    training, validation (through the training transform, as officially) and test, the official
    LeNet (ReLU before pooling) with torch's default SGD kernels, per-batch top-1/top-5 accuracy and
    `loss.item()`, the test set evaluated when validation improves, the model saved each time.
    The baseline reads MNIST, makes the noise and draws the split with this project's functions
    (faster than the official code's), so the ratio is if anything in the baseline's favour.
    Each repeat runs both processes back to back, alternating which goes first; the table shows
    median times and the median of the per-repeat ratios.
(b) The README's quick-start run, `main.py --dataset digits --noise_type instance --noise_rate 0.4`
    (official defaults), timed as a whole process.
(c) Part (a)'s run of this checkout against the same run of an earlier commit's code (`--before`,
    taken from git history into a temporary folder): what a change of structure costs, as the median
    of the per-repeat ratios (earlier / now: above 1 is faster now).

On a shared machine absolute times swing; ratios measured in one run of this script are what counts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", default=str(REPO.parent / "shared" / "data"),
                        help="folder holding MNIST/raw (torchvision's layout)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every process (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each part")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of part (a)")
    parser.add_argument("--parts", default="ab", help="which parts to run: any of a, b, c")
    parser.add_argument("--before", metavar="COMMIT", help="part (c): the earlier commit to compare with")
    parser.add_argument("--official_style", metavar="OUT", help=argparse.SUPPRESS)  # the baseline process
    return parser.parse_args(argv)


def timed(command: list[str], cwd: Path) -> float:
    """Seconds from starting `command` to its exit (which must be 0)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def mnist_ce_command(main_py: Path, args: argparse.Namespace, scratch: str) -> list[str]:
    """Part (a)'s run: five MNIST epochs of CE as a user runs them."""
    return [sys.executable, str(main_py), "--dataset", "mnist", "--data_path", args.data_path, "--method", "ce",
            "--n_epoch", str(args.epochs), "--output_dir", f"{scratch}/run", "--model_dir", f"{scratch}/model",
            "--no_progress", "--num_threads", str(args.threads)]


def time_alternately(commands: Callable[[str], dict[str, list[str]]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each of two commands (made for a scratch folder), run back to back `repeats` times,
    which one goes first alternating; each repeat is printed."""
    times: dict[str, list[float]] = {}
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench_whole_") as scratch:
            order = list(commands(scratch).items())
            for name, command in order if repeat % 2 == 0 else order[::-1]:
                times.setdefault(name, []).append(timed(command, Path(scratch)))
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{name} {seconds[-1]:.1f}s" for name, seconds in times.items()),
              flush=True)
    return times


def part_a(args: argparse.Namespace) -> None:
    times = time_alternately(lambda scratch: {
        "ours": mnist_ce_command(REPO / "main.py", args, scratch),
        "official-style": [sys.executable, __file__, "--data_path", args.data_path, "--epochs", str(args.epochs),
                           "--threads", str(args.threads), "--official_style", scratch]}, args.repeats)
    ours_s, official_s = times["ours"], times["official-style"]
    ratios = [official / ours for official, ours in zip(official_s, ours_s)]
    print(f"(a) {args.epochs} MNIST epochs as a whole process (CE, symmetric 20 %, seed 1): ours "
          f"{statistics.median(ours_s):.1f}s, official-style {statistics.median(official_s):.1f}s, "
          f"speed-up {statistics.median(ratios):.2f}x (per repeat {', '.join(f'{r:.2f}' for r in ratios)})")


def part_c(args: argparse.Namespace) -> None:
    if not args.before:
        raise SystemExit("part (c) needs --before COMMIT")
    with tempfile.TemporaryDirectory(prefix="bench_before_") as code:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", args.before],
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", code], input=archive.stdout, check=True)
        times = time_alternately(lambda scratch: {
            "now": mnist_ce_command(REPO / "main.py", args, scratch + "/now"),
            args.before: mnist_ce_command(Path(code) / "main.py", args, scratch + "/before")}, args.repeats)
    now_s, before_s = times["now"], times[args.before]
    ratios = [before / now for before, now in zip(before_s, now_s)]
    print(f"(c) {args.epochs} MNIST epochs as a whole process (CE): now {statistics.median(now_s):.1f}s, "
          f"{args.before} {statistics.median(before_s):.1f}s, ratio {statistics.median(ratios):.3f} "
          f"(per repeat {', '.join(f'{r:.3f}' for r in ratios)})")


def part_b(args: argparse.Namespace) -> None:
    seconds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench_whole_") as scratch:
            command = [sys.executable, str(REPO / "main.py"), "--dataset", "digits", "--noise_type", "instance",
                       "--noise_rate", "0.4", "--no_progress"]
            if args.threads:
                command += ["--num_threads", str(args.threads)]
            seconds.append(timed(command, Path(scratch)))
        print(f"  digits run: {seconds[-1]:.1f}s", flush=True)
    print(f"(b) the quick-start digits run as a whole process: median {statistics.median(seconds):.1f}s "
          f"(runs: {', '.join(f'{s:.1f}' for s in seconds)})")


def official_style_run(args: argparse.Namespace) -> None:
    """The baseline process of part (a): the official code's way of doing main.py's work."""
    sys.path.insert(0, str(REPO))
    import torch
    from torch.utils.data import DataLoader

    from bench.bench_pipeline import OfficialLeNet, OfficialStyleDataset, official_train_epoch, official_transform
    from data.noise import make_noisy_labels
    from data.datasets import DATASETS
    from data.split import train_val_split
    from data.datasets import load_vision_data

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    preset = DATASETS["mnist"]
    vision = load_vision_data("mnist", args.data_path)
    noisy = make_noisy_labels(vision.train_labels, vision.train_images, "symmetric", 0.2, 10, 1).labels
    train_index, val_index = train_val_split(len(noisy), 0.9, 1)
    transform = official_transform(preset)
    loader = lambda images, labels, batch, shuffle: DataLoader(
        OfficialStyleDataset(images, labels, transform), batch_size=batch, shuffle=shuffle, num_workers=8)
    train = loader(vision.train_images[train_index], noisy[train_index], 128, True)
    val = loader(vision.train_images[val_index], noisy[val_index], 256, False)
    test = loader(vision.test_images, vision.test_labels, 256, False)
    model = OfficialLeNet(10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [40, 80], 0.1)
    best = 0.0
    for _ in range(args.epochs):
        official_train_epoch(model, optimizer, train)
        scheduler.step()
        val_acc = class_balanced(model, val, 10)
        if val_acc > best:
            best = val_acc
            per_batch_mean_accuracy(model, test)
            torch.save(model.state_dict(), Path(args.official_style) / "best.hdf5")


def predictions(model, loader):
    import torch

    model.eval()
    with torch.no_grad():
        for images, labels in loader:
            yield model(images).argmax(1), labels


def class_balanced(model, loader, classes: int) -> float:
    import torch

    from utils.metrics import class_balanced_accuracy

    predicted, labels = zip(*predictions(model, loader))
    return class_balanced_accuracy(torch.cat(predicted), torch.cat(labels), classes)


def per_batch_mean_accuracy(model, loader) -> float:
    accuracies = [100 * float((p == y).float().mean()) for p, y in predictions(model, loader)]
    return sum(accuracies) / len(accuracies)


def main() -> None:
    args = parse_args()
    if args.official_style:
        official_style_run(args)
        return
    print(f"{os.cpu_count()} CPUs, torch threads {args.threads or 'default'}, {args.repeats} repeat(s)", flush=True)
    if "a" in args.parts:
        part_a(args)
    if "b" in args.parts:
        part_b(args)
    if "c" in args.parts:
        part_c(args)


if __name__ == "__main__":
    main()
