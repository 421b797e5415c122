"""Tests for utils/errors.py: every way a run ends is one line on stderr and its exit code."""
from __future__ import annotations

import errno

import pytest
import torch

from utils.errors import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, StopRequested, UserError, exit_code_of


def ending_with(error: BaseException):
    def body() -> int:
        raise error
    return body


@pytest.mark.parametrize("error,code,words", [
    (UserError("--lr must be > 0"), EXIT_USER_ERROR, "error: --lr must be > 0"),
    (OSError(errno.ENOSPC, "No space left on device", "run/checkpoint.pt"), EXIT_USER_ERROR,
     "cannot read or write run/checkpoint.pt: No space left on device"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), EXIT_USER_ERROR,
     "the operating system refused: Cannot allocate memory"),
    (StopRequested("stopped between epochs", "SIGTERM"), 75, "stopped (SIGTERM)"),
    (KeyboardInterrupt(), 130, "interrupted (Ctrl-C)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"), EXIT_OUT_OF_MEMORY,
     "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)"),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), EXIT_OUT_OF_MEMORY, "use a smaller --batch_size"),
    (MemoryError(), EXIT_OUT_OF_MEMORY, "error: out of memory (MemoryError)"),
])
def test_each_ending_is_one_line_and_its_code(error, code, words, capsys):
    assert exit_code_of(ending_with(error)) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_other_processes_of_a_run_say_nothing(capsys):
    assert exit_code_of(ending_with(UserError("bad")), is_main=lambda: False) == EXIT_USER_ERROR
    assert capsys.readouterr().err == ""


def test_other_errors_keep_their_traceback_and_exit_1():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        exit_code_of(ending_with(RuntimeError("shape mismatch")))
