"""The architecture, checked: which of our modules may import which (docs/CONTRIBUTING.md, "Layout").

Reads every import of every module of ours (data/, models/, utils/, the entry points, tests/ and
bench/), in every form: `import a.b, c.d`, `from pkg import mod1, mod2`, relative imports, imports
inside functions, `importlib.import_module("a.b")`, and the "module:Class" names of the methods'
registry. It fails when
- `data/` or `models/` import anything of ours outside themselves except `utils/errors.py`;
- anything but tests/ and bench/ imports an entry point (main.py, Clothing.py, ...);
- the run infrastructure (utils/run/) imports a loop, a method, a task or an entry point's config;
- a method (utils/methods/) imports a task module: loops are written against the task interface
  (utils/task.py) only, so that every method runs on every dataset;
- any import cycle exists between our modules;
and it checks that the reader sees what it must (known edges, every module), so it cannot pass
vacuously.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("data", "models", "utils", "tests", "bench")
ENTRY_POINTS = {"main", "Clothing", "Clothing1m-data", "reproduce", "plot", "evaluate"}
PURE_LAYERS = ("data", "models")
ALLOWED_FROM_PURE_LAYERS = {"utils.errors"}
RUN_INFRASTRUCTURE = "utils.run"
# What the run infrastructure must never import: the loops and methods it runs, the tasks they train
# on, and the entry points' configurations (it knows a run only through RunConfig and Loop).
NOT_FOR_RUN_INFRASTRUCTURE = ("utils.methods", "utils.experiments", "utils.vision_task", "utils.clothing_task",
                              "utils.train_config", "utils.clothing_config")
METHODS_PACKAGE = "utils.methods"
TASK_MODULES = ("utils.vision_task", "utils.clothing_task", "utils.experiments")
REGISTRY_NAME = re.compile(r"([A-Za-z_][\w.]*):[A-Za-z_]\w*")  # "utils.methods.ce:CrossEntropy"
KNOWN_EDGES = {
    ("main", "utils.run.driver"), ("Clothing", "utils.run.driver"), ("main", "utils.experiments"),
    ("utils.methods", "utils.methods.memomentum"), ("utils.methods", "utils.methods.ce"),
    ("utils.methods.memomentum", "utils.run.loop"), ("utils.run.driver", "utils.run.loop"),
    ("data.noise", "utils.errors"), ("tests.end_to_end.test_main", "main"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    modules = {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}
    modules.update({name: REPO / f"{name}.py" for name in ENTRY_POINTS})
    return modules


def ours(name: str, known: set[str]) -> str | None:
    """The module of ours that importing `name` loads last: its longest known prefix."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Our modules that `source` (the module `module`) imports anywhere in its body, in any form."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import a, b`: each of a, b that is a module of ours, else pkg itself
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and REGISTRY_NAME.fullmatch(node.value):
            names = [node.value.partition(":")[0]]
        found.update(filter(None, (ours(name, known) for name in names)))
    return found - {module}


def _is_dynamic_import(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
        (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_names(path.read_text(), name, path.name == "__init__.py", known)
            for name, path in modules.items()}


def test_the_reader_sees_every_form_of_import():
    known = {"pkg", "pkg.a", "pkg.b", "x", "x.y", "z", "r", "r.m", "here", "here.sibling", "utils", "utils.errors",
             "utils.memomentum"}
    source = ("import pkg.a, x.y\n"
              "from pkg import a, b\n"
              "from utils import errors, memomentum\n"
              "def later():\n    import importlib\n    importlib.import_module('z')\n"
              "LOOP = 'r.m:SomeLoop'\n"
              "from . import sibling\n")
    assert imported_names(source, "here.mod", False, known) == {
        "pkg.a", "x.y", "pkg.b", "utils.errors", "utils.memomentum", "z", "r.m", "here.sibling"}


def test_every_package_and_entry_point_is_read_with_its_known_edges(graph):
    assert ENTRY_POINTS <= set(graph) and len(graph) > 80
    assert sum(len(targets) for targets in graph.values()) > 250
    missing = [f"{source} -> {target}" for source, target in KNOWN_EDGES if target not in graph.get(source, ())]
    assert missing == []


def test_data_and_models_import_nothing_of_ours_but_themselves_and_errors(graph):
    offences = [f"{name} imports {target}" for name, targets in graph.items()
                if name.split(".")[0] in PURE_LAYERS for target in targets
                if target.split(".")[0] != name.split(".")[0] and target not in ALLOWED_FROM_PURE_LAYERS]
    assert offences == []


def test_only_tests_and_benchmarks_import_an_entry_point(graph):
    offences = [f"{name} imports {target}" for name, targets in graph.items()
                if name.split(".")[0] not in ("tests", "bench") for target in targets if target in ENTRY_POINTS]
    assert offences == []


def test_the_run_infrastructure_imports_no_loop_method_or_task(graph):
    offences = [f"{name} imports {target}" for name, targets in graph.items()
                if name == RUN_INFRASTRUCTURE or name.startswith(RUN_INFRASTRUCTURE + ".") for target in targets
                if target in ENTRY_POINTS or any(target == bad or target.startswith(bad + ".")
                                                 for bad in NOT_FOR_RUN_INFRASTRUCTURE)]
    assert offences == []


def test_methods_import_no_task_module(graph):
    offences = [f"{name} imports {target}" for name, targets in graph.items()
                if name == METHODS_PACKAGE or name.startswith(METHODS_PACKAGE + ".") for target in targets
                if target in TASK_MODULES]
    assert offences == []
    assert "utils.task" in graph and "utils.engine" in graph["utils.methods.coteaching"]  # the reader sees them


def test_no_import_cycles(graph):
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
