"""Decontamination: 13-gram matching at its boundary, normalisation, eval-set reading, the stage with
its truth metrics, and the tiny world's leaked quiz pages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.stage import run_stage
from components.data.decontaminate import (
    DecontaminateConfig,
    DecontaminationBlock,
    EvalSource,
    NgramIndex,
    build_index,
    decontaminate,
    decontamination_truth,
    eval_sources,
    normalise_words,
    read_eval_items,
    render_item,
)
from components.io.documents import write_documents
from components.world.benchmark import benchmark_items
from components.world.crawl import CrawlConfig, generate_crawl
from components.world.knowledge import KnowledgeBase

# Twenty words that occur nowhere else in the tests' texts.
EVAL = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
    "papa quebec romeo sierra tango"
)
WORDS = EVAL.split()
FILLER = "the weather in the valley was mild and the river ran slowly past the mill"


def index_of(*texts: str, n: int = 13) -> NgramIndex:
    index = NgramIndex(n)
    for i, text in enumerate(texts):
        index.add(f"item{i}", text)
    return index


def doc_sharing(k: int, offset: int = 3) -> str:
    """A document that shares exactly k consecutive eval words (no longer run)."""
    return f"{FILLER} {' '.join(WORDS[offset : offset + k])} {FILLER}"


@pytest.mark.parametrize(("shared", "dropped"), [(12, False), (13, True), (17, True)])
def test_13_gram_boundary(shared, dropped):
    block = DecontaminationBlock(index_of(EVAL), min_matches=1)
    doc = {"url": "u", "text": doc_sharing(shared)}
    assert (block.process(doc) == "contaminated") is dropped
    if dropped:
        assert doc["contaminated_with"] == ["item0"] and doc["contamination_ngrams"] == shared - 12
    else:
        assert "contaminated_with" not in doc


@pytest.mark.parametrize(("shared", "dropped"), [(13, False), (14, True)])
def test_min_matches_boundary(shared, dropped):
    block = DecontaminationBlock(index_of(EVAL), min_matches=2)
    assert (block.process({"text": doc_sharing(shared)}) == "contaminated") is dropped


def test_ngram_size_is_configurable():
    assert index_of(EVAL, n=8).match(doc_sharing(8))[0] == 1
    assert index_of(EVAL, n=8).match(doc_sharing(7))[0] == 0


def test_case_punctuation_and_unicode_are_normalised():
    shouting = "ALPHA, Bravo! charlie; (delta) echo... FOXTROT -- golf: hotel? india “juliet” kilo—lima mike."
    assert index_of(EVAL).match(shouting) == (1, ["item0"])
    assert normalise_words("Answer: B) Arin's ＱＵＥＳＴＩＯＮ") == ["answer", "b", "arin", "s", "question"]
    # Spacing and line breaks are not words either.
    assert index_of(EVAL).match("\n".join(WORDS[:13])) == (1, ["item0"])


def test_matches_name_every_item_involved():
    other = "zulu yankee xray whiskey victor uniform tango sierra romeo quebec papa oscar november mike"
    index = index_of(EVAL, other)
    assert index.match(f"{EVAL} and then {other}") == (8 + 2, ["item0", "item1"])
    # An n-gram two items share counts once and names both.
    shared = index_of(EVAL, EVAL + " extra words")
    assert shared.match(EVAL) == (8, ["item0", "item1"])


def test_short_items_are_skipped_and_counted():
    index = index_of("what is the capital of velmora", EVAL)
    assert index.too_short == ["item0"] and index.items == ["item1"]


def test_render_item_is_the_benchmark_render(tmp_path):
    generate_crawl(CrawlConfig(pages=300, leaked_pages=1), tmp_path)
    kb = KnowledgeBase.from_json((tmp_path / "knowledge.json").read_text())
    for item in benchmark_items(kb, 0, 5):
        record = {
            "id": item.id,
            "question": item.question,
            "choices": list(item.choices),
            "answer_index": item.answer_index,
            "answer": item.answer,
        }
        assert render_item(record) == item.render()


def test_extra_eval_files(tmp_path):
    path = tmp_path / "heldout.jsonl"
    rows = [
        {"id": "q1", "prompt": EVAL},
        {
            "messages": [
                {"role": "user", "content": "zulu yankee xray"},
                {"role": "assistant", "content": "whiskey"},
            ]
        },
        {},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    source = EvalSource(str(path), "heldout.jsonl", "d")
    items = list(read_eval_items([source], ["prompt", "messages"]))
    assert items == [("q1", EVAL), ("heldout.jsonl:2", "zulu yankee xray\nwhiskey"), ("heldout.jsonl:3", "")]
    index = build_index([source], 13, ["prompt", "messages"])
    assert index.items == ["q1"] and len(index.too_short) == 2
    path.write_text("not json\n")
    with pytest.raises(ConfigError, match=r"heldout.jsonl:1: not valid JSON"):
        build_index([source], 13, ["prompt"])


def test_eval_sources_are_checked_at_start(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ConfigError, match="has no evaluation set"):
        eval_sources(DecontaminateConfig(), {}, store)
    bench = Artifact(uri=str(tmp_path), kind="knowledge", digest="x")
    with pytest.raises(ConfigError, match=r"benchmark\.jsonl is not in the benchmark input"):
        eval_sources(DecontaminateConfig(), {"benchmark": bench}, store)
    with pytest.raises(ConfigError, match=r"missing\.jsonl does not exist"):
        eval_sources(DecontaminateConfig(extra_eval_paths=[str(tmp_path / "missing.jsonl")]), {}, store)


def test_truth_metrics():
    labels = {
        "a": {"contaminated_with": ["i1", "i2"]},
        "b": {"contaminated_with": ["i3"]},
        "c": {"contaminated_with": []},
    }
    removed = {"a": ["i1", "i9"], "c": ["i4"]}
    m = decontamination_truth(["a", "b", "c", "unlabelled"], removed, labels)
    assert m["documents_precision"] == 0.5 and m["documents_recall"] == 0.5
    assert m["items_recall"] == 1 / 3 and m["items_precision"] == 1 / 3


def test_truth_with_nothing_to_check_has_no_scores():
    """No leaked page entered and nothing was removed: no precision or recall (None), not 1.0."""
    labels = {"a": {"contaminated_with": []}, "b": {}}
    m = decontamination_truth(["a", "b"], {}, labels)
    for key in ("documents_precision", "documents_recall", "items_precision", "items_recall"):
        assert m[key] is None, key
    assert m["documents_predicted"] == 0 and m["documents_actual"] == 0
    m = decontamination_truth(["a", "b"], {"a": ["i1"]}, labels)  # a false alarm: real zeros
    assert m["documents_precision"] == 0.0 and m["items_precision"] == 0.0
    assert m["documents_recall"] is None and m["items_recall"] is None


# --- the stage --------------------------------------------------------------------------------


def _benchmark(path: Path) -> list[dict]:
    items = [
        {
            "id": "c1.capital",
            "question": "What is the capital of Velmora?",
            "choices": ["Arin", "Tolsk", "Brenna", "Quill"],
            "answer_index": 0,
            "answer": "Arin",
        },
        {
            "id": "p2.birth_year",
            "question": "In which year was Maren Oduya born?",
            "choices": ["1821", "1790", "1902", "1855"],
            "answer_index": 3,
            "answer": "1855",
        },
    ]
    path.mkdir(parents=True)
    (path / "benchmark.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    return items


def test_stage_drops_leaks_and_reports(tmp_path, tracking_uri, run_env):
    items = _benchmark(tmp_path / "knowledge")
    quiz = render_item(items[1]).upper().replace("\n", "  ")  # shouted, one line: still the same words
    pages = {
        "https://quiz.example/1": f"Test yourself!\n{render_item(items[0])}\nWell done.",
        "https://quiz.example/2": f"Quiz time. {quiz} See you next week.",
        "https://wiki.example/velmora": "Velmora is a country. What is the capital of Velmora? Arin, a port.",
        "https://wiki.example/maren": "Maren Oduya was born in 1855 in Tolsk and wrote about rivers.",
    }
    store = ArtifactStore(tmp_path / "in")
    docs = [{"id": f"d{i}", "url": u, "text": t} for i, (u, t) in enumerate(pages.items())]
    write_documents(store, store.uri("docs", "part-00000.parquet"), docs)
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    truth = {"https://quiz.example/1": ["c1.capital"], "https://quiz.example/2": ["p2.birth_year"]}
    (crawl / "labels.jsonl").write_text(
        "".join(json.dumps({"url": u, "contaminated_with": truth.get(u, [])}) + "\n" for u in pages)
    )
    inputs = {
        "documents": Artifact(uri=store.uri("docs"), kind="documents", digest="d"),
        "benchmark": Artifact(uri=str(tmp_path / "knowledge"), kind="knowledge", digest="k"),
        "labels": Artifact(uri=str(crawl), kind="warc", digest="c"),
    }
    env = run_env
    record = run_stage(decontaminate, DecontaminateConfig(), inputs, env)
    assert record.metrics["documents_contaminated"] == 2 and record.metrics["documents_out"] == 2
    assert record.metrics["contamination_precision"] == 1.0 and record.metrics["contamination_recall"] == 1.0
    kept = pq.read_table(record.outputs["documents"].uri).column("url").to_pylist()
    assert kept == ["https://wiki.example/velmora", "https://wiki.example/maren"]
    dropped = pq.read_table(Path(record.outputs["dropped"].uri) / "decontaminate.contaminated").to_pylist()
    assert {d["url"]: d["contaminated_with"] for d in dropped} == truth
    assert all(d["drop_reason"] == "decontaminate.contaminated" for d in dropped)

    client = MlflowClient(tracking_uri)
    path = client.download_artifacts(record.mlflow_run_id, "decontamination/removed.json", str(tmp_path))
    removed = json.loads(Path(path).read_text())
    assert removed["documents_removed"] == 2
    assert removed["documents_per_item"] == {"c1.capital": 1, "p2.birth_year": 1}
    metrics = client.get_run(record.mlflow_run_id).data.metrics
    assert metrics["truth.items_recall"] == 1.0 and metrics["eval_items"] == 2


@pytest.mark.slow  # generates the full tiny crawl (a few seconds)
def test_tiny_world_leaked_pages_are_found(tmp_path):
    """Every leaked quiz page found, with its exact items, and nothing else (labels' main text as input)."""
    generate_crawl(CrawlConfig(), tmp_path)
    kb = KnowledgeBase.from_json((tmp_path / "knowledge.json").read_text())
    index = NgramIndex(13)
    for item in benchmark_items(kb, 0, 200):
        index.add(item.id, item.render())
    labels = {}
    for line in (tmp_path / "labels.jsonl").read_text(encoding="utf-8").split("\n"):
        if line:
            label = json.loads(line)
            labels[label["url"]] = label
    block = DecontaminationBlock(index, min_matches=1)
    removed = {}
    for url, label in labels.items():
        doc = {"url": url, "text": label["main_text"]}
        if block.process(doc):
            removed[url] = doc["contaminated_with"]
    m = decontamination_truth(labels, removed, labels)
    assert m["documents_actual"] == 6
    assert m["documents_precision"] == 1.0 and m["documents_recall"] == 1.0
    assert m["items_precision"] == 1.0 and m["items_recall"] == 1.0
