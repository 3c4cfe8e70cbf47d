"""Fast start, early failure: loading a config imports no heavy library, `--until` validates only the
stages that will run, and config/wiring mistakes of any stage are refused before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.core.config import ConfigError
from components.data.decontaminate import decontaminate
from components.data.ingest import ingest
from pipelines.config import load_config
from pipelines.dag import Node, Pipeline
from pipelines.recipe import RECIPE

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "ray", "datasketch")


def test_loading_the_tiny_config_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from pipelines.config import load_config\n"
        "from pipelines.recipe import RECIPE\n"
        "load_config('tiny', [], RECIPE)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_stage_declarations_resolve_to_their_code():
    for name in ("pretrain", "dedup", "evaluate"):
        stage = RECIPE.nodes[name].stage
        assert stage.fn is None and stage.module.startswith("components.")
        assert stage.description  # read from the function's docstring, without importing it
    assert RECIPE.nodes["dedup"].stage.function.__name__ == "dedup"


def test_until_validates_only_the_stages_that_run():
    broken = ["pretrain.no_such_key=1", "evaluate.max_prompts=-5"]
    config, _ = load_config("tiny", broken, RECIPE, until="ingest")
    assert config.ingest.enabled
    with pytest.raises(ConfigError, match=r"pretrain.no_such_key"):
        load_config("tiny", broken, RECIPE)
    with pytest.raises(ConfigError, match=r"pretrain.no_such_key"):
        load_config("tiny", broken, RECIPE, until="pretrain")
    with pytest.raises(ConfigError, match="no_such_stage"):  # a typo'd section is still refused
        load_config("tiny", ["no_such_stage.x=1"], RECIPE, until="ingest")


def test_decontaminate_without_an_evaluation_set_fails_at_load_time(tmp_path):
    pipeline = Pipeline("t", [Node(ingest), Node(decontaminate, {"documents": "ingest.documents"})])
    path = tmp_path / "c.yaml"
    path.write_text(f"ingest:\n  paths: [{tmp_path}/x.warc]\n")
    with pytest.raises(ConfigError, match=r"decontaminate.extra_eval_paths"):
        load_config(str(path), [], pipeline)
    load_config(str(path), ["decontaminate.extra_eval_paths=[/evals.jsonl]"], pipeline)
    load_config(str(path), ["decontaminate.enabled=false"], pipeline)


def test_ingest_without_a_source_fails_at_load_time():
    with pytest.raises(ConfigError, match=r"ingest.paths"):
        load_config("tiny", ["world.enabled=false"], RECIPE, until="ingest")


def test_pretrain_seq_len_beyond_the_context_fails_at_load_time():
    with pytest.raises(ConfigError, match=r"pretrain.seq_len"):
        load_config("tiny", ["pretrain.seq_len=100000"], RECIPE)
