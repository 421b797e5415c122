"""Tests for utils/methods/__init__.py: the registry's entries are whole, their flags their own, and
main.py loads no more than the methods it may run."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from utils.methods import CLOTHING_METHODS, METHODS, flag_owners

REPO = Path(__file__).resolve().parents[2]


def test_every_entry_names_loops_that_exist():
    for method in METHODS.values():
        assert method.loop_class().__name__ in method.loop
        if method.clothing_loop:
            assert method.loop_class(clothing=True).__name__ in method.clothing_loop
    assert CLOTHING_METHODS == ("memomentum",)


def test_each_methods_flag_belongs_to_one_method():
    declared = [(spec.name, name) for name, method in METHODS.items() if method.options is not None
                for spec in dataclasses.fields(method.options)]
    assert declared and len(flag_owners()) == len(declared)  # no flag name shared by two methods
    assert flag_owners()["forget_rate"] == "coteaching"


def test_main_py_does_not_import_the_clothing1m_stack():
    code = "import sys, main; print(sorted(m for m in ('utils.clothing_task', 'data.clothing') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
