"""Me-Momentum on MNIST, CIFAR-10/100 and the bundled digits (Bai & Liu, ICCV 2021).

    python main.py --dataset cifar10 --noise_type symmetric --noise_rate 0.2

Parses the flags (official names and defaults, see utils/train_config.py), makes the noisy
labels and the split, and runs the loop of utils/memomentum.py. Exit codes: 0 done, 2 bad
input, 3 non-finite loss, 75 preempted (resume with --resume auto).
"""
from __future__ import annotations

import random
import sys
from typing import Any, Sequence

import numpy as np
import torch

from data.noisy_dataset import NoisyDataset
from utils.run.config import config_to_dict, format_config, parse_config
from utils.engine import select_device
from utils.errors import UserError, report
from utils.vision_task import VisionTask, load_dataset, save_noisy_labels
from utils.memomentum import LoopState, MeMomentumRun
from utils.run.preemption import (NON_FINITE_EXIT_CODE, PREEMPTED_EXIT_CODE, NonFiniteLoss, Preempted,
                              StopFlag)
from utils.run.progress import progress_enabled
from utils.run.provenance import describe_device, git_commit, versions
from utils.run.resume import load_compatible_checkpoint, resume_path
from utils.run.files import RunFiles, append_results_log
from utils.train_config import RESUME_NEUTRAL_FIELDS, TrainConfig

DESCRIPTION = "Me-Momentum: extracting hard confident examples from noisily labeled data."
TITLES = {"memomentum": "Me-Momentum", "ce": "Standard (CE)"}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch once, as the official code does (model initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def describe_noise(dataset: NoisyDataset, config: TrainConfig) -> str:
    return (f"{config.dataset}: {len(dataset.noisy_labels)} training examples "
            f"({len(dataset.train_index)} train / {len(dataset.val_index)} validation), "
            f"{len(dataset.vision.test_labels)} test; {config.noise_type} noise {config.noise_rate}: "
            f"realised rate {dataset.actual_rate:.4f}")


def build_result(config: TrainConfig, state: LoopState, run: MeMomentumRun, dataset: NoisyDataset,
                 device: torch.device) -> dict[str, Any]:
    return {
        "method": config.method, "dataset": config.dataset, "noise_type": config.noise_type,
        "noise_rate": config.noise_rate, "seed": config.seed,
        "best_val_acc": state.best_val, "test_acc": state.reported_test,
        "actual_noise_rate": dataset.actual_rate, "rounds": state.rounds, "epochs": state.epochs_run,
        "wall_time_s": round(run.elapsed_s(), 2), "device": describe_device(device),
        "git_commit": git_commit(), "versions": versions(), "config": config_to_dict(config),
    }


def train(config: TrainConfig, dataset: NoisyDataset) -> int:
    files = RunFiles(config.run_dir)
    if config.resume == "auto" and files.result.exists():
        print(f"{files.result} exists: this run has finished (delete the folder to run it again)")
        return 0
    if not config.resume and (files.checkpoint.exists() or files.result.exists()):
        raise UserError(f"{files.run_dir} already holds a run; pass --resume auto to continue (or "
                        f"skip) it, or choose another --output_dir, or delete the folder")
    checkpoint_path = resume_path(config.resume, files.checkpoint)
    checkpoint = None
    if checkpoint_path is not None:
        checkpoint = load_compatible_checkpoint(checkpoint_path, config_to_dict(config),
                                                RESUME_NEUTRAL_FIELDS)
    device = select_device(config.device)
    print(f"device: {describe_device(device)}; run folder: {files.run_dir}")
    files.create()
    files.write_config(config_to_dict(config))
    stop_flag = StopFlag().install()
    experiment = VisionTask(config, dataset, device, should_stop=stop_flag,
                            show_progress=progress_enabled(config.no_progress))
    scalar_log = None
    if config.tensorboard:
        from utils.run.tensorboard import ScalarLog
        scalar_log = ScalarLog(files.run_dir / "tensorboard", enabled=True)
    run = MeMomentumRun(experiment, files, log=lambda line: print(line, flush=True), scalar_log=scalar_log)
    if checkpoint is not None:
        run.restore(checkpoint)
        print(f"resumed from {checkpoint_path}: outer {run.state.outer}, round {run.state.inner}, "
              f"epoch {run.state.epoch}")
    else:
        files.truncate_metrics(0)
    try:
        state = run.run()
    finally:
        if scalar_log is not None:
            scalar_log.close()
    result = build_result(config, state, run, dataset, device)
    files.write_result(result)
    append_results_log(TITLES[config.method], repr(config), config.seed, state.reported_test)
    print(f"{TITLES[config.method]}: best validation accuracy {state.best_val:.2f}, "
          f"test accuracy {state.reported_test:.2f} ({result['wall_time_s']:.0f}s); results in {files.result}")
    return 0


def run_main(config: TrainConfig) -> int:
    print("configuration:\n" + format_config(config), flush=True)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    dataset = load_dataset(config)
    print(describe_noise(dataset, config), flush=True)
    if config.save_noisy_labels:
        print(f"noisy labels written to {save_noisy_labels(config.save_noisy_labels, dataset, config)}")
    if config.noise_only:
        return 0
    return train(config, dataset)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run_main(parse_config(TrainConfig, argv, DESCRIPTION, prog="main.py"))
    except UserError as error:
        return report(error)
    except NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr)
        return NON_FINITE_EXIT_CODE
    except Preempted as error:
        print(f"preempted: {error}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
