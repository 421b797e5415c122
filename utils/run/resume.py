"""Which checkpoint a run resumes from (--resume), and whether it belongs to this configuration."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from utils.run.checkpoint import load_checkpoint
from utils.errors import CheckpointError


def resume_path(resume: str, default_checkpoint: Path) -> Path | None:
    """'' → start fresh; 'auto' → the run folder's checkpoint if there is one; else a path that must exist."""
    if not resume:
        return None
    if resume == "auto":
        return default_checkpoint if default_checkpoint.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file (use --resume auto to "
                              f"continue the run in --output_dir when it has one)")
    return path


def load_compatible_checkpoint(path: Path, current: dict[str, Any],
                               neutral_fields: Iterable[str]) -> dict[str, Any]:
    """Load `path`, refusing when its config differs from `current` in a field that changes results."""
    checkpoint = load_checkpoint(path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path} has no configuration; it was not written by this project")
    neutral = set(neutral_fields)
    differences = [f"--{name} (saved {saved.get(name)!r}, given {value!r})"
                   for name, value in current.items() if name not in neutral and saved.get(name) != value]
    if differences:
        raise CheckpointError(f"cannot resume from {path}: it was made with other settings: "
                              f"{'; '.join(differences)}. Use the same flags, or another --output_dir")
    return checkpoint
