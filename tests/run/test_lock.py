"""Tests for utils/run/lock.py: what stands at RUN_DIR/.lock is never followed or overwritten unless it
is a lock record of ours, and a filesystem without locks is its own one-line message."""
from __future__ import annotations

import errno
import json

import pytest

import utils.run.lock as lock_module
from utils.errors import UserError
from utils.run.lock import RunLock


def test_a_link_in_place_of_the_lock_file_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(target)
    with pytest.raises(UserError, match=r"\.lock is a link"):
        RunLock(tmp_path / "run").acquire()
    assert target.read_text() == "keep me"
    assert RunLock.holder_if_locked(tmp_path / "run") is None


@pytest.mark.parametrize("contents", ["another tool's lock\n", "[1, 2]", '{"owner": "someone else"}'])
def test_another_tools_lock_file_is_refused_and_kept(tmp_path, contents):
    (tmp_path / ".lock").write_text(contents)
    with pytest.raises(UserError, match="not a lock record of this project"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == contents


def test_a_folder_named_like_the_lock_file_is_refused(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(UserError, match="is not a file"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("contents", ["", json.dumps({"host": "h", "pid": 1, "started": "s", "command": "c"})])
def test_an_empty_or_own_lock_file_left_by_a_killed_run_is_taken(tmp_path, contents):
    (tmp_path / ".lock").write_text(contents)
    lock = RunLock(tmp_path).acquire()
    lock.sign()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] > 1
    lock.release()


def test_a_filesystem_without_locks_says_so(tmp_path, monkeypatch):
    # No filesystem without locks can be mounted here: lockf fails as it does on one (ENOLCK).
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(lock_module.fcntl, "lockf", no_locks)
    with pytest.raises(UserError, match="this filesystem does not support locks .No locks available.; mount it "
                                        "with locking enabled"):
        RunLock(tmp_path).acquire()
