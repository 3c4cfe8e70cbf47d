"""Extraction: good, malformed, boilerplate-only, empty, huge and binary pages; the time limit; the stage."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from pathlib import Path

import pytest

from components.core.artifacts import ArtifactStore
from components.core.stage import RunEnv, run_stage
from components.data.extract import (
    ExtractConfig,
    Extractor,
    TimeLimitExceeded,
    _utf8_size_over,
    extract,
    extract_truth,
    text_truth,
    time_limit,
)
from components.io.documents import iter_documents
from components.world.noise import break_markup
from components.world.pages import Chrome, render_html

ARTICLE = [
    ("h1", "The old harbour of Velmora"),
    (
        "p",
        "Velmora is a small port city on the northern coast, known for its fish market and its lighthouse.",
    ),
    (
        "p",
        "The harbour was rebuilt after the great storm, and today ferries leave for the islands twice a day.",
    ),
    (
        "p",
        "Visitors walk along the promenade in the evening, when the fishing boats come back.",
    ),
]


def page(blocks=ARTICLE, seed: int = 0) -> str:
    links = [("Arin Velmo", "/wiki/arin-velmo"), ("Ejon", "/wiki/ejon")]
    return render_html(
        "Velmora", blocks, Chrome("www.example.example", "en", links, ads=2), random.Random(seed)
    )


def run(html, **config) -> tuple[str | None, dict]:
    doc = {"id": "1", "url": "https://x.example/", "html": html}
    reason = Extractor(ExtractConfig(**config)).process(doc)
    return reason, doc


def test_good_page_keeps_the_article_and_leaves_the_chrome():
    reason, doc = run(page())
    assert reason is None
    for _, line in ARTICLE:
        assert line in doc["text"]
    for chrome in ("cookies", "Skip to content", "Newsletter", "All rights reserved"):
        assert chrome not in doc["text"]
    recall, leaked, _ = text_truth("\n".join(t for _, t in ARTICLE), doc["text"])
    assert recall == 1.0 and leaked == 0


def test_malformed_html_still_extracts():
    broken = break_markup(page())
    assert "</p>" not in broken and "</html>" not in broken
    reason, doc = run(broken)
    assert reason is None
    assert ARTICLE[1][1] in doc["text"] and ARTICLE[3][1] in doc["text"]


def test_boilerplate_only_page_is_empty():
    assert run(page(blocks=None))[0] == "empty"


@pytest.mark.parametrize("html", ["", "   \n\t ", None])
def test_empty_document(html):
    assert run(html)[0] == "empty"


def test_binary_and_non_html_bodies_are_parse_errors():
    rng = random.Random(1)
    assert run(rng.randbytes(4000).decode("latin-1"))[0] == "parse_error"
    assert run("just a line of plain text, no markup at all")[0] == "parse_error"
    reason, doc = run(page().encode())  # bytes where a string belongs: decoded, not fatal
    assert reason is None and ARTICLE[1][1] in doc["text"]


def test_extractor_exception_is_a_counted_parse_error():
    def explode(html):
        raise KeyError("boom")

    block = Extractor(ExtractConfig(), extract_fn=explode)
    assert block.process({"html": "<p>x</p>"}) == "parse_error"
    assert block.counters["parse_error.KeyError"] == 1


def test_size_cap_at_its_boundary():
    cap = int(0.01 * 2**20)  # max_html_mb=0.01
    base = page()
    at_cap = base + " " * (cap - len(base.encode()))
    assert len(at_cap.encode()) == cap
    assert run(at_cap, max_html_mb=0.01)[0] is None  # exactly at the cap: parsed
    assert run(at_cap + " ", max_html_mb=0.01)[0] == "too_large"  # one byte over: not parsed


def test_size_cap_counts_utf8_bytes():
    assert not _utf8_size_over("é" * 50, 100)  # 100 bytes
    assert _utf8_size_over("é" * 51, 100)  # 102 bytes, 51 chars
    assert not _utf8_size_over("a" * 25, 100)
    assert _utf8_size_over("a" * 101, 100)


def test_huge_page_is_too_large_and_not_parsed():
    huge = "<html><body>" + "<p>word word word</p>" * 1_000_000 + "</body></html>"  # about 21 MB
    started = time.process_time()
    assert run(huge)[0] == "too_large"
    assert time.process_time() - started < 0.5


# --- the time limit --------------------------------------------------------------------------------


def busy(html: str) -> str:
    while True:  # a slow extraction, deterministically: it never ends on its own
        sum(range(1000))


def stubborn(html: str) -> str:
    while True:  # an extractor that swallows every Exception cannot swallow the time limit
        with contextlib.suppress(Exception):
            sum(range(1000))


@pytest.mark.parametrize("extract_fn", [busy, stubborn])
def test_time_limit_interrupts_a_slow_extraction(extract_fn):
    block = Extractor(ExtractConfig(time_limit_s=0.05), extract_fn=extract_fn)
    started = time.process_time()
    assert block.process({"html": "<p>slow</p>"}) == "timeout"
    assert 0.04 < time.process_time() - started < 1.0


def test_time_limit_interrupts_real_trafilatura():
    # ~4 MB of tiny paragraphs: trafilatura needs seconds of CPU for it (a C-level parse of ~0.1 s).
    slow = "<html><body>" + "".join(f"<div><p>Line {i} of a long page.</p></div>" for i in range(100_000))
    slow += "</body></html>"
    started = time.process_time()
    assert run(slow, time_limit_s=0.2, max_html_mb=64)[0] == "timeout"
    assert time.process_time() - started < 1.5


def test_time_limit_restores_signal_state():
    before = signal.getsignal(signal.SIGPROF)
    with pytest.raises(TimeLimitExceeded), time_limit(0.02):
        busy("")
    assert signal.getsignal(signal.SIGPROF) is before
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    with time_limit(5.0):  # a fast body: no exception, and no timer left behind
        pass
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_text_truth_counts_leaked_lines():
    main = "First line of the article.\nSecond line of it."
    recall, leaked, _ = text_truth(
        main, "First line of the article.\nAccept all cookies?\n- Second line of it."
    )
    assert recall == 1.0 and leaked == len("Accept all cookies?")
    assert text_truth(main, "First line of the article.")[0] == 0.5
    assert text_truth(main, None) == (0.0, 0, 0)
    assert text_truth("  \n", "Some text.") == (None, 0, 0)  # no main text: nothing to recover


def test_extract_truth_with_nothing_to_check_has_no_scores():
    """No boilerplate-only page and no article page entered: those scores are None, not 1.0 (or 0.0)."""
    labels = {"j": {"category": "junk", "junk_class": "spam", "main_text": ""}}
    truth = extract_truth(labels, ["j"], {"j": "Buy now."}, {})
    for key in ("boilerplate_recall", "main_text_recall", "main_text_full_pages", "leaked_chars_fraction"):
        assert truth[f"truth.{key}"] is None, key
    assert truth["truth.article_pages"] == 0
    labels["g"] = {"category": "good", "junk_class": None, "main_text": "First line.\nSecond line."}
    truth = extract_truth(labels, ["j", "g"], {"j": "Buy now.", "g": "First line.\nMenu"}, {})
    assert truth["truth.main_text_recall"] == 0.5 and truth["truth.main_text_full_pages"] == 0.0
    assert truth["truth.leaked_chars_fraction"] == len("Menu") / len("First line.Menu")
    assert truth["truth.boilerplate_recall"] is None


# --- the stage -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_documents(tmp_path_factory, ingest_crawl) -> dict:
    _, crawl, documents = ingest_crawl(tmp_path_factory.mktemp("extractworld"), pages=400)
    return {"crawl": crawl, "documents": documents}


def test_stage_on_the_tiny_world(tmp_path: Path, tracking_uri: str, tiny_documents: dict):
    env = RunEnv(run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="extract")
    inputs = {"documents": tiny_documents["documents"], "labels": tiny_documents["crawl"]}
    record = run_stage(extract, ExtractConfig(), inputs, env)
    m = record.metrics
    assert m["boilerplate_recall"] == 1.0
    assert m["main_text_recall"] >= 0.99
    assert m["failures"] >= 1 and m["documents_out"] > 300
    store = ArtifactStore(env.store)
    kept = list(iter_documents(store, record.outputs["documents"].uri))
    assert kept and all("html" not in d and d["text"] for d in kept)
    dropped_uri = record.outputs["dropped"].uri
    assert store.listdir(dropped_uri) == ["extract.empty"]
    for doc in iter_documents(store, store.join(dropped_uri, "extract.empty")):
        assert doc["html"] and doc["drop_reason"] == "extract.empty"  # kept for inspection


# --- resiliparse ---------------------------------------------------------------------------------


def test_resiliparse_keeps_the_article_and_leaves_the_chrome():
    reason, doc = run(page(), extractor="resiliparse")
    assert reason is None
    assert [line for line in doc["text"].splitlines() if line] == [t for _, t in ARTICLE]


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("", "empty"),
        ("<html><head><title>only a title</title></head></html>", "empty"),
        ("\x00\x01binary\xff junk", "parse_error"),
        ("plain text that has no tag at all, " * 20, "parse_error"),
    ],
)
def test_resiliparse_failures_have_the_same_reasons_as_trafilatura(html, reason):
    assert run(html, extractor="resiliparse")[0] == reason
    assert run(html)[0] == reason


def test_resiliparse_tables_follow_include_tables():
    html = (
        "<html><body><main><p>A paragraph that is long enough to be the main content of this page.</p>"
        "<table><tr><td>the text of a cell</td></tr></table></main></body></html>"
    )
    assert "the text of a cell" not in run(html, extractor="resiliparse")[1]["text"]
    assert "the text of a cell" in run(html, extractor="resiliparse", include_tables=True)[1]["text"]


def test_unknown_extractor_is_refused():
    with pytest.raises(ValueError, match="extractor"):
        ExtractConfig(extractor="readability")
