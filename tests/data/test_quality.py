"""The `quality` stage: four blocks in one pass, drops kept per reason, C4's rewrite persisted, truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from components.core.artifacts import Artifact, ArtifactStore
from components.core.stage import RunEnv, run_stage
from components.data.junk_truth import junk_truth
from components.data.quality import QualityConfig, make_blocks, quality
from components.io.documents import write_documents
from components.world.crawl import CrawlConfig, generate_crawl

ARTICLE = """Velmora Harbour
The old harbour of Velmora was built in the twelfth century, when traders came to sell salt.
Today the harbour is a quiet place with small fishing boats, cafés and a long promenade along the water.[3]
We use cookies to improve your experience on this site.
Most visitors arrive by train from the capital, which takes about two hours through green hills and farmland.
The museum near the old customs house tells the story of the town and its sailors, and it is open every day.
In summer, concerts are held on the pier, and families walk along the shore until late in the evening."""

PAGES = {
    "https://good.example/harbour": ("good", None, ARTICLE),
    "https://junk.example/repeat": (
        "junk",
        "repetitive",
        "\n".join(["Best prices guaranteed every day."] * 40),
    ),
    "https://junk.example/short": ("junk", "short", "Coming soon."),
    "https://junk.example/lorem": (
        "junk",
        "lorem_ipsum",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12,
    ),
    "https://junk.example/json": (
        "junk",
        "code_or_json",
        "\n".join(f'{{"id": {i}, "name": "item number {i}", "value": {i * 7}}}' for i in range(30)),
    ),
}


def run(tmp_path: Path, env: RunEnv, config: QualityConfig):
    store = ArtifactStore(tmp_path / "in")
    docs = [{"id": f"d{i}", "url": u, "text": t} for i, (u, (_, _, t)) in enumerate(PAGES.items())]
    write_documents(store, store.uri("docs", "part-00000.parquet"), docs[:3])
    write_documents(store, store.uri("docs", "part-00001.parquet"), docs[3:])
    crawl = tmp_path / "crawl"
    crawl.mkdir(exist_ok=True)
    (crawl / "labels.jsonl").write_text(
        "".join(
            json.dumps({"url": u, "category": c, "junk_class": j}) + "\n" for u, (c, j, _) in PAGES.items()
        )
    )
    inputs = {
        "documents": Artifact(uri=store.uri("docs"), kind="documents", digest="d"),
        "labels": Artifact(uri=str(crawl), kind="crawl", digest="c"),
    }
    return run_stage(quality, config, inputs, env, force=True)


def dropped_reasons(record) -> dict[str, str]:
    root = Path(record.outputs["dropped"].uri)
    return (
        {row["url"]: row["drop_reason"] for row in pq.read_table(root).to_pylist()}
        if any(root.iterdir())
        else {}
    )


def test_stage_filters_rewrites_and_scores(tmp_path, tracking_uri, run_env):
    record = run(tmp_path, run_env, QualityConfig())
    kept = pq.read_table(record.outputs["documents"].uri).to_pylist()
    assert [d["url"] for d in kept] == ["https://good.example/harbour"]
    # C4 removed the heading (too few words), the cookie line and the citation marker.
    text = kept[0]["text"]
    assert "cookies" not in text and "[3]" not in text and not text.startswith("Velmora Harbour")
    assert text.startswith("The old harbour of Velmora was built")
    assert dropped_reasons(record) == {
        "https://junk.example/repeat": "gopher_repetition.dup_line_frac",
        "https://junk.example/short": "gopher_quality.too_few_words",
        "https://junk.example/lorem": "gopher_repetition.top_3gram_char_frac",
        "https://junk.example/json": "gopher_repetition.top_3gram_char_frac",
    }
    assert record.metrics["junk_precision"] == 1.0 and record.metrics["junk_recall"] == 1.0
    assert record.metrics["good_dropped"] == 0 and record.metrics["documents_out"] == 1
    metrics = MlflowClient(tracking_uri).get_run(record.mlflow_run_id).data.metrics
    assert metrics["truth.junk_recall.repetitive"] == 1.0
    assert metrics["truth.gopher_repetition.junk_recall.lorem_ipsum"] == 1.0
    assert metrics["truth.gopher_quality.junk_recall.lorem_ipsum"] == 0.0
    assert metrics["count.c4.lines_removed.policy"] == 1
    assert metrics["dropped.gopher_repetition.top_3gram_char_frac"] == 2


def test_switched_off_blocks_hand_their_documents_on(tmp_path, run_env):
    config = QualityConfig.model_validate(
        {"gopher_repetition": {"enabled": False}, "gopher_quality": {"enabled": False}}
    )
    record = run(tmp_path, run_env, config)
    assert dropped_reasons(record) == {
        "https://junk.example/repeat": "fineweb.dup_line_char_frac",
        "https://junk.example/short": "c4.too_few_sentences",  # C4 removed its only line
        "https://junk.example/lorem": "c4.lorem_ipsum",
        "https://junk.example/json": "c4.curly_bracket",
    }


def test_junk_truth_per_block_adds_up():
    labels = {
        "a": {"category": "junk", "junk_class": "spam"},
        "b": {"category": "junk", "junk_class": "spam"},
        "c": {"category": "good", "junk_class": None},
        "d": {"category": "duplicate", "junk_class": None},
        "e": {"category": "hostile", "junk_class": "empty"},
    }
    truth = junk_truth(
        labels, ["a", "b", "c", "d", "e", "unlabelled"], {"a": "x.r1", "c": "x.r2", "e": "y.r"}
    )
    assert truth["truth.junk_precision"] == pytest.approx(2 / 3)
    assert truth["truth.junk_recall"] == pytest.approx(2 / 3)
    assert truth["truth.junk_recall.spam"] == 0.5 and truth["truth.junk_recall.empty"] == 1.0
    assert truth["truth.good_dropped"] == 1 and truth["truth.dropped.good"] == 1
    assert truth["truth.x.junk_precision"] == 0.5 and truth["truth.x.junk_recall.spam"] == 0.5
    assert truth["truth.y.junk_recall.spam"] == 0.0 and truth["truth.y.junk_recall.empty"] == 1.0
    assert truth["truth.labelled_in"] == 5


def test_junk_truth_with_nothing_to_check_has_no_scores():
    """No junk entered and nothing was dropped: no precision and no recall (None), not a perfect 1.0."""
    labels = {"a": {"category": "good", "junk_class": None}, "b": {"category": "good", "junk_class": None}}
    truth = junk_truth(labels, ["a", "b"], {})
    assert truth["truth.junk_precision"] is None and truth["truth.junk_recall"] is None
    assert truth["truth.junk_in"] == 0 and truth["truth.good_dropped"] == 0
    # a good page dropped, still no junk: a real precision of 0, still no recall
    truth = junk_truth(labels, ["a", "b"], {"a": "x.r"})
    assert truth["truth.junk_precision"] == 0.0 and truth["truth.x.junk_precision"] == 0.0
    assert truth["truth.junk_recall"] is None and truth["truth.x.junk_recall"] is None


@pytest.mark.slow  # generates the full tiny crawl (a few seconds)
def test_tiny_world_english_main_text(tmp_path):
    """On the labels' main text of the English pages (what language ID lets through), the heuristics
    drop no good page and only junk."""
    generate_crawl(CrawlConfig(), tmp_path)
    labels = {}
    for line in (tmp_path / "labels.jsonl").read_text().splitlines():
        label = json.loads(line)
        labels[label["url"]] = label
    docs = [{"url": u, "text": x["main_text"]} for u, x in labels.items() if x["language"] == "en"]
    dropped = {}
    alive = docs
    for block in make_blocks(QualityConfig()):
        survivors = []
        for doc in alive:
            reason = block.process(doc)
            if reason is None:
                survivors.append(doc)
            else:
                dropped[doc["url"]] = f"{block.name}.{reason}"
        alive = survivors
    truth = junk_truth(labels, [d["url"] for d in docs], dropped)
    assert truth["truth.good_dropped"] == 0 and truth["truth.junk_precision"] == 1.0
    for junk_class in ("keyword_stuffing", "repetitive", "short", "banned_url_word"):
        assert truth[f"truth.junk_recall.{junk_class}"] == 1.0
    assert Counter(dropped.values())["gopher_repetition.dup_line_frac"] == 45  # every repetitive page
