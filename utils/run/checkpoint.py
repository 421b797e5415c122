"""Checkpoints: one dict of tensors and plain values, saved atomically, loadable with weights_only=True;
which checkpoint a run resumes from (--resume), and whether it belongs to this configuration."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from utils.errors import CheckpointError
from utils.run.atomic import atomic_torch_save
from utils.run.config import RunConfig, config_defaults, config_to_dict

# The layout of the checkpoint dict (utils/run/driver.py, Run.checkpoint). 1: before the shared run
# lifecycle; 2: each loop's own dict; 3: the run driver's header plus the loop's entries, side by
# side in one dict; 4: in sections (checkpoint_of).
CHECKPOINT_FORMAT = 4
SECTIONS = ("header", "position", "method", "generators")


def checkpoint_of(header: dict[str, Any], position: dict[str, Any], method: dict[str, Any],
                  generators: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint in its sections, each a dict of its own, so that no key of one can shadow
    another's: the driver's header (configuration, processes, the data's fingerprint, how much of
    metrics.jsonl it has seen, time spent), the loop's position (its LoopState), the method's state
    (whatever its state_dict() returns) and the random generators' states."""
    return {"format": CHECKPOINT_FORMAT, "header": header, "position": position, "method": method,
            "generators": generators}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` atomically: a kill or a full disk mid-save leaves the previous file intact."""
    return atomic_torch_save(path, state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint, turning a missing, truncated or foreign file into one clear error."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise CheckpointError(f"checkpoint {path} cannot be read (permission denied)") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}); delete it to start "
            f"over, or pass --resume with an intact checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a checkpoint dict")
    return state


def resume_path(resume: str, default_checkpoint: Path) -> Path | None:
    """'' → start fresh; 'auto' → the run folder's checkpoint if there is one; else a path that must exist."""
    if not resume:
        return None
    if resume == "auto":
        return default_checkpoint if default_checkpoint.exists() else None
    path = Path(resume)
    if path.is_dir():
        raise CheckpointError(f"--resume {resume} is a directory; give the checkpoint file in it "
                              f"(checkpoint.pt), or --resume auto with --output_dir {resume}")
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file (use --resume auto to "
                              f"continue the run in --output_dir when it has one)")
    return path


def config_differences(saved: Any, config: RunConfig) -> list[str]:
    """The flags, other than the config's RESUME_NEUTRAL_FIELDS, whose saved value differs from `config`'s.

    A flag the saved configuration does not have (it was added later) counts as its default, which
    is what the code that wrote it did.
    """
    saved = saved if isinstance(saved, dict) else {}
    defaults = config_defaults(config)
    neutral = set(config.RESUME_NEUTRAL_FIELDS)
    differences = []
    for name, value in config_to_dict(config).items():
        before = saved.get(name, defaults.get(name))
        if name not in neutral and before != value:
            differences.append(f"--{name} (saved {before!r}, given {value!r})")
    return differences


def load_compatible_checkpoint(path: Path, config: RunConfig) -> dict[str, Any]:
    """Load `path`, refusing when its config differs from `config` in a field that changes results."""
    checkpoint = load_checkpoint(path)
    header = checkpoint.get("header")
    if not isinstance(checkpoint.get("config"), dict) and not (isinstance(header, dict)
                                                               and isinstance(header.get("config"), dict)):
        raise CheckpointError(f"checkpoint {path} has no configuration; it was not written by this project")
    require_format(checkpoint, path, CHECKPOINT_FORMAT)
    differences = config_differences(header["config"], config)
    if differences:
        raise CheckpointError(f"cannot resume from {path}: it was made with other settings: "
                              f"{'; '.join(differences)}. Use the same flags, or another --output_dir")
    require_header(checkpoint, path)
    return checkpoint


# The driver's header entries (utils/run/driver.py, Run.checkpoint) and their types; the method's
# own entries are checked as its loop reads them.
HEADER_TYPES = {"world_size": int, "elapsed_s": (int, float), "metrics_size": int}


def require_header(checkpoint: dict[str, Any], path: Path) -> None:
    """A section or header entry missing or of another type (a damaged or hand-edited file) is one line."""
    require_format(checkpoint, path, CHECKPOINT_FORMAT)
    for name in SECTIONS:
        section = checkpoint.get(name)
        if not isinstance(section, dict):
            found = "missing" if name not in checkpoint else repr(section) if isinstance(section, (int, float)) \
                else f"a {type(section).__name__}"
            raise CheckpointError(f"checkpoint {path} is damaged: its section {name!r} is {found}; start the run "
                                  f"again in another --output_dir")
    header = checkpoint["header"]
    for name, kind in HEADER_TYPES.items():
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, int) and value < 0):
            found = ("missing" if name not in header else repr(value) if isinstance(value, (int, float))
                     else f"a {type(value).__name__}")
            raise CheckpointError(f"checkpoint {path} is damaged: its entry {name!r} is {found}; start the run "
                                  f"again in another --output_dir")
    rng = checkpoint["generators"]
    if not isinstance(rng.get("torch"), torch.Tensor) or any(
            key.startswith(GENERATOR_PREFIX) and not isinstance(state, torch.Tensor) for key, state in rng.items()):
        raise CheckpointError(f"checkpoint {path} is damaged: its random-generator states are not tensors; start "
                              f"the run again in another --output_dir")


def require_format(checkpoint: dict[str, Any], path: Path | None, expected: int) -> None:
    """A checkpoint of another layout (an older version of this code) is refused in one line."""
    found = checkpoint.get("format", 1)
    if found != expected:
        raise CheckpointError(f"checkpoint {path} has checkpoint format {found}, this code reads format {expected} "
                              f"(it was written by another version); finish that run with the version that "
                              f"started it, or start it again in another --output_dir")


GENERATOR_PREFIX = "generator:"  # the task's own generators, beside torch's global ones


def capture_rng_states(generators: dict[str, Any]) -> dict[str, Any]:
    """torch's global generators (network initialisation) and the task's own `generators` (name →
    state): everything a run draws from.

    Nothing in this project draws from python's or numpy's global generators (every draw takes a
    seed or a private generator), so they are neither seeded nor saved.
    """
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **{GENERATOR_PREFIX + name: state for name, state in generators.items()}}


def restore_rng_states(states: dict[str, Any]) -> dict[str, Any]:
    """Set torch's global generators; returns the task's generator states (name → state)."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    return {key.removeprefix(GENERATOR_PREFIX): state for key, state in states.items()
            if key.startswith(GENERATOR_PREFIX)}
