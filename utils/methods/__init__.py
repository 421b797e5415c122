"""The methods, one file each, found here by name (docs/CONTRIBUTING.md, "Adding a method").

An entry says what a method is called (`--method NAME`, and its row name in tables and logs), its
loop (written against the task interface, utils/task.py: main.py's MNIST/CIFAR/digits and
Clothing.py's Clothing1M), the flags it adds, the defaults its authors' code uses where they differ
from each entry point's, what it needs of a task beyond the interface, and the settings it refuses.
Flag choices, sweeps, tables and plots take the list of methods from here. Loops are named as
"module:name" and imported when a run needs one, so that main.py never pays for Clothing1M's imports.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from utils.errors import UserError
from utils.methods import coteaching, pes, pes_semi
from utils.run.config import require
from utils.task import TRAINING_SET_OUTPUTS, TWO_VIEW_STREAMS


ENTRY_POINTS = ("main", "clothing")  # main.py (MNIST, CIFAR-10/100, digits) and Clothing.py (Clothing1M)


@dataclass(frozen=True)
class Method:
    name: str
    title: str                                   # its row name in tables, logs and logs/results.txt
    loop: str                                    # "module:name" of its Loop class (or of a function
                                                 # (task, run, title) → Loop that picks one for the task)
    options: type | None = None                  # a frozen dataclass of its own flags (utils.run.config.option)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # its authors' defaults of main.py's flags
    clothing_defaults: Mapping[str, Any] = field(default_factory=dict)  # its defaults of Clothing.py's flags
    check: Callable[[Any], None] | None = None   # raises UserError for settings it cannot run
    unread_flags: tuple[str, ...] = ()           # flags its loop never reads: refused, not ignored
    needs: tuple[str, ...] = ()                  # what it asks of a task beyond the interface (Task.provides)
    selects_on_validation: bool = True           # False: it reports without a validation set (PES-semi)
    drawn_noise_type: Callable[[Any], str] | None = None  # (config) → the noise type its labels are drawn with,
                                                          # where its authors' code draws --noise_type its own way
    network: Callable[[Any, str], str | None] | None = None  # (config, dataset) → its authors' network of the
                                                              # dataset (None: the task's own)
    clothing_images: str = "official"            # its Clothing1M image transform (data/clothing.py IMAGE_TRANSFORMS)

    def loop_class(self) -> Callable[..., Any]:
        """What builds this method's loop from (task, run, title)."""
        module, _, name = self.loop.partition(":")
        return getattr(importlib.import_module(module), name)

    def network_name(self, config: Any, dataset: str) -> str | None:
        """The network its runs of `dataset` train (None: the task's own, --network or the dataset's)."""
        return self.network(config, dataset) if self.network is not None else None

    def open_loop(self, task: Any, run: Any, title: str) -> Any:
        """The method's loop on `task`, or a one-line refusal when the task lacks what it needs."""
        missing = [need for need in self.needs if need not in task.provides]
        if missing:
            raise UserError(f"--method {self.name} needs {', '.join(missing)}, which {task.name} does not have")
        return self.loop_class()(task, run, title)


def check_memomentum(config: Any) -> None:
    if not hasattr(config, "data_percent"):  # Clothing.py: a clean validation set, and every inner round trains
        return
    if config.data_percent >= 1.0:
        raise UserError("--data_percent 1 leaves no validation set, which Me-Momentum needs; use e.g. 0.9")
    if config.max_inner_loop < 2:
        raise UserError("--max_inner_loop 1 runs no inner round, so Me-Momentum would extract nothing and "
                        "report 0 %; use at least 2 (official: 20)")


METHODS: dict[str, Method] = {method.name: method for method in (
    Method("memomentum", "Me-Momentum", "utils.methods.memomentum:me_momentum", check=check_memomentum),
    Method("ce", "Standard (CE)", "utils.methods.ce:CrossEntropy", clothing_defaults={"n_epoch": 30},
           unread_flags=("select", "max_outer_loop", "max_inner_loop", "beta", "keep_all_checkpoints")),
    Method("coteaching", "Co-teaching", "utils.methods.coteaching:CoTeaching", options=coteaching.CoteachingOptions,
           defaults={"n_epoch": 200, "lr": 0.001, "weight_decay": 0.0},
           clothing_defaults=coteaching.CLOTHING_DEFAULTS, check=coteaching.check,
           unread_flags=("select", "max_outer_loop", "max_inner_loop", "sgd", "beta", "keep_all_checkpoints")),
    Method("pes", "PES", "utils.methods.pes:pes_loop", options=pes.PesOptions,
           defaults={"n_epoch": 200, "lr": 0.1, "weight_decay": 1e-4}, clothing_defaults=pes.CLOTHING_DEFAULTS,
           check=pes.check, unread_flags=("select", "max_outer_loop", "max_inner_loop", "sgd", "predict_clean", "beta",
                                          "keep_all_checkpoints"),
           needs=(TRAINING_SET_OUTPUTS,), network=pes.network_for, clothing_images="pes"),
    Method("pes_semi", "PES-semi", "utils.methods.pes_semi:PesSemi", options=pes_semi.PesSemiOptions,
           defaults={"n_epoch": 300, "lr": 0.02, "weight_decay": 5e-4, "data_percent": 1.0}, check=pes_semi.check,
           unread_flags=("select", "max_outer_loop", "max_inner_loop", "sgd", "predict_clean"),
           needs=(TRAINING_SET_OUTPUTS, TWO_VIEW_STREAMS), selects_on_validation=False,
           drawn_noise_type=pes_semi.drawn_noise_type, network=pes_semi.network_for),
)}

CLOTHING_METHODS = ("memomentum", "ce", "coteaching", "pes")  # PES-semi needs the vision task's two-view streams


def flag_methods(methods: Mapping[str, Method] | None = None) -> dict[str, tuple[str, ...]]:
    """The flags methods add (their options), each with the methods that add it: a flag may be
    several methods' (PES and PES-semi both have --T1), each with its own default."""
    methods = METHODS if methods is None else methods
    owners: dict[str, tuple[str, ...]] = {}
    for name, method in methods.items():
        for spec in dataclasses.fields(method.options) if method.options is not None else ():
            owners[spec.name] = owners.get(spec.name, ()) + (name,)
    return owners


def method_defaults(name: str, methods: Mapping[str, Method] | None = None, entry: str = "main") -> dict[str, Any]:
    """The defaults a run of method `name` starts from: its own flags' defaults (which, for a flag
    several methods add, differ per method), then its values of the entry point's flags."""
    method = (METHODS if methods is None else methods).get(name)
    if method is None:
        return {}
    own = {spec.name: spec.default for spec in dataclasses.fields(method.options)} if method.options else {}
    return {**own, **(method.defaults if entry == "main" else method.clothing_defaults)}


class MethodFlags:
    """What an entry point's configuration does with the methods' flags (mixed into its dataclass):
    a run starts from its method's defaults, and a flag it would ignore is refused."""

    ENTRY: ClassVar[str] = "main"

    def refuse_other_methods_flags(self) -> None:
        """A flag only other methods add, or one this method never reads, would be silently ignored:
        refuse it (and record nothing that did not apply)."""
        defaults = {spec.name: spec.default for spec in dataclasses.fields(self)}
        defaults.update(self.defaults_for({"method": self.method}))
        for flag, owners in flag_methods().items():
            if self.method not in owners and flag in defaults:
                require(getattr(self, flag) == defaults[flag],
                        f"--{flag} is a flag of --method {' and '.join(owners)}, not of --method {self.method}")
        for flag in METHODS[self.method].unread_flags:
            if flag in defaults:
                require(getattr(self, flag) == defaults[flag],
                        f"--{flag} has no effect with --method {self.method}; leave it out")
        method = METHODS[self.method]
        if method.check is not None:
            method.check(self)

    @classmethod
    def defaults_for(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """The chosen method's own defaults (e.g. Co-teaching's epochs and learning rate)."""
        return method_defaults(flags.get("method", ""), entry=cls.ENTRY)


def with_method_flags(base: type, methods: Mapping[str, Method], name: str, doc: str) -> type:
    """`base` with the flags every method adds (each method declares its own in its file). A flag
    several methods add is one field, its help naming each method's meaning (where they differ) and default."""
    extra = tuple(method.options for method in methods.values() if method.options is not None)
    shared = []
    for flag, owners in flag_methods(methods).items():
        if len(owners) > 1:
            specs = [next(spec for spec in dataclasses.fields(methods[owner].options) if spec.name == flag)
                     for owner in owners]
            if len({str(spec.type) for spec in specs}) > 1:
                raise TypeError(f"--{flag} has different types in methods {', '.join(owners)}")
            per_method = ", ".join(f"{owner}: {spec.default}" for owner, spec in zip(owners, specs))
            helps = list(dict.fromkeys(spec.metadata["help"] for spec in specs))
            text = helps[0] if len(helps) == 1 else "; ".join(f"{owner}: {spec.metadata['help']}"
                                                              for owner, spec in zip(owners, specs))
            metadata = {**specs[0].metadata, "help": f"{text} (default per method: {per_method})"}
            shared.append((flag, specs[0].type, dataclasses.field(default=specs[0].default, metadata=metadata)))
    composed = dataclasses.make_dataclass(name, shared, bases=(*extra, base), frozen=True)
    composed.__module__ = base.__module__
    composed.__doc__ = doc
    return composed


def method_title(name: str) -> str:
    return METHODS[name].title if name in METHODS else name


def method_order(name: str) -> tuple[int, str]:
    """Sort key: the registry's order, unknown names after it."""
    names = list(METHODS)
    return (names.index(name) if name in names else len(names), name)
