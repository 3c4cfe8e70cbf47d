"""The fastText good-vs-crawl classifier behind the `model_quality` stage: its text preprocessing,
training data, training, loading and scores, and the score histogram that cutoffs are read from.

Training runs in a fresh Python process each time. That is not optional: with the fastText build we
pin, a second `train_supervised` in the same process gives different weights (and can diverge to
NaN), while the first one in a process is byte-for-byte reproducible with one thread and a seed.
Loading and predicting are unaffected and run in-process.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import xxhash

from components.core.artifacts import ArtifactStore
from components.core.config import ConfigError
from components.io.documents import count_documents, iter_documents

LABEL_PREFIX = "__label__"

# --- text as the classifier sees it -------------------------------------------------------------

_PUNCTUATION = re.compile(r"([^\w\s])")
# List markers that extraction puts before list items ("- " from trafilatura): layout, not words.
_LIST_MARKER = re.compile(r"^[^\S\n]*(?:[-*•‣◦⁃●○▪■·–]|\d{1,3}[.)])[^\S\n]+", re.MULTILINE)


def classifier_text(text: str | None, max_chars: int, normalize: bool = True) -> str:
    """One line of text from the first `max_chars` characters. `normalize` judges words, not layout:
    list markers at line starts go, everything is lowercased, punctuation becomes tokens of its own.
    Whitespace (newlines included) always collapses to single spaces."""
    text = (text or "")[:max_chars]
    if normalize:
        text = _PUNCTUATION.sub(r" \1 ", _LIST_MARKER.sub("", text).lower())
    return " ".join(text.split())


# --- positives: the reference set ---------------------------------------------------------------


REFERENCE_FILE = "reference.jsonl"  # what the world stage writes into its knowledge artifact


def reference_from_artifact(store: ArtifactStore, uri: str) -> list[str]:
    """The reference articles of a `reference` artifact (`uri`: the artifact, or its reference.jsonl):
    one JSON object with a `text` per line. On the tiny world it is the world's `knowledge` artifact,
    whose encyclopedia articles the world stage renders (the tiny world's Wikipedia)."""
    path = uri if uri.endswith(".jsonl") else store.join(uri, REFERENCE_FILE)
    if not store.exists(path):
        raise ConfigError(f"model_quality: the reference artifact has no {REFERENCE_FILE} ({path})")
    with store.open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")  # not splitlines(): a U+2028 inside a text stays
    return [text for text in (json.loads(line)["text"] for line in lines if line.strip()) if text.strip()]


def read_reference_file(path: str, field: str) -> list[str]:
    """Documents of a user's reference file: JSONL (one object per line, text in `field`), Parquet
    (column `field`) or plain text (documents separated by blank lines); .gz/.zst compressed too."""
    import fsspec

    name = path.lower().removesuffix(".gz").removesuffix(".zst")
    where = f"model_quality.reference_path ({path})"
    try:
        with fsspec.open(path, "rb", compression="infer") as f:
            if name.endswith(".parquet"):
                table = pq.read_table(f)
                if field not in table.column_names:
                    raise ConfigError(f"{where}: no column {field!r} (columns: {table.column_names})")
                texts = table.column(field).to_pylist()
            elif name.endswith((".jsonl", ".json")):
                texts = []
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        texts.append(json.loads(line)[field])
                    except (ValueError, KeyError, TypeError):
                        raise ConfigError(
                            f"{where}: line {number} is not a JSON object with a {field!r} field"
                        ) from None
            else:
                texts = re.split(r"\n\s*\n", f.read().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ConfigError(f"{where}: no text found")
    return texts


# --- negatives: a seeded sample of the crawl ------------------------------------------------------


def sample_key(seed: int, doc_id: str) -> float:
    """A uniform number in [0, 1) per document and seed; a document is sampled when it is below p."""
    return xxhash.xxh3_64_intdigest(f"{seed}/{doc_id}".encode()) / 2**64


def sample_texts(store: ArtifactStore, uri: str, limit: int, seed: int) -> Iterator[str]:
    """Texts of about `limit` documents of a documents artifact, each kept with probability limit/n
    by a hash of its id: the same sample on every run, one shard in memory at a time."""
    n = count_documents(store, uri)
    p = min(1.0, limit / n) if n else 0.0
    taken = 0
    for doc in iter_documents(store, uri, columns=["id", "text"]):
        if taken < limit and doc.get("text") and sample_key(seed, str(doc["id"])) < p:
            taken += 1
            yield doc["text"]


def training_lines(examples: dict[str, list[str]], balance: bool, rng: random.Random) -> list[str]:
    """fastText's input: `__label__<label> <text>` lines, classes mixed (fastText reads in file order).
    `balance` repeats the smaller classes up to the largest one, so the prior is uniform."""
    if balance:
        size = max(len(texts) for texts in examples.values())
        examples = {k: (v * math.ceil(size / len(v)))[:size] if v else v for k, v in examples.items()}
    lines = [f"{LABEL_PREFIX}{label} {text}" for label, texts in examples.items() for text in texts]
    rng.shuffle(lines)
    return lines


# --- fastText in child processes ------------------------------------------------------------------

_TRAIN = """
import json, sys
import fasttext
args = json.loads(sys.argv[1])
model = fasttext.train_supervised(**args["params"])
model.save_model(args["output"])
"""

_PROBE = """
import json, sys
import fasttext
model = fasttext.load_model(sys.argv[1])
model.predict("a probe sentence", k=1)
print(json.dumps(model.get_labels()))
"""


def _run_child(script: str, args: list[str], what: str, timeout_s: float) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish in {timeout_s:.0f}s") from None
    if done.returncode != 0:
        how = f"died with signal {-done.returncode}" if done.returncode < 0 else "failed"
        detail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        raise RuntimeError(f"{what} {how}: {detail}")
    return done.stdout


def train_fasttext(train_file: Path, output: Path, params: dict[str, Any], timeout_s: float = 3600) -> None:
    """`fasttext.train_supervised(input=train_file, **params)` in a fresh process; saves to `output`."""
    args = {"params": {"input": str(train_file), **params}, "output": str(output)}
    _run_child(_TRAIN, [json.dumps(args)], "model_quality: fastText training", timeout_s)


def probe_fasttext(path: Path, timeout_s: float = 300) -> list[str]:
    """Load and try a model in a child process (a damaged file can crash the loader); its labels.
    Raises RuntimeError when it cannot be used."""
    return json.loads(_run_child(_PROBE, [str(path)], f"loading {path}", timeout_s))


def load_classifier(path: str) -> Any:
    """The fastText model at `path`, loaded once per process (a Ray worker keeps it across shards),
    and again if the file changes (a stage forced to run again writes the same path)."""
    stat = os.stat(path)
    return _load_classifier(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load_classifier(path: str, mtime_ns: int, size: int) -> Any:
    import fasttext

    return fasttext.load_model(path)


def good_scores(model: Any, texts: Sequence[str], positive_label: str) -> list[float]:
    """P(positive label) of each preprocessed, single-line text."""
    if not texts:
        return []
    labels, probs = model.predict(list(texts), k=-1)
    label = LABEL_PREFIX + positive_label
    return [
        float(dict(zip(ls, ps, strict=True)).get(label, 0.0)) for ls, ps in zip(labels, probs, strict=True)
    ]


# --- the distribution of scores -------------------------------------------------------------------

LOGIT_RANGE = 16.0  # |log-odds| beyond this (p within 1e-7 of 0 or 1) go to the end bins
LOGIT_BIN = 1e-4  # fine enough for a barely trained classifier, whose log-odds differ by 0.01


def logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 0.0 if x == -math.inf else 1.0 / (1.0 + math.exp(-x))


class LogitHistogram:
    """Counts of scores in bins of 1e-4 log-odds: shards add theirs, the stage reads cutoffs from the
    sum. Memory stays 320,000 counters however many documents there are (a shard sends only the bins
    it filled)."""

    n_bins = int(2 * LOGIT_RANGE / LOGIT_BIN)

    def __init__(self, counts: np.ndarray | None = None) -> None:
        self.counts = np.zeros(self.n_bins, dtype=np.int64) if counts is None else counts

    def add(self, scores: Sequence[float]) -> None:
        x = np.array([logit(s) for s in scores], dtype=np.float64)
        bins = np.clip(((x + LOGIT_RANGE) / LOGIT_BIN).astype(np.int64), 0, self.n_bins - 1)
        np.add.at(self.counts, bins, 1)

    def to_json(self) -> dict[str, int]:
        return {str(i): int(c) for i, c in enumerate(self.counts) if c}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> LogitHistogram:
        counts = np.zeros(cls.n_bins, dtype=np.int64)
        for i, c in data.items():
            counts[int(i)] += c
        return cls(counts)

    def merge(self, other: LogitHistogram) -> None:
        self.counts += other.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _centers(self) -> np.ndarray:
        return -LOGIT_RANGE + (np.arange(self.n_bins) + 0.5) * LOGIT_BIN

    @staticmethod
    def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weights[order])
        return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])

    def median_mad(self) -> tuple[float, float]:
        """Median of the log-odds and their median absolute deviation (to bin resolution)."""
        centers = self._centers()
        median = self._weighted_median(centers, self.counts)
        return median, self._weighted_median(np.abs(centers - median), self.counts)

    def top_cutoff(self, percent: float) -> float:
        """The log-odds at the lower edge of the bin where, counting from the top, at least `percent`
        of the documents have been reached (-inf: all of them)."""
        need = math.ceil(self.total * percent / 100)
        reached = np.cumsum(self.counts[::-1])
        lowest = self.n_bins - 1 - int(np.searchsorted(reached, need))
        return -LOGIT_RANGE + lowest * LOGIT_BIN if lowest > 0 else -math.inf
