"""What each entry point trains: from its configuration, the data, the task and the method's loop,
handed to the run driver (utils/run/driver.py) as `open_loop`.

    open_vision_loop     main.py: MNIST, CIFAR-10/100 or digits with their noisy labels and split
    open_clothing_loop   Clothing.py: Clothing1M from its index, on one process or under torchrun

Each opens its task (open_vision_task, open_clothing_task: the task interface, utils/task.py) and the
method's loop on it.
"""
from __future__ import annotations

from typing import Any

from utils.methods import METHODS
from utils.run.driver import Run
from data.noisy_dataset import NoisyDataset
from utils.errors import UserError
from utils.run.files import check_file_target
from utils.run.loop import Loop
from utils.train_config import TrainConfig
from utils.vision_task import VisionTask, describe_noise, load_dataset, save_noisy_labels


def open_vision_loop(run: Run) -> Loop | None:
    """The method's loop on main.py's task; None with --noise_only."""
    task = open_vision_task(run)
    if task is None:
        return None
    method = METHODS[run.config.method]
    return method.open_loop(task, run, method.title)


def open_vision_task(run: Run) -> VisionTask | None:
    """Read the dataset, make its noisy labels and split (and export them on request), then build the
    task; None with --noise_only."""
    config = run.config
    if config.save_noisy_labels:
        check_file_target(config.save_noisy_labels, "--save_noisy_labels")
    dataset = load_dataset(config)
    check_split(dataset, config)
    run.log(describe_noise(dataset, config))
    if config.save_noisy_labels:
        run.log(save_noisy_labels(config.save_noisy_labels, dataset, config))
    if not config.trains:
        return None
    return VisionTask(config, dataset, run.device, show_progress=run.show_progress)


def check_split(dataset: NoisyDataset, config: TrainConfig) -> None:
    """A split with nothing to train on, or nothing to validate on for a method that reports the model
    of its best validation accuracy, is refused before anything runs."""
    total = len(dataset.noisy_labels)
    if len(dataset.train_index) == 0:
        raise UserError(f"--data_percent {config.data_percent} leaves none of the {total} training examples to "
                        f"train on; use a larger share (official: 0.9)")
    if len(dataset.val_index) == 0 and METHODS[config.method].selects_on_validation:
        raise UserError(f"--data_percent {config.data_percent} leaves none of the {total} training examples for "
                        f"validation, on which --method {config.method} selects its reported model; use e.g. 0.9")


def open_clothing_loop(run: Run) -> Loop:
    """The method's loop on Clothing.py's task."""
    method = METHODS[run.config.method]
    return method.open_loop(open_clothing_task(run), run, f"Clothing1M {method.title}")


def open_clothing_task(run: Run) -> Any:
    """Read Clothing1M's index and build the task (and the process group's share)."""
    from utils.clothing_task import open_task  # here: main.py need not import the Clothing1M stack
    return open_task(run.config, run)
