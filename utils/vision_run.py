"""main.py's run, start to end: configuration → noisy data → run lifecycle → the loop → result.json.

Every step that is the same for Clothing.py (start or resume, refusing to overwrite, skipping a
finished run, checkpoints, result files, exit codes) is in utils/run/lifecycle.py; the loop itself
is utils/memomentum.py.
"""
from __future__ import annotations

from typing import Any

import torch

from data.noisy_dataset import NoisyDataset
from data.presets import HUMAN_NOISE_TYPES
from utils.engine import select_device
from utils.methods import METHOD_TITLES
from utils.memomentum import LoopState, MeMomentumRun
from utils.run.config import config_to_dict, format_config
from utils.run.files import RunFiles, check_file_target
from utils.run.lifecycle import Checkpointer, RunStart, finish_run, open_run_folder, start_run
from utils.run.preemption import StopFlag
from utils.run.progress import progress_enabled
from utils.run.provenance import describe_device, git_commit, versions
from utils.train_config import TrainConfig
from utils.vision_task import VisionTask, load_dataset, save_noisy_labels


def run_vision(config: TrainConfig) -> int:
    print("configuration:\n" + format_config(config), flush=True)
    device = select_device(config.device)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    files = RunFiles(config.run_dir)
    if config.save_noisy_labels:
        check_file_target(config.save_noisy_labels, "--save_noisy_labels")
    start = None if config.noise_only else start_run(config, files)
    if start is not None and start.finished:
        print(f"{files.result} exists: this run has finished (delete the folder to run it again)")
        return 0
    torch.manual_seed(config.seed)  # network initialisation, as the official code seeds it
    dataset = load_dataset(config)
    print(describe_noise(dataset, config), flush=True)
    if config.save_noisy_labels:
        print(f"noisy labels written to {save_noisy_labels(config.save_noisy_labels, dataset, config)}")
    if start is None:
        return 0
    state, run = train(config, dataset, device, files, start)
    result = build_result(config, state, run, dataset, device)
    title = METHOD_TITLES[config.method]
    finish_run(config, files, result, title)
    print(f"{title}: best validation accuracy {state.best_val_acc:.2f}, test accuracy {state.test_acc:.2f} "
          f"(last epoch {format_percent(state.test_acc_last)}; {result['wall_time_s']:.0f}s); results in "
          f"{files.result}")
    return 0


def train(config: TrainConfig, dataset: NoisyDataset, device: torch.device, files: RunFiles,
          start: RunStart) -> tuple[LoopState, MeMomentumRun]:
    print(f"device: {describe_device(device)}; run folder: {files.run_dir}")
    open_run_folder(config, files, start)
    stop_flag = StopFlag().install()
    task = VisionTask(config, dataset, device, should_stop=stop_flag,
                      show_progress=progress_enabled(config.no_progress))
    scalar_log = None
    if config.tensorboard:
        from utils.run.tensorboard import ScalarLog  # lazy: pulls in tensorboard
        scalar_log = ScalarLog(files.run_dir / "tensorboard")
    run = MeMomentumRun(task, files, Checkpointer(files.checkpoint, config.checkpoint_every),
                        log=lambda line: print(line, flush=True), scalar_log=scalar_log)
    if start.checkpoint is not None:
        run.restore(start.checkpoint)
        print(f"resumed from {start.checkpoint_path}: outer {run.state.outer}, round {run.state.inner}, "
              f"epoch {run.state.epoch}")
    try:
        return run.run(), run
    finally:
        if scalar_log is not None:
            scalar_log.close()


def describe_noise(dataset: NoisyDataset, config: TrainConfig) -> str:
    # CIFAR-N labels are people's: --noise_rate plays no part, so it is not printed
    rate = "" if config.noise_type in HUMAN_NOISE_TYPES.get(config.dataset, ()) else f" {config.noise_rate}"
    return (f"{config.dataset}: {len(dataset.noisy_labels)} training examples "
            f"({len(dataset.train_index)} train / {len(dataset.val_index)} validation), "
            f"{len(dataset.vision.test_labels)} test; {config.noise_type} noise{rate}: "
            f"realised rate {dataset.actual_rate:.4f}")


def build_result(config: TrainConfig, state: LoopState, run: MeMomentumRun, dataset: NoisyDataset,
                 device: torch.device) -> dict[str, Any]:
    return {
        "method": config.method, "dataset": config.dataset, "noise_type": config.noise_type,
        "noise_rate": config.noise_rate, "seed": config.seed, "best_val_acc": state.best_val_acc, "test_acc": state.test_acc,
        "test_acc_official": state.test_acc_official, "test_acc_last": state.test_acc_last,
        "best_at": state.best_at,
        "actual_noise_rate": dataset.actual_rate, "rounds": state.rounds, "epochs": state.epochs_run,
        "wall_time_s": round(run.elapsed_s(), 2), "device": describe_device(device),
        "git_commit": git_commit(), "versions": versions(), "config": config_to_dict(config),
    }


def format_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
