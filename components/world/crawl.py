"""The tiny world's synthetic Common-Crawl-like crawl: gzipped WARC files plus a ground-truth label file.

Every data-curation stage gets something real to do and a truth to be scored against:

- good pages about the knowledge base's entities, in English and four other languages, in several page
  styles wrapped in realistic site chrome (nav, sidebar, cookie banner, footer);
- junk pages of ten classes (spam, keyword stuffing, boilerplate only, lorem ipsum, blocklisted domain,
  banned URL word, short, gibberish, repetitive, code/JSON);
- exact duplicates (same main text at another URL) and near duplicates (word edits at set rates), labelled
  with the true word-5-gram Jaccard similarity to their original;
- PII (e-mails, phones, public IPv4/IPv6) and look-alike decoys (private IPs, versions, dates, prices);
- quiz pages that leak benchmark items verbatim (contamination);
- hostile records for robust ingest: binary bodies, legacy/wrong/undeclared charsets, malformed HTML,
  empty bodies, non-HTML content, redirects, 404s, an optional huge page; plus request/metadata records.

This module holds the `world` stage: it runs `generate_crawl` (`crawl_generator.py`, which decides which
pages the crawl has) and writes the knowledge base, the benchmark and model_quality's reference text
beside the crawl. Its config is `crawl_config.py`; the pieces live by name: `pages.py` (composing and
rendering a page), `noise.py` (junk text, near-duplicate edits, PII) and `warc.py` (WARC records and
labels).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from components.core.artifacts import Artifact
from components.core.config import flatten
from components.core.stage import StageContext, stage
from components.world.benchmark import benchmark_items
from components.world.crawl_config import SPEC, CrawlConfig, WorldConfig
from components.world.crawl_generator import generate_crawl
from components.world.knowledge import KnowledgeBase, KnowledgeConfig, build_knowledge
from components.world.languages import language_pack
from components.world.pages import compose_entity_page, shingle_jaccard
from components.world.warc import write_atomic

__all__ = [
    "CrawlConfig",
    "KnowledgeBase",
    "KnowledgeConfig",
    "WorldConfig",
    "benchmark_items",
    "build_knowledge",
    "generate_crawl",
    "shingle_jaccard",
    "world",
]


# --- the world stage -----------------------------------------------------------------------------


REFERENCE_FILE = "reference.jsonl"  # in the knowledge artifact; model_quality reads it by this name


def reference_articles(kb: KnowledgeBase, per_entity: int, seed: int) -> list[str]:
    """Encyclopedia articles about every entity of the knowledge base, composed with the crawl's own
    English sentence templates (facts, related facts, neutral filler): the tiny world's Wikipedia, the
    good text that `model_quality` learns to recognise."""
    pack = language_pack("en")
    style = pack.style("encyclopedia")
    rng = random.Random(f"{seed}/model_quality/reference")
    articles = []
    for entity in kb.entities():
        for _ in range(per_entity):
            _, blocks, _ = compose_entity_page(kb, entity, pack, style, rng)
            articles.append("\n".join(text for _, text in blocks))
    return articles


def write_world(
    ctx: StageContext, cfg: CrawlConfig, crawl_dir: Path, knowledge_dir: Path
) -> tuple[dict, KnowledgeBase, list[dict], list]:
    """Generate the crawl into `crawl_dir` and the knowledge base, the benchmark and the reference
    articles (`REFERENCE_FILE`, one JSON object with a `text` per line) into `knowledge_dir`."""
    stats = generate_crawl(cfg, crawl_dir)
    # The knowledge base is its own artifact, so that stages which need only the facts (conversations,
    # evaluation) do not depend on the pages, and the crawl directory holds only WARCs and their labels.
    os.replace(crawl_dir / "knowledge.json", knowledge_dir / "knowledge.json")
    kb = KnowledgeBase.from_json((knowledge_dir / "knowledge.json").read_text(encoding="utf-8"))
    # Split on "\n" only: labels keep non-ASCII text raw, and str.splitlines() would also break a line
    # at a U+2028 inside a page's main text.
    labels = [
        json.loads(line)
        for line in (crawl_dir / "labels.jsonl").read_text(encoding="utf-8").split("\n")
        if line
    ]
    if stats["min_english_pages_per_entity"] < 2:
        # Still a valid crawl (smoke runs use small ones), but a fact stated on fewer than two English
        # pages is not learnable, so the model's fact scores will mean little.
        english_good = sum(1 for x in labels if x["category"] == "good" and x["language"] == "en")
        ctx.log.warning(
            "min_english_pages_per_entity is %d (< 2): %d good English pages for %d entities, so some "
            "facts are not learnable; raise crawl.pages or shrink crawl.knowledge",
            stats["min_english_pages_per_entity"],
            english_good,
            len(kb.entities()),
        )

    items = benchmark_items(kb, cfg.benchmark_seed, cfg.benchmark_size)
    benchmark = "".join(
        json.dumps(
            {
                "id": it.id,
                "question": it.question,
                "choices": list(it.choices),
                "answer_index": it.answer_index,
                "answer": it.answer,
            },
            ensure_ascii=False,
        )
        + "\n"
        for it in items
    )
    write_atomic(knowledge_dir / "benchmark.jsonl", benchmark)
    articles = reference_articles(kb, cfg.reference_articles_per_entity, ctx.seed)
    reference = "".join(json.dumps({"text": a}, ensure_ascii=False) + "\n" for a in articles)
    write_atomic(knowledge_dir / REFERENCE_FILE, reference)
    return stats, kb, labels, items


@stage(SPEC)
def world(ctx: StageContext, config: WorldConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Generate the tiny world: an entity knowledge base and a labelled WARC crawl about it."""
    cfg = config.crawl
    with ctx.output_dir("crawl") as crawl_dir, ctx.output_dir("knowledge") as knowledge_dir:
        stats, kb, labels, items = write_world(ctx, cfg, crawl_dir, knowledge_dir)

    by_category = stats["by_category"]
    ctx.report(
        pages=stats["pages"],
        facts=len(kb.facts()),
        entities=len(kb.entities()),
        junk_pages=by_category.get("junk", 0),
        duplicate_pages=by_category.get("duplicate", 0),
        pii_pages=sum(1 for x in labels if x["pii"]),
        leaked_pages=by_category.get("leaked", 0),
        hostile_pages=by_category.get("hostile", 0),
    )
    # by_category.good, by_junk_class.spam, by_language.en, ...; the list of WARC names is not a metric.
    numbers = {
        k: v for k, v in flatten(stats).items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    ctx.log_metrics(numbers)
    ctx.tracker.log_dict(stats, "world_stats.json")
    return {
        "crawl": ctx.artifact(
            "crawl", kind="warc", pages=stats["pages"], warc_files=len(stats["warc_files"]), labelled=True
        ),
        "knowledge": ctx.artifact(
            "knowledge",
            kind="knowledge",
            entities=len(kb.entities()),
            facts=len(kb.facts()),
            unknown_entities=len(kb.unknown_entities()),
            benchmark_items=len(items),
        ),
    }
