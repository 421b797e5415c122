"""The architecture, checked: which of our modules may import which (README, "Project layout").

Reads every project module's imports with `ast` (module level and inside functions) and fails when
- `data/` or `models/` import anything of ours outside themselves except `utils/errors.py`;
- any module of ours imports an entry point (main.py, Clothing.py, ...);
- any import cycle exists between our modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("data", "models", "utils")
ENTRY_POINTS = {"main", "Clothing", "Clothing1m-data", "reproduce", "plot"}
PURE_LAYERS = ("data", "models")
ALLOWED_FROM_PURE_LAYERS = {"utils.errors"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    modules = {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}
    modules.update({name: REPO / f"{name}.py" for name in ENTRY_POINTS})
    return modules


def imported_names(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in its body (`from a.b import c` counts a.b.c if that
    is a module of ours, else a.b)."""
    found: set[str] = set()
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in candidates:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
                break
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_names(path, known) - {name} for name, path in modules.items()}


def test_every_package_and_entry_point_is_read(graph):
    assert {"main", "Clothing", "utils.memomentum", "data.noise", "models.lenet"} <= set(graph)


def test_data_and_models_import_nothing_of_ours_but_themselves_and_errors(graph):
    offences = [f"{name} imports {target}" for name, targets in graph.items()
                if name.split(".")[0] in PURE_LAYERS for target in targets
                if target.split(".")[0] != name.split(".")[0] and target not in ALLOWED_FROM_PURE_LAYERS]
    assert offences == []


def test_nothing_imports_an_entry_point(graph):
    offences = [f"{name} imports {target}" for name, targets in graph.items()
                for target in targets if target in ENTRY_POINTS]
    assert offences == []


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
