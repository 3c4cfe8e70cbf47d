"""A stage's code version covers exactly the project code it imports (transitively) and its data files."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from components.core import code_version as cv
from components.core.config import StageConfig
from components.core.stage import code_version, stage


@pytest.fixture(autouse=True)
def fresh_cache():
    cv.clear_cache()
    yield
    cv.clear_cache()


def write(root: Path, files: dict[str, str]) -> Path:
    """Write `files` ({"components/a.py": source}) under `root`; every package gets an `__init__.py`."""
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        for pkg in path.relative_to(root).parents:
            if pkg != Path(".") and not (root / pkg / "__init__.py").exists():
                (root / pkg / "__init__.py").write_text("")
    return root


def edit(root: Path, rel: str, source: str) -> None:
    (root / rel).write_text(textwrap.dedent(source))
    cv.clear_cache()


def test_an_indirect_import_is_part_of_the_version(tmp_path: Path):
    root = write(
        tmp_path,
        {
            "components/a.py": "import components.b\n",
            "components/b.py": "from components import c\n",
            "components/c.py": "X = 1\n",
            "components/unrelated.py": "Y = 1\n",
        },
    )
    assert cv.import_closure("components.a", root) == (
        "components",
        "components.a",
        "components.b",
        "components.c",
    )
    before = cv.code_version("components.a", root=root)
    edit(root, "components/c.py", "X = 2\n")
    after = cv.code_version("components.a", root=root)
    assert after != before
    # ... and a module nobody imports is not.
    edit(root, "components/unrelated.py", "Y = 2\n")
    assert cv.code_version("components.a", root=root) == after


def test_an_edit_changes_exactly_the_stages_whose_closure_holds_the_module(tmp_path: Path):
    root = write(
        tmp_path,
        {
            "components/lib/c.py": "def f():\n    return 1\n",
            "components/lib/mid.py": "from components.lib.c import f\n",
            "components/lib/other.py": "def g():\n    return 2\n",
            "components/stages/first.py": "from components.lib import c\n",
            "components/stages/second.py": "from components.lib.mid import f\n",
            "components/stages/third.py": "from components.lib.other import g\n",
        },
    )
    stages = ["components.stages.first", "components.stages.second", "components.stages.third"]
    holding_c = {s for s in stages if "components.lib.c" in cv.import_closure(s, root)}
    assert holding_c == {"components.stages.first", "components.stages.second"}
    before = {s: cv.code_version(s, root=root) for s in stages}
    edit(root, "components/lib/c.py", "def f():\n    return 3\n")
    after = {s: cv.code_version(s, root=root) for s in stages}
    assert {s for s in stages if after[s] != before[s]} == holding_c


def test_comments_formatting_and_docstrings_do_not_count(tmp_path: Path):
    root = write(
        tmp_path,
        {
            "components/a.py": "from components import b\n",
            "components/b.py": '''\
                """Module doc."""
                def f(x):
                    """Doubles."""
                    return x * 2
                ''',
        },
    )
    before = cv.code_version("components.a", root=root)
    edit(
        root,
        "components/b.py",
        '''\
        """A reworded module docstring."""

        # a comment
        def f(
            x,  # the input
        ):
            """Reworded."""

            return (x*2)
        ''',
    )
    assert cv.code_version("components.a", root=root) == before
    edit(root, "components/b.py", "def f(x):\n    return x * 3\n")
    assert cv.code_version("components.a", root=root) != before
    # A string that is not a docstring is code.
    edit(root, "components/b.py", 'def f(x):\n    y = "doc"\n    return x * 2\n')
    assert cv.code_version("components.a", root=root) != before


def test_every_kind_of_import_is_followed(tmp_path: Path):
    root = write(
        tmp_path,
        {
            "components/pkg/stage.py": """\
                from typing import TYPE_CHECKING

                import numpy  # not a project module: not followed

                from . import sibling
                from .sub.deep import name_in_deep
                from ..other import helpers
                from components.attrs import some_function

                if TYPE_CHECKING:
                    from components.typing_only import T

                def run():
                    import components.lazy.inner
                    from pipelines import recipe
                    return recipe
                """,
            "components/pkg/sibling.py": "",
            "components/pkg/sub/deep.py": "name_in_deep = 1\n",
            "components/other/helpers.py": "",
            "components/attrs.py": "def some_function(): ...\n",
            "components/typing_only.py": "T = int\n",
            "components/lazy/inner.py": "",
            "pipelines/recipe.py": "",
            "components/never.py": "",
        },
    )
    assert set(cv.import_closure("components.pkg.stage", root)) == {
        "components",
        "components.pkg",
        "components.pkg.stage",
        "components.pkg.sibling",
        "components.pkg.sub",
        "components.pkg.sub.deep",
        "components.other",
        "components.other.helpers",
        "components.attrs",  # `from components.attrs import some_function`: a function, so the module
        "components.typing_only",
        "components.lazy",
        "components.lazy.inner",
        "pipelines",
        "pipelines.recipe",
    }
    before = cv.code_version("components.pkg.stage", root=root)
    for rel in ["components/typing_only.py", "components/lazy/inner.py", "components/pkg/sub/deep.py"]:
        edit(root, rel, (root / rel).read_text() + "CHANGED = True\n")
        assert cv.code_version("components.pkg.stage", root=root) != before, rel
        before = cv.code_version("components.pkg.stage", root=root)


def test_the_packages_of_the_stage_module_count(tmp_path: Path):
    root = write(tmp_path, {"components/solo/alone.py": "X = 1\n"})
    assert cv.import_closure("components.solo.alone", root) == (
        "components",
        "components.solo",
        "components.solo.alone",
    )
    before = cv.code_version("components.solo.alone", root=root)
    edit(root, "components/solo/__init__.py", "import os\n")
    assert cv.code_version("components.solo.alone", root=root) != before


def test_literal_import_module_calls_are_followed(tmp_path: Path):
    root = write(
        tmp_path,
        {
            "components/langs.py": """\
                import importlib

                def pack(code):
                    return importlib.import_module(f"components.templates.lang_{code}")

                def named(module):
                    return importlib.import_module(module)  # a variable: the config's business

                PAGES = importlib.import_module("components.pages")
                """,
            "components/templates/lang_en.py": "",
            "components/templates/lang_de.py": "",
            "components/templates/other.py": "",
            "components/pages.py": "",
        },
    )
    assert cv.import_closure("components.langs", root) == (
        "components",
        "components.langs",
        "components.pages",
        "components.templates",
        "components.templates.lang_de",
        "components.templates.lang_en",
    )


def test_data_files_count_by_their_bytes(tmp_path: Path):
    root = write(
        tmp_path,
        {"components/a.py": "", "components/lists/one.txt": "alpha\n", "components/lists/two.txt": "b\n"},
    )
    version = cv.code_version("components.a", ["components/lists"], root=root)
    assert version != cv.code_version("components.a", root=root)
    assert version == cv.code_version("components.a", ["components/lists"], root=root)
    (root / "components/lists/two.txt").write_text("b # a comment, but data\n")
    changed = cv.code_version("components.a", ["components/lists"], root=root)
    assert changed != version
    (root / "components/lists/three.txt").write_text("")
    assert cv.code_version("components.a", ["components/lists"], root=root) != changed
    only_one = cv.code_version("components.a", ["components/lists/one.txt"], root=root)
    (root / "components/lists/two.txt").write_text("c\n")
    assert cv.code_version("components.a", ["components/lists/one.txt"], root=root) == only_one
    with pytest.raises(FileNotFoundError, match="components/missing"):
        cv.code_version("components.a", ["components/missing"], root=root)


# --- the real tree ------------------------------------------------------------------------------


def test_real_closures_hold_what_the_stages_import():
    pretrain = cv.import_closure("components.train.pretrain")
    assert {"components.model.checkpoint", "components.tokenizer.bpe"} <= set(pretrain)
    assert {"components.model.gpt", "components.train.trainer", "components.io.token_stream"} <= set(pretrain)
    assert {"components", "components.train", "components.core.stage"} <= set(pretrain)
    assert "components.data.dedup" not in pretrain
    assert "components.data.documents" in cv.import_closure("components.data.dedup")
    # The crawl loads its language packs with importlib.import_module(f"...templates_{code}").
    world = cv.import_closure("components.world.crawl")
    for code in ("en", "de", "fr", "es", "it"):
        assert f"components.world.templates_{code}" in world


def test_pretrain_version_follows_checkpoint_source(tmp_path: Path):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in cv.PROJECT_PACKAGES:
        shutil.copytree(cv.PROJECT_ROOT / package, tmp_path / package, ignore=ignore)
    version = cv.code_version("components.train.pretrain", root=tmp_path)
    assert version == cv.code_version("components.train.pretrain")  # same code, same version
    checkpoint = tmp_path / "components/model/checkpoint.py"
    source = checkpoint.read_text()
    checkpoint.write_text(source + "\n# only a comment\n")
    cv.clear_cache()
    assert cv.code_version("components.train.pretrain", root=tmp_path) == version
    checkpoint.write_text(source + "\nFORMAT_VERSION_FOR_THE_TEST = 2\n")
    cv.clear_cache()
    assert cv.code_version("components.train.pretrain", root=tmp_path) != version
    assert cv.code_version("components.data.dedup", root=tmp_path) == cv.code_version("components.data.dedup")


class Cfg(StageConfig):
    pass


@stage("local", config=Cfg, outputs=("out",), data_files=("components/data/blocklists/urls.txt",))
def local_stage(ctx, config, inputs):
    return {}


def test_stage_code_version_delegates():
    from components.train.pretrain import pretrain

    assert pretrain.data_files == ()
    assert code_version(pretrain) == cv.code_version("components.train.pretrain")
    # A stage defined outside the project packages (here, in a test): its own module and what it imports.
    closure = cv.import_closure(local_stage.fn.__module__)
    assert local_stage.fn.__module__ in closure
    assert {"components.core.code_version", "components.core.stage", "components.core.config"} <= set(closure)
    assert code_version(local_stage) == cv.code_version(
        local_stage.fn.__module__, ["components/data/blocklists/urls.txt"]
    )
    assert code_version(local_stage) != cv.code_version(local_stage.fn.__module__)
