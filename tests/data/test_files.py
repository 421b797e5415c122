"""Tests for data/files.py: a directory or an unreadable file where a data file belongs."""
from __future__ import annotations

from pathlib import Path

import pytest

from data.files import open_binary, refuse_directory
from tests.data.permissions import deny_reading
from utils.errors import DatasetError


def test_a_readable_file_opens(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"abc")
    refuse_directory(path, "a batch", "fix it")
    with open_binary(path, "a batch", "fix it") as handle:
        assert handle.read() == b"abc"


def test_a_directory_is_named_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"^{tmp_path} is a directory, expected a file \(a batch\); .*fix it$"):
        open_binary(tmp_path, "a batch", "fix it")


def test_a_missing_file_is_left_to_the_reader(tmp_path: Path) -> None:
    refuse_directory(tmp_path / "absent", "a batch", "fix it")
    with pytest.raises(FileNotFoundError):
        open_binary(tmp_path / "absent", "a batch", "fix it")


def test_an_unreadable_file_says_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"abc")
    deny_reading(monkeypatch, path)
    with pytest.raises(DatasetError, match=rf"^{path}: permission denied, cannot read a batch; .*fix it$"):
        open_binary(path, "a batch", "fix it")
