"""How a run ends when it does not simply finish: the errors, the stop request, and every exit code.

Every entry point runs its body through `exit_code_of`, which turns each way of ending into one line
on stderr ("error: ...", "stopped (SIGTERM): ...") and the documented exit code:

    0   done                       2    bad flags, paths, data, weights or checkpoint (UserError)
    3   the loss became NaN/inf    4    out of memory (device or host)
    75  stopped by SIGTERM/SIGUSR1 after saving: resume later
    130 stopped by Ctrl-C (SIGINT) after saving: resume later
    1   anything else: a bug or a failure we did not foresee, with Python's traceback
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_OK = 0
EXIT_USER_ERROR = 2        # bad flags, missing or malformed input: the message says what to do
EXIT_NON_FINITE = 3        # the loss became NaN or infinite
EXIT_OUT_OF_MEMORY = 4     # the device (or the host) ran out of memory
EXIT_PREEMPTED = 75        # EX_TEMPFAIL: stopped on SIGTERM/SIGUSR1 after saving; resume later
EXIT_INTERRUPTED = 130     # stopped by Ctrl-C (SIGINT) after saving; resume later


class UserError(Exception):
    """Bad flags, missing or malformed input: the message says what was wrong and what to do."""

    exit_code = EXIT_USER_ERROR


class DatasetError(UserError):
    """A dataset, label or index file is missing, truncated or malformed."""


class CheckpointError(UserError):
    """A checkpoint is unreadable or belongs to a different configuration."""


class NonFiniteLoss(Exception):
    """Training produced NaN/inf; the message names the epoch and the last good checkpoint."""

    exit_code = EXIT_NON_FINITE


class StopRequested(Exception):
    """The process was asked to stop (SIGTERM, SIGUSR1, Ctrl-C); raised between batches or epochs.

    `signal_name` is the signal that asked ("SIGINT" for Ctrl-C); the message says what was saved.
    """

    def __init__(self, message: str = "stop requested", signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signal_name == "SIGINT" else EXIT_PREEMPTED


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def printable_anywhere() -> None:
    """A console that cannot show a character (a path in another script, LANG=C) shows an escape for
    it instead of ending the run with a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a text stream of a file (a test's capture)
            pass


def exit_code_of(body: Callable[[], int], is_main: Callable[[], bool] = lambda: True) -> int:
    """Run `body`; turn every way it can end into an exit code and (on the main process) one line."""

    def say(line: str) -> None:
        if is_main():
            print(one_line(line), file=sys.stderr, flush=True)

    printable_anywhere()
    try:
        return body()
    except (UserError, NonFiniteLoss) as error:
        say(f"error: {error}")
        return error.exit_code
    except StopRequested as stop:
        say(f"stopped ({stop.signal_name or 'stop requested'}): {stop}")
        return stop.exit_code
    except KeyboardInterrupt:
        say("interrupted (Ctrl-C): the last checkpoint written is kept; continue with --resume auto")
        return EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as error:
        known = foreseen_runtime_error(error)
        if known is None:
            raise  # a bug or a failure nobody foresaw: Python's traceback, exit 1
        line, code = known
        say(line)
        return code
    except OSError as error:
        if error.filename:
            say(f"error: cannot read or write {error.filename}: {error.strerror or error} (check the path, its "
                f"permissions and the free disk space; nothing written before was lost)")
        else:
            say(f"error: the operating system refused: {error.strerror or error} (nothing written before was "
                f"lost; run again once the cause is gone)")
        return EXIT_USER_ERROR


def foreseen_runtime_error(error: BaseException) -> tuple[str, int] | None:
    """The one line and exit code of a RuntimeError or MemoryError we know the cause of, else None."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if first_line.startswith("Symlink loop from"):  # pathlib's resolve() on Python < 3.13
        return f"error: {first_line}: a link that leads back to itself; give a real folder or file", EXIT_USER_ERROR
    if type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):  # --compile
        return (f"error: torch.compile failed ({first_line}); run without --compile (the run folder continues "
                f"with --resume auto)", EXIT_USER_ERROR)
    if is_out_of_memory(error):
        return (f"error: out of memory ({first_line}): use a smaller --batch_size or --eval_batch_size, --amp, or "
                f"fewer runs on this device; the last checkpoint is kept (--resume auto continues)", EXIT_OUT_OF_MEMORY)
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), MPS's and the CPU allocator's messages, and Python's MemoryError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return "out of memory" in text or "DefaultCPUAllocator: can't allocate memory" in text
