"""Checkpoints: one dict of tensors and plain values, saved atomically, loadable with weights_only=True."""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.run.atomic import atomic_torch_save
from utils.errors import CheckpointError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` atomically: a kill or a full disk mid-save leaves the previous file intact."""
    return atomic_torch_save(path, state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint, turning a missing, truncated or foreign file into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}); delete it to start "
            f"over, or pass --resume with an intact checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a checkpoint dict")
    return state


def capture_rng_states(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random state a run draws from, in a weights_only-loadable form."""
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    for name, generator in (generators or {}).items():
        states[f"generator:{name}"] = generator.get_state()
    return states


def restore_rng_states(states: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(_as_tuple(states["python"]))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, generator in (generators or {}).items():
        generator.set_state(states[f"generator:{name}"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value
