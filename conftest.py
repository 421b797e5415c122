"""Test set-up: the repository root is on sys.path (this file's folder), and torch runs
single-threaded so that numbers are the same on every machine and 2-core CI stays quick."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
