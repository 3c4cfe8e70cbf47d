"""The `world` stage: its crawl and knowledge artifacts, metrics, caching and the learnability warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from components.core.stage import RunEnv, StageRecord, run_stage
from components.world.benchmark import benchmark_items
from components.world.crawl import (
    REFERENCE_FILE,
    CrawlConfig,
    KnowledgeBase,
    KnowledgeConfig,
    WorldConfig,
    build_knowledge,
    reference_articles,
    world,
)

SMALL_KB = KnowledgeConfig(countries=4, cities_per_country=2, people=8, unknown_entities=6)


def small_crawl(**overrides: Any) -> CrawlConfig:
    """A few hundred pages (like the pipeline's smoke config): seconds to generate."""
    values: dict[str, Any] = {
        "seed": 11,
        "pages": 400,
        "warc_files": 3,
        "knowledge": SMALL_KB,
        "leaked_pages": 3,
        "benchmark_size": 60,
    }
    return CrawlConfig(**(values | overrides))


def env_for(tmp_path: Path, tracking_uri: str) -> RunEnv:
    store = str(tmp_path / "store")
    return RunEnv(run_id="t", store=store, tracking_uri=tracking_uri, experiment="world-test")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> dict[str, Any]:
    """One run of the stage, shared by the tests that only look at what it produced."""
    tmp_path = tmp_path_factory.mktemp("world")
    config = WorldConfig(crawl=small_crawl())
    env = env_for(tmp_path, tracking_uri)
    record = run_stage(world, config, {}, env)
    return {"config": config, "env": env, "record": record}


def test_outputs_hold_the_crawl_and_the_knowledge(ran: dict[str, Any]) -> None:
    record: StageRecord = ran["record"]
    assert record.status == "done"
    crawl, knowledge = record.outputs["crawl"], record.outputs["knowledge"]

    crawl_dir = Path(crawl.uri)
    warcs = [f"crawl-{k:05d}.warc.gz" for k in range(3)]
    # knowledge.json moved out: the crawl directory is WARCs and their labels, nothing else.
    assert sorted(p.name for p in crawl_dir.iterdir()) == [*warcs, "labels.jsonl"]
    assert crawl.kind == "warc"
    assert crawl.meta == {"pages": 400, "warc_files": 3, "labelled": True}
    assert len(read_jsonl(crawl_dir / "labels.jsonl")) == 400

    knowledge_dir = Path(knowledge.uri)
    assert sorted(p.name for p in knowledge_dir.iterdir()) == [
        "benchmark.jsonl",
        "knowledge.json",
        "reference.jsonl",
    ]
    assert knowledge.kind == "knowledge"
    assert crawl.digest.startswith("xxh128:") and knowledge.digest.startswith("xxh128:")


def test_knowledge_round_trips_and_matches_the_seed(ran: dict[str, Any]) -> None:
    cfg: CrawlConfig = ran["config"].crawl
    text = (Path(ran["record"].outputs["knowledge"].uri) / "knowledge.json").read_text(encoding="utf-8")
    kb = KnowledgeBase.from_json(text)
    assert kb.to_json() == text
    assert kb == build_knowledge(cfg.seed, cfg.knowledge)
    meta = ran["record"].outputs["knowledge"].meta
    assert meta["entities"] == len(kb.entities()) and meta["facts"] == len(kb.facts())
    assert meta["unknown_entities"] == len(kb.unknown_entities())


def test_reference_articles_are_the_knowledge_as_encyclopedia_text(ran: dict[str, Any]) -> None:
    cfg: CrawlConfig = ran["config"].crawl
    knowledge_dir = Path(ran["record"].outputs["knowledge"].uri)
    kb = KnowledgeBase.from_json((knowledge_dir / "knowledge.json").read_text(encoding="utf-8"))
    rows = read_jsonl(knowledge_dir / REFERENCE_FILE)
    expected = reference_articles(kb, cfg.reference_articles_per_entity, ran["env"].seed)
    assert [row["text"] for row in rows] == expected
    assert len(rows) == cfg.reference_articles_per_entity * len(kb.entities())


def test_reference_articles_name_every_entity_and_no_unknown_one() -> None:
    kb = build_knowledge(0, KnowledgeConfig(countries=2, cities_per_country=1, people=2, unknown_entities=1))
    articles = reference_articles(kb, per_entity=2, seed=0)
    assert len(articles) == 2 * len(kb.entities()) == 12
    assert articles == reference_articles(kb, per_entity=2, seed=0)
    for entity in kb.entities():
        assert sum(entity.name in a for a in articles) >= 2
    assert all(entity.name not in " ".join(articles) for entity in kb.unknown_entities())


def test_benchmark_is_the_seeded_items(ran: dict[str, Any]) -> None:
    cfg: CrawlConfig = ran["config"].crawl
    knowledge_dir = Path(ran["record"].outputs["knowledge"].uri)
    kb = KnowledgeBase.from_json((knowledge_dir / "knowledge.json").read_text(encoding="utf-8"))
    expected = benchmark_items(kb, cfg.benchmark_seed, cfg.benchmark_size)
    rows = read_jsonl(knowledge_dir / "benchmark.jsonl")
    assert len(rows) == len(expected) == ran["record"].outputs["knowledge"].meta["benchmark_items"] > 0
    for row, item in zip(rows, expected, strict=True):
        assert row == {
            "id": item.id,
            "question": item.question,
            "choices": list(item.choices),
            "answer_index": item.answer_index,
            "answer": item.answer,
        }
        assert row["choices"][row["answer_index"]] == row["answer"]
    # The leaked quiz pages quote items of exactly this benchmark: decontamination has something to find.
    labels = read_jsonl(Path(ran["record"].outputs["crawl"].uri) / "labels.jsonl")
    leaked = {i for label in labels for i in label["contaminated_with"]}
    assert leaked and leaked <= {row["id"] for row in rows}


def test_headline_and_tracked_metrics(ran: dict[str, Any], tracking_uri: str) -> None:
    record: StageRecord = ran["record"]
    labels = read_jsonl(Path(record.outputs["crawl"].uri) / "labels.jsonl")
    kb = KnowledgeBase.from_json(
        (Path(record.outputs["knowledge"].uri) / "knowledge.json").read_text(encoding="utf-8")
    )

    def pages(category: str) -> float:
        return float(sum(1 for x in labels if x["category"] == category))

    assert record.metrics == {
        "pages": 400.0,
        "facts": float(len(kb.facts())),
        "entities": float(len(kb.entities())),
        "junk_pages": pages("junk"),
        "duplicate_pages": pages("duplicate"),
        "pii_pages": float(sum(1 for x in labels if x["pii"])),
        "leaked_pages": pages("leaked"),
        "hostile_pages": pages("hostile"),
    }
    assert all(record.metrics[k] > 0 for k in record.metrics)

    run = MlflowClient(tracking_uri).get_run(record.mlflow_run_id)
    metrics = run.data.metrics
    assert metrics["by_category.good"] == pages("good")
    assert metrics["by_language.en"] == sum(1 for x in labels if x["language"] == "en")
    assert metrics["by_junk_class.spam"] == sum(1 for x in labels if x["junk_class"] == "spam")
    assert metrics["min_english_pages_per_entity"] >= 2
    assert not any(k.startswith("warc_files") for k in metrics)  # the list of names is not a metric
    artifacts = [a.path for a in MlflowClient(tracking_uri).list_artifacts(record.mlflow_run_id)]
    assert "world_stats.json" in artifacts


def test_second_run_is_cached_with_the_same_digests(ran: dict[str, Any]) -> None:
    again = run_stage(world, ran["config"], {}, ran["env"])
    assert again.status == "cached"
    assert again.key == ran["record"].key
    assert {n: a.digest for n, a in again.outputs.items()} == {
        n: a.digest for n, a in ran["record"].outputs.items()
    }
    assert again.metrics == ran["record"].metrics


def test_unlearnable_world_still_runs_but_warns(
    tmp_path: Path, tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 60 pages for 20 entities: some entity gets a single good English page.
    config = WorldConfig(crawl=small_crawl(seed=3, pages=60, warc_files=1, leaked_pages=1, benchmark_size=20))
    with caplog.at_level(logging.WARNING, logger="gptrecipe.world"):
        record = run_stage(world, config, {}, env_for(tmp_path, tracking_uri))
    assert record.status == "done" and record.metrics["pages"] == 60
    warnings = [r.getMessage() for r in caplog.records if r.name == "gptrecipe.world"]
    assert len(warnings) == 1
    assert "min_english_pages_per_entity is 1 (< 2)" in warnings[0]
    assert "for 20 entities" in warnings[0]
