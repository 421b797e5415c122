"""Opening the files a dataset is read from: a directory where a file should be, or a file the
user may not read, becomes one DatasetError that names the path (instead of "not found" or a
traceback). Each reader keeps its own message for a file that is simply missing.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from utils.errors import DatasetError


def refuse_directory(path: Path, expected: str, how_to_fix: str) -> None:
    """Raise when `path` is a directory; `expected` says what file belongs there."""
    if path.is_dir():
        raise DatasetError(f"{path} is a directory, expected a file ({expected}); "
                           f"move the directory away, then {how_to_fix}")


def permission_error(path: Path, expected: str, how_to_fix: str) -> DatasetError:
    """The error for a file that exists but may not be read by this user."""
    return DatasetError(f"{path}: permission denied, cannot read {expected}; give this user read "
                        f"access to it (chmod a+r), or {how_to_fix}")


def open_binary(path: Path, expected: str, how_to_fix: str) -> BinaryIO:
    """`path` opened for binary reading. FileNotFoundError still propagates, for the reader's own message."""
    refuse_directory(path, expected, how_to_fix)
    try:
        return path.open("rb")
    except IsADirectoryError as err:  # made a directory since the check
        raise DatasetError(f"{path} is a directory, expected a file ({expected}); {how_to_fix}") from err
    except PermissionError as err:
        raise permission_error(path, expected, how_to_fix) from err
