"""The RL package's layering: each module of `components.train.rl` imports only the modules listed above
it in the package docstring, counting every import in the syntax tree (inside functions and under
``TYPE_CHECKING`` too), so the import graph of the RL code has no cycle; `batch` is a leaf of it."""

from __future__ import annotations

import ast
from pathlib import Path

import components.train.rl as rl_package

RL = Path(rl_package.__file__).parent
TRAIN = RL.parent


def layers() -> list[str]:
    """The module order of the package docstring (its indented `name  description` lines)."""
    doc = ast.get_docstring(ast.parse((RL / "__init__.py").read_text())) or ""
    return [line.split()[0] for line in doc.splitlines() if line.startswith("    ") and line.strip()]


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name an import statement anywhere in `path` names (and `from m import x`
    also as ``m.x``: x may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative import"
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def rl_imports(path: Path) -> set[str]:
    prefix = "components.train.rl."
    return {n.removeprefix(prefix).split(".")[0] for n in imported_modules(path) if n.startswith(prefix)}


def test_every_module_is_a_layer_and_imports_only_layers_above_it():
    order = layers()
    modules = sorted(p.stem for p in RL.glob("*.py") if p.stem != "__init__")
    assert sorted(order) == modules
    for i, name in enumerate(order):
        below = rl_imports(RL / f"{name}.py") - set(order[:i])
        assert not below, f"{name} imports {below}, listed after it"
    assert rl_imports(RL / "batch.py") == set()
    assert imported_modules(RL / "__init__.py") == set()  # importing one layer loads no other


def test_the_stage_modules_sit_on_top_and_nothing_below_imports_them():
    stages = {"components.train.ppo", "components.train.grpo"}
    for path in RL.glob("*.py"):
        assert not imported_modules(path) & stages, path.name
    for stage in ("ppo", "grpo"):
        assert not imported_modules(TRAIN / f"{stage}.py") & {"components.train.ppo", "components.train.grpo"}
