"""Make one file unreadable for a test, as a file without read permission is."""
from __future__ import annotations

from pathlib import Path

import pytest


def deny_reading(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Opening `target` raises PermissionError. chmod alone cannot do it when tests run as root,
    so the readers' one way of opening a file (Path.open) is made to fail for that path too."""
    target.chmod(0)
    real_open = Path.open

    def open_unless_denied(self: Path, *args, **kwargs):
        if self.resolve() == target.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_unless_denied)
