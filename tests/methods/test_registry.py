"""Tests for utils/methods/__init__.py: the registry's entries are whole, their flags reach the methods
that add them, and main.py loads no more than the methods it may run."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from utils.errors import UserError
from utils.methods import CLOTHING_METHODS, METHODS, Method, flag_methods
from utils.run.config import option

REPO = Path(__file__).resolve().parents[2]


def test_every_entry_names_one_loop_that_exists():
    for method in METHODS.values():
        assert method.loop_class().__name__ == method.loop.partition(":")[2]
    assert CLOTHING_METHODS == ("memomentum", "ce", "coteaching", "pes")  # PES-semi: the vision task only


def test_each_declared_flag_is_found_with_the_methods_that_add_it():
    declared = {spec.name for method in METHODS.values() if method.options is not None
                for spec in dataclasses.fields(method.options)}
    assert declared and set(flag_methods()) == declared
    assert flag_methods()["forget_rate"] == ("coteaching",)


@dataclasses.dataclass(frozen=True)
class TwinOptions:  # a second method with Co-teaching's --forget_rate, as JoCoR has
    forget_rate: float | None = option(0.25, "share of each batch left out")


def test_a_flag_several_methods_add_has_a_default_per_method_and_reaches_their_runs_only(monkeypatch, tmp_path):
    from utils.sweeps.grid import build_jobs, expand_runs, parse_extra, parse_grid
    from utils.methods import with_method_flags
    from utils.train_config import VisionConfig

    monkeypatch.setitem(METHODS, "twin", Method("twin", "Twin", "utils.methods.ce:CrossEntropy",
                                                options=TwinOptions))
    assert flag_methods()["forget_rate"] == ("coteaching", "twin")
    config_class = with_method_flags(VisionConfig, METHODS, "TwinConfig", "")
    assert config_class.defaults_for({"method": "twin"})["forget_rate"] == 0.25
    assert config_class.defaults_for({"method": "coteaching"})["forget_rate"] is None
    assert "coteaching: None, twin: 0.25" in next(
        spec for spec in dataclasses.fields(config_class) if spec.name == "forget_rate").metadata["help"]
    assert config_class(dataset="digits", method="twin", forget_rate=0.1).forget_rate == 0.1
    with pytest.raises(UserError, match="--forget_rate is a flag of --method coteaching and twin, not of --method ce"):
        config_class(dataset="digits", method="ce", forget_rate=0.1)
    grid = parse_grid({"settings": [{"dataset": "digits", "noise_type": "instance", "noise_rate": 0.4}],
                       "methods": ["ce", "coteaching", "twin"]}, "g", "g")
    jobs = {job.run.method: job.command for job in build_jobs(grid, expand_runs(grid, None, [1]), tmp_path, "py",
                                                              parse_extra(["--forget_rate 0.3"]))}
    assert [method for method, command in sorted(jobs.items()) if "--forget_rate" in command] == ["coteaching", "twin"]


def test_main_py_does_not_import_the_clothing1m_stack():
    code = "import sys, main; print(sorted(m for m in ('utils.clothing_task', 'data.clothing') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
