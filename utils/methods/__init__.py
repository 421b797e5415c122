"""The methods, one file each, found here by name (docs/CONTRIBUTING.md, "Adding a method").

An entry says what a method is called (`--method NAME`, and its row name in tables and logs), which
loop runs it on MNIST/CIFAR/digits (main.py) and on Clothing1M (Clothing.py), the flags it adds,
the defaults its authors' code uses where they differ from main.py's, and the settings it refuses.
Flag choices, sweeps, tables and plots take the list of methods from here. Loops are named as
"module:Class" and imported when a run needs one, so that main.py never pays for Clothing1M's imports.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from utils.errors import UserError
from utils.methods import coteaching


@dataclass(frozen=True)
class Method:
    name: str
    title: str                                   # its row name in tables, logs and logs/results.txt
    loop: str | None                             # main.py (MNIST, CIFAR-10/100, digits): "module:Class"
    clothing_loop: str | None = None             # Clothing.py (Clothing1M): "module:Class"
    options: type | None = None                  # a frozen dataclass of its own flags (utils.run.config.option)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # its authors' defaults of main.py's flags
    check: Callable[[Any], None] | None = None   # raises UserError for main.py settings it cannot run
    unread_flags: tuple[str, ...] = ()           # main.py flags its loop never reads: refused, not ignored

    def loop_class(self, clothing: bool = False) -> type:
        """The loop class that runs this method on MNIST/CIFAR (or, with `clothing`, on Clothing1M)."""
        module, _, name = (self.clothing_loop if clothing else self.loop).partition(":")
        return getattr(importlib.import_module(module), name)


def check_memomentum(config: Any) -> None:
    if config.data_percent >= 1.0:
        raise UserError("--data_percent 1 leaves no validation set, which Me-Momentum needs; use e.g. 0.9")
    if config.max_inner_loop < 2:
        raise UserError("--max_inner_loop 1 runs no inner round, so Me-Momentum would extract nothing and "
                        "report 0 %; use at least 2 (official: 20)")


METHODS: dict[str, Method] = {method.name: method for method in (
    Method("memomentum", "Me-Momentum", "utils.methods.memomentum:MeMomentum",
           "utils.methods.memomentum_clothing1m:MeMomentumClothing1M", check=check_memomentum),
    Method("ce", "Standard (CE)", "utils.methods.ce:CrossEntropy",
           unread_flags=("select", "max_outer_loop", "max_inner_loop")),
    Method("coteaching", "Co-teaching", "utils.methods.coteaching:CoTeaching", options=coteaching.CoteachingOptions,
           defaults={"n_epoch": 200, "lr": 0.001, "weight_decay": 0.0}, check=coteaching.check,
           unread_flags=("select", "max_outer_loop", "max_inner_loop", "sgd")),
)}

CLOTHING_METHODS = tuple(name for name, method in METHODS.items() if method.clothing_loop)


def flag_methods(methods: Mapping[str, Method] | None = None) -> dict[str, tuple[str, ...]]:
    """The flags methods add (their options), each with the methods that add it: a flag may be
    several methods' (PES and PES-semi both have --T1), each with its own default."""
    methods = METHODS if methods is None else methods
    owners: dict[str, tuple[str, ...]] = {}
    for name, method in methods.items():
        for spec in dataclasses.fields(method.options) if method.options is not None else ():
            owners[spec.name] = owners.get(spec.name, ()) + (name,)
    return owners


def method_defaults(name: str, methods: Mapping[str, Method] | None = None) -> dict[str, Any]:
    """The defaults a run of method `name` starts from: its authors' values of the shared flags,
    and its own flags' defaults (which, for a flag several methods add, differ per method)."""
    method = (METHODS if methods is None else methods).get(name)
    if method is None:
        return {}
    own = {spec.name: spec.default for spec in dataclasses.fields(method.options)} if method.options else {}
    return {**method.defaults, **own}


def method_title(name: str) -> str:
    return METHODS[name].title if name in METHODS else name


def method_order(name: str) -> tuple[int, str]:
    """Sort key: the registry's order, unknown names after it."""
    names = list(METHODS)
    return (names.index(name) if name in names else len(names), name)
