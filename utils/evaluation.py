"""Scoring a finished main.py run's weights again on its own test set (evaluate.py; docs/outputs.md,
"Evaluating a saved model").

The run's config.json says which data, noise, split and network it used; the test set is rebuilt
from it and the weights scored with the run's own code path (VisionTask.test), so the figures equal
its result.json's on the same machine: `test_acc` and `test_acc_official` for the best model,
`test_acc_last` for the last one.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from utils.engine import select_device
from utils.errors import UserError
from utils.methods import METHODS
from utils.metrics import TestAccuracy
from utils.run.checkpoint import load_checkpoint
from utils.run.files import RunFiles
from utils.train_config import TrainConfig
from utils.vision_task import VisionTask, load_dataset

# What `--weights` names, and which figure of result.json scored the same model.
RESULT_FIELD = {"best": "test_acc", "last": "test_acc_last"}


def run_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of the main.py run in `run_dir`, with `overrides` (data paths, device)."""
    files = RunFiles(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; give a run folder of main.py (it holds config.json)")
    try:
        saved = json.loads(files.config.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run folder of main.py: it has no config.json") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{files.config} cannot be read as a run's configuration ({error})") from None
    if not isinstance(saved, dict) or "dataset" not in saved:
        raise UserError(f"{files.config} is not the configuration of a main.py run (Clothing.py runs are "
                        f"evaluated by their own test pass; evaluate.py reads main.py runs only)")
    known = {spec.name for spec in dataclasses.fields(TrainConfig)}
    values = {name: value for name, value in saved.items() if name in known}
    return TrainConfig(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


def saved_weights(run_dir: Path, which: str) -> dict[str, torch.Tensor]:
    """best.pt, the last epoch's network from checkpoint.pt, or any weight file of ours (a path)."""
    files = RunFiles(run_dir)
    if which == "last":
        saved = load_checkpoint(files.checkpoint)
        state = saved.get("method") if isinstance(saved.get("method"), dict) else saved  # format 4, or 3
        if isinstance(state.get("model"), dict):
            return state["model"]
        networks = state.get("networks")
        if isinstance(networks, list) and networks and isinstance(networks[0], dict):
            return networks[0]["model"]  # Co-teaching: the first network is the one it reports
        raise UserError(f"{files.checkpoint} holds no network of a last epoch")
    path = files.best if which == "best" else Path(which)
    weights = load_checkpoint(path)
    if not weights or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        raise UserError(f"{path} is not a weight file of ours (a state dict of one network)")
    return weights


def evaluate_run(run_dir: Path, which: str = "best", overrides: dict[str, Any] | None = None) -> TestAccuracy:
    """The test accuracy (exact and as the method's own code reports it) of the run's `which` weights."""
    config = run_config(run_dir, overrides or {})
    task = VisionTask(config, load_dataset(config), select_device(config.device))
    method = METHODS[config.method]
    network = method.network_name(config, task.name)  # PES's and PES-semi's networks are their authors'
    model = task.new_model(network)
    try:
        model.load_state_dict(saved_weights(run_dir, which))
    except RuntimeError as error:
        raise UserError(f"the weights do not fit this run's network ({network or config.network_name} for {config.dataset}): "
                        f"{str(error).splitlines()[0]}") from None
    # the method's own test: its "official" figure is measured as its authors' code measures it
    return method.loop_class()(task, None, method.title).test(model)


def recorded_figure(run_dir: Path, which: str) -> float | None:
    """What result.json says about the same model, when it says it."""
    try:
        result = json.loads(RunFiles(run_dir).result.read_text())
    except (OSError, ValueError):
        return None
    return result.get(RESULT_FIELD[which]) if isinstance(result, dict) and which in RESULT_FIELD else None
