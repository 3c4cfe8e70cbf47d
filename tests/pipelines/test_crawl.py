"""The `crawl` config: your own WARC files end to end, with nothing but `ingest.paths` set. Stages whose
data you did not give (post-training, model_quality, decontaminate) are skipped, each cause said once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.core.config import ConfigError
from components.world.crawl import CrawlConfig, generate_crawl
from components.world.knowledge import KnowledgeConfig
from pipelines.cli import main
from pipelines.config import CONFIG_DIR, load_config, plan_inputs
from pipelines.recipe import RECIPE

REPO = Path(__file__).resolve().parents[2]
REAL_PAGES = REPO / "tests" / "realpages" / "debian-docs.warc.gz"
# conversations and every stage that needs what it makes, but evaluate (which measures any model it gets).
POST_TRAINING = [n for n in RECIPE.names if n == "conversations" or "conversations" in RECIPE.ancestors(n)]
POST_TRAINING.remove("evaluate")


def crawl_plan(paths: list[str], *overrides: str):
    config, _ = load_config("crawl", [f"ingest.paths={json.dumps(paths)}", *overrides], RECIPE)
    return plan_inputs(config, RECIPE)


def test_crawl_skips_what_it_has_no_data_for(tmp_path):
    warc = tmp_path / "a.warc.gz"
    warc.write_bytes(b"")
    plan = crawl_plan([str(warc)])
    assert sorted(plan.skipped) == sorted([*POST_TRAINING, "model_quality", "decontaminate"])
    lines = plan.skip_lines()
    assert len(lines) == 3  # one per cause, not one per stage
    post = next(line for line in lines if line.startswith("skipping conversations"))
    assert post == (
        f"skipping conversations and what needs it ({', '.join(POST_TRAINING[1:])}): "
        "its input 'knowledge' comes from world.knowledge, and world is off; it runs with "
        "conversations.sft_path, conversations.preferences_path, conversations.prompts_path instead"
    )
    assert {"sft", "reward_model", "ppo", "grpo", "export", "register_model"} <= set(POST_TRAINING)


def test_stages_shows_what_is_skipped_and_why(tmp_path, capsys):
    warc = tmp_path / "a.warc.gz"
    warc.write_bytes(b"")
    args = ["stages", "crawl", f"ingest.paths=[{warc}]", f"pipeline.store={tmp_path / 'store'}"]
    assert main(args) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["sft"].split()[1] == "skipped"
    assert rows["sft"].endswith(
        "skipped: its input 'sft' comes from conversations.sft, and conversations is skipped"
    )
    assert "skipped: its input 'reference' comes from world.knowledge" in rows["model_quality"]
    assert rows["pretrain"].split()[1:3] == ["will", "run"]


def test_crawl_runs_what_you_give_files_for(tmp_path):
    warc = tmp_path / "a.warc.gz"
    warc.write_bytes(b"")
    files = {name: tmp_path / f"{name}.jsonl" for name in ("sft", "preferences", "prompts", "good", "evals")}
    for path in files.values():
        path.write_text('{"text": "x"}\n')
    plan = crawl_plan(
        [str(warc)],
        *(f"conversations.{k}_path={files[k]}" for k in ("sft", "preferences", "prompts")),
        f"model_quality.reference_path={files['good']}",
        f"decontaminate.extra_eval_paths=[{files['evals']}]",
    )
    assert plan.skipped == {}
    # Only some of the three post-training files: refused, naming the missing keys.
    with pytest.raises(ConfigError, match=r"set conversations.preferences_path, conversations.prompts_path"):
        crawl_plan([str(warc)], f"conversations.sft_path={files['sft']}")
    # No WARC files: refused before anything runs.
    with pytest.raises(ConfigError, match=r"ingest has no input: set ingest.paths"):
        load_config("crawl", [], RECIPE)


def small_crawl(out: Path) -> list[Path]:
    """A tiny-world crawl of 240 pages in one WARC file: the user's own data, as far as the pipeline knows
    (its labels stay behind: nothing wires them in)."""
    config = CrawlConfig(
        seed=5,
        pages=240,
        warc_files=1,
        knowledge=KnowledgeConfig(countries=3, cities_per_country=2, people=6, unknown_entities=3),
        leaked_pages=0,
        benchmark_size=20,
    )
    generate_crawl(config, out)
    return sorted(out.glob("*.warc.gz"))


@pytest.mark.slow
def test_crawl_end_to_end_on_a_directory_of_real_warc_files(tmp_path):
    """`gptrecipe run crawl 'ingest.paths=[DIR]'` with no other switch, on real pages (Debian's documentation,
    tests/realpages): curation, tokenizer, a pretrained model, evaluate on it; post-training skipped with
    one line that says why."""
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    shutil.copy(REAL_PAGES, crawl / REAL_PAGES.name)
    # The crawl config, with the smoke config's model and evaluation sizes so that it runs in seconds.
    smoke = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    config = tmp_path / "my-crawl.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inherit": str(CONFIG_DIR / "crawl.yaml"),
                "pipeline": {
                    "store": str(tmp_path / "store"),
                    "runs_dir": str(tmp_path / "runs"),
                    "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                },
                **{k: smoke[k] for k in ("pretrain", "evaluate")},
            }
        )
    )
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config), f"ingest.paths=[{crawl}]"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text())
    status = {name: s["status"] for name, s in summary["stages"].items()}
    ran = ["ingest", "url_filter", "extract", "language", "quality", "dedup", "pii", "curation_report"]
    ran += ["train_tokenizer", "tokenize", "pretrain", "evaluate"]
    assert {name: status[name] for name in ran} == dict.fromkeys(ran, "done")
    assert status["world"] == "skipped" and "reason" not in summary["stages"]["world"]  # switched off
    for name in [*POST_TRAINING, "model_quality", "decontaminate"]:
        assert status[name] == "skipped", name
    assert summary["stages"]["conversations"]["reason"].startswith("its input 'knowledge' comes from world")
    assert summary["stages"]["sft"]["reason"] == "its input 'sft' comes from conversations.sft, and " + (
        "conversations is skipped"
    )
    # Said once, at the start: one line for all of post-training.
    assert done.stderr.count("skipping conversations and what needs it (sft, reward_model, ppo") == 1
    assert "[skipped] sft" not in done.stderr

    model = Path(summary["stages"]["pretrain"]["outputs"]["model"])
    assert (model / "model.safetensors").stat().st_size > 0 and (model / "config.json").exists()
    assert summary["stages"]["pretrain"]["metrics"]["val_loss"] > 0
    funnel = summary["stages"]["curation_report"]["metrics"]
    assert funnel["documents_initial"] == 242  # every page of the fixture (tests/realpages)
    assert 0 < funnel["documents_final"] < funnel["documents_initial"]
    # model_quality and decontaminate passed their documents on: dedup saw what quality kept.
    assert summary["stages"]["tokenize"]["outputs"]["tokens"]
