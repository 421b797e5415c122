"""Test set-up: the repository root is on sys.path (this file's folder), and torch runs
single-threaded so that numbers are the same on every machine and 2-core CI stays quick."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402  (after the thread setting, which torch reads when it loads)
import torch  # noqa: E402


@pytest.fixture
def one_thread():
    """torch on one thread for a test (the thread governor of an in-process run may have raised it):
    tiny convolutions run faster on one thread than on contended ones, and numbers stay comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
