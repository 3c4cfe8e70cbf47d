"""The `extract` stage: HTML -> main text with trafilatura, favouring precision (as FineWeb does), or
with resiliparse's main-content extractor (as DCLM does; `extractor: resiliparse`).

Each document's `html` becomes `text` (the `html` column is dropped from what is kept). A document
that yields no text is dropped with the kind of failure as its reason, and keeps its HTML so it can
be inspected (`dropped/extract.<reason>/`):

    empty         nothing was extracted: an empty body, or a page that is all navigation/boilerplate
    too_large     the HTML is above `max_html_mb` and is not parsed at all
    timeout       the extraction used more than `time_limit_s` of CPU time
    parse_error   not parseable as HTML (binary junk, plain text), or the extractor raised

Speed: extraction is the slowest step of a FineWeb-style pipeline. trafilatura's `fast` mode skips
its fallback extractors (readability, jusText), which run on every page and compare their output
with the main one: about 3x faster, and on the tiny world it loses no main text while
boilerplate-only pages come out empty instead of as a pile of nav links (see `ExtractConfig.fast`).

Which extractor. On real pages (Debian's PostgreSQL, Git and Debian Handbook HTML,
tests/bench/extractor_quality.py) resiliparse is about 10x faster and keeps more of the main text
(86% of the words of the pages' own main-content markup against 58%; both 99.8% precise), where
trafilatura's precision-first heuristics return nothing for a sixth of the pages (tables of contents,
short sections). On the tiny world, whose labels the demo and its tests score, trafilatura is
better: resiliparse keeps the navigation of boilerplate-only pages (Gopher's quality filter then
drops all of them, as too_few_words) and loses lines of list-like fact pages (91% of main-text lines against
100%). So trafilatura stays the default; for a crawl of real pages, resiliparse is the better choice.

The time limit: neither extractor has one. A CPU-time interval timer (`setitimer(ITIMER_PROF)`) raises
`TimeLimitExceeded` inside the worker, between two Python bytecodes of the extraction. It derives
from BaseException so that trafilatura's own `except Exception` blocks cannot swallow it. CPU time,
not wall time, so that a busy machine does not time pages out (and the same page gives the same
answer on every run). A signal cannot interrupt one long C call (lxml parsing a huge page, or
resiliparse's extraction, all of it C), which is what the size cap bounds: parsing a 2 MB page takes
tens of milliseconds.
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.data.documents import Block, dropped_urls, filter_documents, filter_outputs, load_labels
from components.data.extract_config import SPEC, ExtractConfig
from components.data.junk_truth import junk_truth
from components.data.pii import log_dropped_samples
from components.io.documents import Document, iter_documents, ratio

# --- the per-document time limit -----------------------------------------------------------------


class TimeLimitExceeded(BaseException):
    """Raised inside an extraction that ran past its time limit. A BaseException, so that the
    extractor's own `except Exception` blocks let it through."""


_armed = threading.local()


def _on_timer(signum: int, frame: Any) -> None:
    if getattr(_armed, "on", False):
        raise TimeLimitExceeded


def timer_available() -> bool:
    """Signals reach only the main thread; elsewhere the time limit cannot be enforced."""
    return threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeLimitExceeded in the body once it has used `seconds` of CPU time (the process's).

    Any earlier SIGPROF handler and timer are restored afterwards. Outside the main thread, or with
    `seconds=None`, the body runs without a limit.
    """
    if not seconds or not timer_available():
        yield
        return
    previous = signal.signal(signal.SIGPROF, _on_timer)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        _armed.on = True
        try:
            yield
        finally:
            # Disarm first: a signal that lands after this point is ignored, one that lands before
            # it is a real timeout and still propagates (through the outer finally).
            _armed.on = False
            signal.setitimer(signal.ITIMER_PROF, 0)
    finally:
        signal.signal(signal.SIGPROF, previous)
        if old_delay:  # someone else's timer (a profiler) was running: give it back
            signal.setitimer(signal.ITIMER_PROF, old_delay, old_interval)


# --- extraction ----------------------------------------------------------------------------------

ExtractFn = Callable[[str], str | None]


def trafilatura_extractor(config: ExtractConfig) -> ExtractFn:
    """html -> text (None when nothing is extracted); raises ParseError when it is not HTML."""
    import trafilatura

    # It warns about every page it discards ("discarding data: None"); those are counted instead.
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    options = {
        "favor_precision": config.favor_precision,
        "fast": config.fast,
        "include_comments": config.include_comments,
        "include_tables": config.include_tables,
        "deduplicate": config.deduplicate,
        "include_images": False,
        "include_links": False,
        "with_metadata": False,
        "output_format": "txt",
    }

    def extract(html: str) -> str | None:
        tree = trafilatura.load_html(html)
        if tree is None:
            raise ParseError("not parseable as HTML")
        return trafilatura.extract(tree, **options)

    return extract


_TAG = re.compile(r"<[A-Za-z!/]")


def resiliparse_extractor(config: ExtractConfig) -> ExtractFn:
    """html -> text with resiliparse's main-content heuristics (as DCLM), block layout kept as lines
    (the line-based quality rules need them), list items as '• item', no alt texts, links or forms."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    skip = [] if config.include_tables else ["table"]

    def extract(html: str) -> str | None:
        # An HTML5 parser makes a <body> of anything; refuse text without a tag, as trafilatura does.
        if "html" not in html[:50].lower() and not _TAG.search(html, 0, 4096):
            raise ParseError("no HTML tag in the first 4 KiB")
        tree = HTMLTree.parse(html)
        if tree.body is None:
            raise ParseError("no <body> in the HTML")
        return extract_plain_text(
            tree,
            preserve_formatting=True,
            main_content=True,
            list_bullets=True,
            alt_texts=False,
            links=False,
            form_fields=False,
            noscript=False,
            comments=config.include_comments,
            skip_elements=skip,
        )

    return extract


EXTRACTORS: dict[str, Callable[[ExtractConfig], ExtractFn]] = {
    "trafilatura": trafilatura_extractor,
    "resiliparse": resiliparse_extractor,
}


class ParseError(Exception):
    """The input is not HTML that lxml can build a tree from."""


def _utf8_size_over(text: str, limit: int) -> bool:
    """len(text.encode()) > limit, without encoding the common small page (1..4 bytes per char)."""
    if len(text) * 4 <= limit:
        return False
    if len(text) > limit:
        return True
    return len(text.encode("utf-8", "surrogatepass")) > limit


class Extractor(Block):
    """Fills `text` from `html`; drops with the failure kind. `extract_fn` can be injected (tests)."""

    name = "extract"

    def __init__(self, config: ExtractConfig, extract_fn: ExtractFn | None = None):
        self.config = config
        self.extract_fn = extract_fn or EXTRACTORS[config.extractor](config)
        self.max_bytes = int(config.max_html_mb * 2**20)
        self.counters: Counter = Counter()

    def process(self, doc: Document) -> str | None:
        html = doc.get("html")
        if isinstance(html, bytes):  # not from ingest, which decodes; never fatal
            html = html.decode("utf-8", errors="replace")
        if not isinstance(html, str) or not html.strip():
            return "empty"
        self.counters["html_chars"] += len(html)
        if _utf8_size_over(html, self.max_bytes):
            return "too_large"
        if self.config.time_limit_s and not timer_available():
            self.counters["time_limit_unenforced"] += 1
        try:
            with time_limit(self.config.time_limit_s):
                text = self.extract_fn(html)
        except TimeLimitExceeded:
            return "timeout"
        except (ParseError, ValueError):  # lxml's refusals are ValueErrors
            return "parse_error"
        except Exception as e:  # anything else trafilatura raises: one bad page, not a failed shard
            self.counters[f"parse_error.{type(e).__name__}"] += 1
            return "parse_error"
        if not text or not text.strip():
            return "empty"
        doc["text"] = text.strip()
        return None


def make_blocks(config: ExtractConfig) -> list[Block]:
    """Module-level so Ray tasks can build the block from the config."""
    return [Extractor(config)]


# --- ground truth --------------------------------------------------------------------------------

_BULLET = re.compile(r"^[-*•]\s+")


def _norm_line(line: str) -> str:
    """Compare lines without layout: trafilatura writes list items as '- item'."""
    return " ".join(_BULLET.sub("", line.strip()).split())


def text_truth(main_text: str, text: str | None) -> tuple[float | None, int, int]:
    """(fraction of main-text lines found in `text`, chars of `text` in lines that are not main text,
    chars of `text`). A line counts as main text when it is one, or a whole-word part of one. A page
    without main text has no recall (None)."""
    main_lines = [n for n in map(_norm_line, main_text.splitlines()) if n]
    if not main_lines:
        return None, 0, 0
    if not text:
        return 0.0, 0, 0
    out_lines = [n for n in map(_norm_line, text.splitlines()) if n]
    flat = " ".join(out_lines)
    found = sum(1 for line in main_lines if line in flat)
    padded = [f" {m} " for m in main_lines]
    main_set = set(main_lines)
    leaked = sum(
        len(line) for line in out_lines if line not in main_set and not any(f" {line} " in m for m in padded)
    )
    return ratio(found, len(main_lines)), leaked, sum(len(line) for line in out_lines)


def extract_truth(
    labels: dict[str, dict], entering: list[str], kept: dict[str, str], dropped: dict[str, str]
) -> dict[str, float | None]:
    """Boilerplate-only pages dropped as empty; main text recovered and boilerplate leaked on the
    pages that have an article (everything but junk); plus the generic junk scores of the drops.
    A score over no page (no boilerplate page, no article, no extracted text) is None."""
    known = [u for u in entering if u in labels]
    boilerplate = [u for u in known if labels[u].get("junk_class") == "boilerplate"]
    caught = sum(1 for u in boilerplate if dropped.get(u) == "extract.empty")
    recalls: list[float] = []
    leaked, chars = 0, 0
    for url in known:
        label = labels[url]
        if label.get("category") == "junk" or not (label.get("main_text") or "").strip():
            continue
        recall, leak, n = text_truth(label["main_text"], kept.get(url))
        if recall is None:  # no main-text line after normalising: nothing to recover
            continue
        recalls.append(recall)
        leaked += leak
        chars += n
    out = {
        "truth.boilerplate_recall": ratio(caught, len(boilerplate)),
        "truth.main_text_recall": ratio(sum(recalls), len(recalls)),
        "truth.main_text_full_pages": ratio(sum(1 for r in recalls if r == 1.0), len(recalls)),
        "truth.leaked_chars_fraction": ratio(leaked, chars),
        "truth.article_pages": len(recalls),
    }
    return out | junk_truth(labels, entering, dropped)


# --- the stage -----------------------------------------------------------------------------------


@stage(SPEC)
def extract(ctx: StageContext, config: ExtractConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Extract each page's main text (trafilatura or resiliparse); drop pages that yield none, by kind."""
    stats = filter_documents(
        ctx, inputs["documents"], functools.partial(make_blocks, config), drop_columns=("html",)
    )
    failures = stats.documents_in - stats.documents_out
    outputs = filter_outputs(ctx, stats, documents_out=stats.documents_out, failures=failures)
    if stats.extra.get("time_limit_unenforced"):
        ctx.log.warning("extract ran outside a main thread: the per-page time limit was not enforced")
    labels = load_labels(ctx.store, inputs.get("labels"))
    if labels is not None:
        store = ctx.store
        entering = [d["url"] for d in iter_documents(store, inputs["documents"].uri, columns=["url"])]
        # All columns: a shard whose every page was dropped has no `text` column to select.
        kept = {d["url"]: d.get("text") for d in iter_documents(store, outputs["documents"].uri)}
        truth = extract_truth(labels, entering, kept, dropped_urls(store, outputs["dropped"]))
        ctx.log_metrics(truth)
        ctx.report(
            main_text_recall=truth["truth.main_text_recall"],
            boilerplate_recall=truth["truth.boilerplate_recall"],
        )
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason)
    return outputs
