"""A stage's code version, found from the code itself.

A stage's code is every project module it can run: the module that defines the stage function and,
transitively, every module of the project packages (`components`, `pipelines`) that module imports --
`import x`, `from x import y`, relative imports, and imports inside functions or under `TYPE_CHECKING`
alike (anything in the syntax tree), plus the `__init__` of every package on the way. Calls of
`importlib.import_module` are followed too when their argument is a literal: `"components.world.pages"`
names one module, `f"components.world.templates_{code}"` every module of `components.world` that matches
`templates_*`. An import built from a variable (a reward function named in a config) is not followed:
the key hashes the name, through the config, but not that code.

Modules are found as files under the project root and parsed, never imported. Each module counts by its
syntax tree (`ast.dump`), so comments, formatting and docstrings do not change a version, while any edit
that can change what the code does does. Data files a stage ships with (blocklists) cannot be found
from imports, so a stage declares them (`@stage(..., data_files=...)`) and they count by their bytes.

The import graph and each module's parse are cached per process (the runner asks for every stage, and
they share most of their modules): a process sees the code as it was when it first looked, just as
Python itself keeps a module as it was first imported. `clear_cache()` starts over.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("components", "pipelines")


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The file of project module `name` under `root` (`a/b.py` or `a/b/__init__.py`), or None when
    `name` is outside the project packages or no such module exists (`from pkg import function`)."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def import_closure(module: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """Every project module that importing `module` can run, `module` included, sorted. `module` itself
    may live outside the project (a test's stage), if it is imported: then its file is the one it was
    imported from."""
    return _import_closure(module, Path(root).resolve())


@functools.cache
def _import_closure(module: str, root: Path) -> tuple[str, ...]:
    _locate(module, root)  # fail early, and by name, on a module that is nowhere
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_module_facts(name, root)[1])
    return tuple(sorted(seen))


def _locate(name: str, root: Path) -> Path:
    path = module_file(name, root)
    if path is None and name.split(".")[0] not in PROJECT_PACKAGES:
        file = getattr(sys.modules.get(name), "__file__", None)
        path = Path(file) if file and file.endswith(".py") else None
    if path is None:
        raise LookupError(f"cannot find the source of module {name!r} (project root {root})")
    return path


def code_version(module: str, data_files: Iterable[str] = (), root: Path = PROJECT_ROOT) -> str:
    """Hash of the parsed code of `module`'s import closure and of the bytes of `data_files` (files or
    directories, relative to `root`)."""
    root = Path(root).resolve()
    h = hashlib.sha256()
    for name in import_closure(module, root):
        h.update(f"{name}\0{_module_facts(name, root)[0]}\n".encode())
    for entry in sorted(data_files):
        data = root / entry
        if not data.exists():
            raise FileNotFoundError(f"data file {entry!r} of {module} does not exist under {root}")
        files = sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else [data]
        for path in files:
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def clear_cache() -> None:
    """Forget the import graphs and parses (after editing sources within one process)."""
    _import_closure.cache_clear()
    _module_facts.cache_clear()
    _layout.cache_clear()
    _disk_cache.cache_clear()


@functools.cache
def _module_facts(name: str, root: Path) -> tuple[str, tuple[str, ...]]:
    """(digest of the module's syntax tree, the project modules it imports) for module `name`, from the
    on-disk cache when the module's bytes and the project's set of modules are as they were."""
    path = _locate(name, root)
    source = path.read_bytes()
    key = hashlib.sha256(
        f"{sys.version_info[:2]}\0{root}\0{name}\0{path}\0{_layout(root)}\0".encode() + source
    ).hexdigest()
    cache = _disk_cache()
    if isinstance(hit := cache.get(key), list) and len(hit) == 2:
        return hit[0], tuple(hit[1])
    facts = _parse_facts(name, path, source, root)
    cache[key] = [facts[0], list(facts[1])]
    _save_disk_cache(cache)
    return facts


# Parsing and dumping ~100 modules takes a second or two; `gptrecipe stages` should not. The facts of a
# module depend only on its bytes and on which project modules exist (`_layout`), so they are kept on
# disk under those (GPTRECIPE_CODE_CACHE, default ~/.cache/gptrecipe/code_facts.json; "" = off).
def _cache_file() -> Path | None:
    where = os.environ.get("GPTRECIPE_CODE_CACHE")
    if where == "":
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(where) if where else base / "gptrecipe" / "code_facts.json"


@functools.cache
def _disk_cache() -> dict:
    try:
        file = _cache_file()
        data = json.loads(file.read_text()) if file else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_disk_cache(cache: dict) -> None:
    file = _cache_file()
    if file is None:
        return
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, file)
    except OSError:
        pass


@functools.cache
def _layout(root: Path) -> str:
    """The project's modules (files under the project packages): imports are resolved against them."""
    files = sorted(str(p.relative_to(root)) for pkg in PROJECT_PACKAGES for p in (root / pkg).rglob("*.py"))
    return hashlib.sha256("\n".join(files).encode()).hexdigest()


def _parse_facts(name: str, path: Path, source: bytes, root: Path) -> tuple[str, tuple[str, ...]]:
    tree = ast.parse(source, filename=str(path))
    imports = _imports(tree, name, is_package=path.name == "__init__.py", root=root)
    # Docstrings are dropped before hashing: nothing computes a stage's outputs from them (only the
    # `gptrecipe stages` listing shows one), and rerunning a training stage because a docstring was
    # reworded is the cost this module exists to avoid. String constants that are not docstrings (field
    # descriptions, templates) stay in.
    _strip_docstrings(tree)
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest(), tuple(sorted(imports))


def _imports(tree: ast.AST, name: str, *, is_package: bool, root: Path) -> set[str]:
    """The project modules a module's syntax tree imports, with every package on the way to each."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    continue  # beyond the top-level package: not importable
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            # `from pkg import name` imports the submodule pkg.name when there is one.
            found.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_import_call(node) and node.args:
            found.update(_literal_import(node.args[0], root))
    # Importing a.b.c runs a/__init__ and a/b/__init__ first.
    with_packages = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    with_packages.update(".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
    return {m for m in with_packages if m != name and module_file(m, root) is not None}


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )


def _literal_import(arg: ast.expr, root: Path) -> list[str]:
    """The modules an `import_module(...)` argument can name: a string literal, or an f-string read as a
    pattern over the modules of the package its literal prefix names."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if not isinstance(arg, ast.JoinedStr):
        return []
    pattern = "".join(
        part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "*"
        for part in arg.values
    )
    package = pattern.split("*", 1)[0].rpartition(".")[0]
    pkg_file = module_file(package, root) if package else None
    if pkg_file is None or pkg_file.name != "__init__.py":
        return []
    candidates = [
        f"{package}.{p.stem if p.suffix == '.py' else p.name}"
        for p in pkg_file.parent.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    ]
    return [m for m in candidates if fnmatch.fnmatchcase(m, pattern)]


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0].value if node.body and isinstance(node.body[0], ast.Expr) else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                node.body = node.body[1:]
