"""Decontamination: drop documents that share long word n-grams with the pipeline's evaluation sets.

A model evaluated on questions it saw in pretraining scores too well, so the GPT-3 paper and later
recipes remove training documents that overlap the evaluation data. We index every word n-gram
(n = 13 by default, as GPT-3) of every evaluation item and drop a document that contains at least
`min_matches` of them, recording which items it matched (`contaminated_with` on the dropped rows).

Normalisation, the same on both sides: Unicode NFKC, lower-case, words = runs of letters and digits
(`\\w+`), so punctuation and spacing never hide a match ("Answer: B) Arin" == "answer b arin").

Evaluation sets:
- the `benchmark` input: the world stage's `knowledge` artifact; its `benchmark.jsonl` holds one
  multiple-choice item per line (id, question, choices, answer_index, answer), rendered exactly as
  `BenchmarkItem.render()` prints it -- question, lettered choices, answer -- which is also what a
  quiz page that leaked the item shows;
- `extra_eval_paths`: further JSONL files (local paths or URLs), e.g. held-out test prompts. A record
  in the benchmark shape is rendered the same way; any other record contributes its `text_fields`
  (strings, lists of strings, or chat `messages`), joined by newlines. Its id is its `id` field or
  `<file name>:<line number>`.
An item with fewer than n words cannot be matched by n-grams and is skipped (counted): matching short
texts whole would drop every page that asks a common question.

Memory: the index holds one 64-bit key per distinct eval n-gram (about 100 bytes each in a Python
dict), e.g. ~70 MB for a 10k-item benchmark of ~70 words per item. Each Ray task builds it once from
the eval files (they are small next to the corpus) instead of receiving it through the object store;
that also lets the keys be Python's own (per-process) tuple hash, the fastest to compute.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import fsspec
import xxhash

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.stage import StageContext, stage
from components.data.decontaminate_config import SPEC, DecontaminateConfig
from components.data.documents import (
    Block,
    documents_artifacts,
    filter_documents,
    load_labels,
    precision_recall,
)
from components.data.pii import log_samples, scrub
from components.io.documents import Document, iter_documents, list_shards, ratio, read_documents

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WORDS = re.compile(r"\w+")


# --- normalisation and eval items -----------------------------------------------------------------


def normalise_words(text: str) -> list[str]:
    """NFKC, lower-case, punctuation stripped: the words n-grams are made of."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORDS.findall(text.lower())


def ngram_keys(words: list[str], n: int) -> Iterator[int]:
    """A key per word n-gram: Python's hash of the word tuple, computed in C. String hashes differ
    between processes (PYTHONHASHSEED), so keys are only compared with an index built in the same
    process -- which is why every task builds its own index."""
    return map(hash, zip(*(words[i:] for i in range(n)), strict=False))


def render_item(record: dict, text_fields: Iterable[str] = ()) -> str:
    """The text of one eval record: a multiple-choice item as `BenchmarkItem.render()` prints it,
    anything else as its text fields joined by newlines."""
    choices = record.get("choices")
    if isinstance(record.get("question"), str) and isinstance(choices, list) and "answer_index" in record:
        options = "; ".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))
        k = int(record["answer_index"])
        return f"Question: {record['question']}\nChoices: {options}.\nAnswer: {LETTERS[k]}) {choices[k]}"
    parts: list[str] = []
    for name in text_fields:
        value = record.get(name)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for x in value:
                if isinstance(x, str):
                    parts.append(x)
                elif isinstance(x, dict) and isinstance(x.get("content"), str):
                    parts.append(x["content"])  # chat messages: [{role, content}]
    return "\n".join(parts)


@dataclass(frozen=True)
class EvalSource:
    """One JSONL file of eval items: a URI in the artifact store or any fsspec path. The content
    digest makes a cached index follow an edited file."""

    uri: str
    name: str
    digest: str


def _digest(uri: str) -> str:
    h = xxhash.xxh3_128()
    with fsspec.open(uri, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def eval_sources(
    config: DecontaminateConfig, inputs: dict[str, Artifact], store: ArtifactStore
) -> list[EvalSource]:
    """The eval files, checked before any work starts (a missing file is a config error)."""
    sources: list[EvalSource] = []
    benchmark = inputs.get("benchmark")
    if benchmark is not None:
        for name in config.benchmark_files:
            uri = store.join(benchmark.uri, name)
            if not store.exists(uri):
                raise ConfigError(
                    f"decontaminate.benchmark_files: {name} is not in the benchmark input {benchmark.uri}"
                )
            sources.append(EvalSource(uri, name, _digest(uri)))
    for path in config.extra_eval_paths:
        fs, _ = fsspec.core.url_to_fs(path)
        if not fs.exists(path):
            raise ConfigError(f"decontaminate.extra_eval_paths: {path} does not exist")
        sources.append(EvalSource(path, posixpath.basename(path.rstrip("/")), _digest(path)))
    if not sources:
        raise ConfigError(
            "decontaminate has no evaluation set: wire its `benchmark` input (the world stage's knowledge), "
            "set decontaminate.extra_eval_paths, or switch the stage off (decontaminate.enabled=false)"
        )
    return sources


def read_eval_items(sources: Iterable[EvalSource], text_fields: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(item id, text) of every eval record."""
    text_fields = list(text_fields)
    for source in sources:
        with fsspec.open(source.uri, "r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{source.uri}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise ConfigError(f"{source.uri}:{lineno}: expected a JSON object per line")
                item_id = str(record.get("id") or f"{source.name}:{lineno}")
                yield item_id, render_item(record, text_fields)


@dataclass
class NgramIndex:
    """Hash of every eval n-gram -> the items it occurs in."""

    n: int
    items: list[str] = field(default_factory=list)
    grams: dict[int, int | tuple[int, ...]] = field(default_factory=dict)  # hash -> item index(es)
    too_short: list[str] = field(default_factory=list)

    def add(self, item_id: str, text: str) -> None:
        words = normalise_words(text)
        if len(words) < self.n:
            self.too_short.append(item_id)
            return
        k = len(self.items)
        self.items.append(item_id)
        for h in set(ngram_keys(words, self.n)):
            seen = self.grams.get(h)
            # One int for the common case (an n-gram of one item) keeps the index small.
            if seen is None:
                self.grams[h] = k
            elif isinstance(seen, int):
                if seen != k:
                    self.grams[h] = (seen, k)
            elif k not in seen:
                self.grams[h] = (*seen, k)

    def match(self, text: str) -> tuple[int, list[str]]:
        """(distinct eval n-grams the text contains, ids of the items they come from)."""
        hits = set(ngram_keys(normalise_words(text), self.n)) & self.grams.keys()
        items: set[int] = set()
        for h in hits:
            found = self.grams[h]
            items.update((found,) if isinstance(found, int) else found)
        return len(hits), sorted(self.items[i] for i in items)


def build_index(sources: Iterable[EvalSource], n: int, text_fields: Iterable[str]) -> NgramIndex:
    index = NgramIndex(n)
    for item_id, text in read_eval_items(sources, text_fields):
        index.add(item_id, text)
    return index


@functools.lru_cache(maxsize=2)
def _cached_index(sources: tuple[EvalSource, ...], n: int, text_fields: tuple[str, ...]) -> NgramIndex:
    """One index per worker process, whatever the number of shards it handles."""
    return build_index(sources, n, text_fields)


# --- the block and the stage ----------------------------------------------------------------------


class DecontaminationBlock(Block):
    """Drops a document sharing >= min_matches eval n-grams; the matched item ids go on the row."""

    name = "decontaminate"

    def __init__(self, index: NgramIndex, min_matches: int):
        self.index = index
        self.min_matches = min_matches
        self.counters: Counter = Counter()

    def process(self, doc: Document) -> str | None:
        text = doc.get("text")
        if not isinstance(text, str) or not text:
            return None
        matches, items = self.index.match(text)
        if matches < self.min_matches:
            if matches:
                self.counters["documents_below_min_matches"] += 1
            return None
        doc["contaminated_with"] = items
        doc["contamination_ngrams"] = matches
        self.counters["matched_ngrams"] += matches
        return "contaminated"


def _make_blocks(sources: tuple[EvalSource, ...], config: DecontaminateConfig) -> list[Block]:
    index = _cached_index(sources, config.ngram, tuple(config.text_fields))
    return [DecontaminationBlock(index, config.min_matches)]


def _dropped_docs(ctx: StageContext) -> Iterator[Document]:
    dropped = ctx.output_uri("dropped")
    for reason in ctx.store.listdir(dropped):
        for shard in list_shards(ctx.store, ctx.store.join(dropped, reason)):
            yield from read_documents(ctx.store, ctx.store.join(dropped, reason, shard))


def decontamination_truth(
    entering: Iterable[str], removed: dict[str, list[str]], labels: dict[str, dict]
) -> dict[str, float | None]:
    """Document- and item-level precision/recall against the labels' `contaminated_with`, over the
    labelled documents that entered the stage (`entering` URLs; `removed`: url -> matched item ids).
    A recall with no leaked item to find, or a precision with nothing removed, is None."""
    actual = {u for u in entering if u in labels and labels[u].get("contaminated_with")}
    predicted = {u for u in removed if u in labels}
    metrics = {f"documents_{k}": v for k, v in precision_recall(predicted, actual).items()}
    true_items = sum(len(set(labels[u]["contaminated_with"])) for u in actual)
    found = sum(len(set(removed[u]) & set(labels[u]["contaminated_with"])) for u in predicted & actual)
    claimed = sum(len(set(removed[u])) for u in predicted)
    metrics["items_recall"] = ratio(found, true_items)
    metrics["items_precision"] = ratio(found, claimed)
    return metrics


@stage(SPEC)
def decontaminate(
    ctx: StageContext, config: DecontaminateConfig, inputs: dict[str, Artifact]
) -> dict[str, Artifact]:
    """Drop documents that share 13-word sequences with the evaluation sets; report what was removed."""
    documents = inputs["documents"]
    sources = tuple(eval_sources(config, inputs, ctx.store))
    # Built here first: a bad eval file fails now, not in a shard task (and in-process runs reuse it).
    index = _cached_index(sources, config.ngram, tuple(config.text_fields))
    if not index.items:
        raise ConfigError(
            f"decontaminate: the eval sets hold no item of >= {config.ngram} words "
            f"({len(index.too_short)} shorter ones)"
        )
    ctx.log.info(
        "eval index: %d items, %d distinct %d-grams, %d items too short",
        len(index.items),
        len(index.grams),
        config.ngram,
        len(index.too_short),
    )
    ctx.log_metrics(
        {
            "eval_items": len(index.items),
            "eval_ngrams": len(index.grams),
            "eval_items_too_short": len(index.too_short),
        }
    )
    stats = filter_documents(ctx, documents, functools.partial(_make_blocks, sources, config), desc="n-grams")
    ctx.log_metrics(stats.metrics())

    removed: dict[str, list[str]] = {}
    per_item: Counter = Counter()
    samples: list[Document] = []
    for doc in _dropped_docs(ctx):
        removed[doc["url"]] = list(doc["contaminated_with"])
        per_item.update(doc["contaminated_with"])
        if len(samples) < config.samples:
            samples.append(doc)
    ctx.tracker.log_dict(
        {
            "documents_removed": len(removed),
            "items_matched": len(per_item),
            "documents_per_item": dict(sorted(per_item.items())),
            "documents": {scrub(url): ids for url, ids in sorted(removed.items())},
        },
        "decontamination/removed.json",
    )
    if samples:
        log_samples(ctx, samples, "decontaminated")
    headline: dict[str, float] = {
        "documents_out": stats.documents_out,
        "documents_contaminated": len(removed),
        "eval_items_matched": len(per_item),
    }
    labels = load_labels(ctx.store, inputs.get("labels"))
    if labels:
        entering = (d["url"] for d in iter_documents(ctx.store, documents.uri, columns=["url"]))
        truth = decontamination_truth(entering, removed, labels)
        ctx.log_metrics({f"truth.{k}": v for k, v in truth.items()})
        headline.update(
            contamination_precision=truth["documents_precision"],
            contamination_recall=truth["documents_recall"],
        )
    ctx.report(**headline)
    return documents_artifacts(ctx, stats)
