"""The command line: config errors, the DAG view, and a whole run of the smoke config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.recipe import RECIPE
from tests.smoke_run import cli_env, local_overrides, run_smoke

REPO = Path(__file__).resolve().parents[2]


def test_bad_value_names_key_and_file(capsys):
    assert main(["run", "smoke", "world.crawl.pages=many"]) == 2
    err = capsys.readouterr().err
    assert "smoke.yaml" in err and "world.crawl.pages=many" in err
    assert "world.crawl.pages: Input should be a valid integer" in err


def test_unknown_key_names_key_and_file(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("inherit: smoke\nworld:\n  crawl:\n    pagez: 10\n")
    assert main(["stages", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "world.crawl.pagez: unknown key" in err


def test_overrides_after_options_are_overrides(capsys):
    # Refused before any work: the override after --until reached the config check.
    assert main(["run", "smoke", "--until", "world", "world.crawl.pagez=1"]) == 2
    assert "world.crawl.pagez: unknown key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "smoke", "--until", "world", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_unknown_stage_and_missing_config(capsys):
    assert main(["run", "smoke", "--until", "nope"]) == 2
    assert "unknown stage 'nope'; stages are: world, ingest" in capsys.readouterr().err
    assert main(["run", "no-such-config"]) == 2
    assert "no config named 'no-such-config' (known: " in capsys.readouterr().err


def test_inherit_and_override_precedence():
    config, source = load_config("smoke", ["world.crawl.pages=123"], RECIPE)
    assert config.pipeline.name == "smoke"  # smoke's own value over tiny's
    assert config.world.crawl.warc_files == 2  # from smoke.yaml
    assert config.world.crawl.pages == 123  # the override wins
    assert "with overrides world.crawl.pages=123" in source


@pytest.mark.parametrize("name", ["smoke", "tiny", "tiny-copy", "gpt2-124m", "reward-hacking"])
def test_shipped_configs_validate(name):
    config, _ = load_config(name, [], RECIPE)
    assert config.pipeline.name == name


def test_gpt2_config_is_gpt2_small():
    config, _ = load_config("gpt2-124m", [], RECIPE)
    shape = config.pretrain
    assert (shape.block, shape.n_layer, shape.n_head, shape.n_embd, shape.context_length) == (
        "gpt2",
        12,
        12,
        768,
        1024,
    )
    tokens_per_step = shape.scaling.num_workers * shape.batch_size * shape.grad_accum * shape.context_length
    assert tokens_per_step == 2**19  # GPT-2's 0.5M-token batch


def test_stages_shows_the_dag(tmp_path, capsys):
    assert main(["stages", "smoke", *local_overrides(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert list(lines) == RECIPE.names
    assert "will run" in lines["world"] and "world" in lines["ingest"].split("will run")[1]


@pytest.mark.slow
def test_smoke_run_then_fully_cached(smoke_run):
    """The README's promise in miniature: a run, then a rerun that reuses every stage much faster."""
    summary = smoke_run.summary
    assert {name: s["status"] for name, s in summary["stages"].items()} == dict.fromkeys(RECIPE.names, "done")
    rerun = run_smoke(smoke_run.where)
    again = rerun.summary
    assert {name: s["status"] for name, s in again["stages"].items()} == dict.fromkeys(RECIPE.names, "cached")
    for name in RECIPE.names:
        assert again["stages"][name]["outputs"] == summary["stages"][name]["outputs"]
        assert again["stages"][name]["cache_key"] == summary["stages"][name]["cache_key"]
    print(f"first run {smoke_run.seconds:.1f}s, cached run {rerun.seconds:.1f}s")

    stages_out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "stages", "smoke", *smoke_run.overrides],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert all(" cached " in line for line in stages_out.stdout.splitlines()[2:])

    client = MlflowClient(smoke_run.tracking_uri)
    parent = client.get_run(again["mlflow"]["parent_run_id"])
    assert parent.data.tags["gptrecipe.config"].endswith(
        "smoke.yaml with overrides " + " ".join(smoke_run.overrides)
    )
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["gptrecipe.stage"] for r in children) == sorted(RECIPE.names)
    assert all(r.data.tags["gptrecipe.cache"] == "hit" for r in children)


def test_preflight_refuses_before_any_work(tmp_path, capsys):
    """A reference file for model_quality that does not exist is refused before the run starts."""
    warcs = tmp_path / "crawl.warc.gz"
    warcs.write_bytes(b"")
    missing = tmp_path / "good.jsonl"
    args = ["run", "smoke", "world.enabled=false", f"ingest.paths=[{warcs}]", *local_overrides(tmp_path)]
    assert main([*args, f"model_quality.reference_path={missing}"]) == 2
    err = capsys.readouterr().err
    assert "model_quality.reference_path" in err and "does not exist" in err and str(missing) in err
    assert not (tmp_path / "runs").exists()  # refused before a run started


def test_a_reader_that_stops_early_is_no_error(tmp_path):
    """`gptrecipe stages tiny | head -1`: the pipe closes before the table is written; no traceback."""
    cmd = [sys.executable, "-m", "pipelines.cli", "stages", "tiny", f"pipeline.store={tmp_path / 'store'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"BrokenPipeError" not in stderr and b"Traceback" not in stderr
