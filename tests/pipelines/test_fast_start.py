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
from pipelines.config import load_config, plan_inputs
from pipelines.dag import Node, Pipeline
from pipelines.recipe import RECIPE

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "pyarrow",
    "mlflow",
    "ray",
    "datasketch",
    "trafilatura",
    "fasttext",
    "phonenumbers",
    "warcio",
)
# Stage modules (the code and its helpers, not the `*_config.py` declaration) that loading the recipe must
# not import.
STAGE_MODULES = (
    "components.data.url_filter",
    "components.data.extract",
    "components.data.language",
    "components.data.quality",
    "components.data.quality_rules",
    "components.data.documents",
    "components.data.model_quality",
    "components.data.pii",
    "components.data.decontaminate",
    "components.data.ingest",
    "components.data.curation_report",
    "components.tokenizer.train",
    "components.tokenizer.tokenize",
    "components.world.crawl",
)


def loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code`."""
    code += f"\nimport sys\nprint(*sorted(m for m in {modules!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()[-1].split()


def test_loading_the_tiny_config_imports_no_heavy_library():
    code = "from pipelines.config import load_config\nfrom pipelines.recipe import RECIPE\n"
    assert loaded_after(code + "load_config('tiny', [], RECIPE)", HEAVY) == []


def test_importing_the_recipe_imports_no_stage_code():
    assert loaded_after("import pipelines.recipe", HEAVY + STAGE_MODULES) == []
    curation = [name for name in RECIPE.nodes if f"components.data.{name}" in STAGE_MODULES]
    assert len(curation) == 9 and all(RECIPE.nodes[name].stage.fn is None for name in curation)


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


def test_decontaminate_without_an_evaluation_set_is_skipped_and_a_missing_file_refused(tmp_path):
    pipeline = Pipeline("t", [Node(ingest), Node(decontaminate, {"documents": "ingest.documents"})])
    path = tmp_path / "c.yaml"
    path.write_text(f"ingest:\n  paths: [{tmp_path}/x.warc]\n")
    config, _ = load_config(str(path), [], pipeline)
    assert plan_inputs(config, pipeline).skipped["decontaminate"].reason == (
        "nothing provides its input 'benchmark'; it runs with decontaminate.extra_eval_paths instead"
    )
    # A missing eval file is refused when the config loads, not after the curation has run.
    with pytest.raises(ConfigError, match=r"decontaminate.extra_eval_paths: /no/evals.jsonl does not exist"):
        load_config(str(path), ["decontaminate.extra_eval_paths=[/no/evals.jsonl]"], pipeline)
    evals = tmp_path / "evals.jsonl"
    evals.write_text('{"question": "q"}\n')
    config, _ = load_config(str(path), [f"decontaminate.extra_eval_paths=[{evals}]"], pipeline)
    assert plan_inputs(config, pipeline).skipped == {}


def test_ingest_without_a_source_fails_at_load_time():
    with pytest.raises(ConfigError, match=r"ingest.paths"):
        load_config("tiny", ["world.enabled=false"], RECIPE, until="ingest")


def test_pretrain_seq_len_beyond_the_context_fails_at_load_time():
    with pytest.raises(ConfigError, match=r"pretrain.seq_len"):
        load_config("tiny", ["pretrain.seq_len=100000"], RECIPE)
