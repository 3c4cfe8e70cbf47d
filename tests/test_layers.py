"""The import graph keeps its layers (README, "Layers").

Every import counts: module level, inside functions and under ``TYPE_CHECKING``; relative imports are
resolved. A package is ``components.<name>`` or ``pipelines``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a package may import only the packages before it (and itself).
ORDER = [
    "components",  # the namespace package: an empty __init__
    "components.core",
    "components.io",
    "components.tokenizer",
    "components.model",
    "components.eval",
    "components.train",
    "components.data",
    "components.world",
    "components.serve",
    "pipelines",
]
WORLD = "components.world"
WORLD_MAY_IMPORT = {"components.core", "components.io", WORLD}


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for top in ("components", "pipelines"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = (path, is_package)
    return modules


MODULES = _modules()


def _imported(name: str) -> set[str]:
    """The project modules ``name`` imports, anywhere in its body."""
    path, is_package = MODULES[name]
    here = name if is_package else name.rpartition(".")[0]
    named = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            named.add(module)
            named.update(f"{module}.{alias.name}" for alias in node.names)
    found = set()
    for module in named:
        while module and module not in MODULES:
            module = module.rpartition(".")[0]
        if module and module != name:
            found.add(module)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "components" and len(parts) > 1 else parts[0]


MODULE_GRAPH = {name: _imported(name) for name in MODULES}


def _package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the module imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in MODULE_GRAPH.items():
        for target in sorted(targets):
            if package_of(module) != package_of(target):
                edges.setdefault((package_of(module), package_of(target)), []).append(f"{module} -> {target}")
    return edges


PACKAGE_EDGES = _package_edges()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_parsed():
    assert len(MODULES) > 100
    assert "components.core.artifacts" in MODULE_GRAPH["components.core.stage"]


def test_cycle_finder():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_cycle():
    assert _cycles(MODULE_GRAPH) == []


def test_no_package_cycle():
    graph: dict[str, set[str]] = {}
    for importer, imported in PACKAGE_EDGES:
        graph.setdefault(importer, set()).add(imported)
        graph.setdefault(imported, set())
    assert _cycles(graph) == []


def test_every_package_is_ordered():
    assert {package_of(module) for module in MODULES} <= set(ORDER)


def test_packages_import_downwards():
    upward = {
        edge: via
        for edge, via in PACKAGE_EDGES.items()
        if edge[1] in ORDER and ORDER.index(edge[1]) > ORDER.index(edge[0])
    }
    assert upward == {}


def test_the_world_depends_only_on_core_and_io():
    assert {
        edge: via
        for edge, via in PACKAGE_EDGES.items()
        if edge[0] == WORLD and edge[1] not in WORLD_MAY_IMPORT
    } == {}


def test_only_pipelines_import_the_world():
    assert {
        edge: via for edge, via in PACKAGE_EDGES.items() if edge[1] == WORLD and edge[0] != "pipelines"
    } == {}
