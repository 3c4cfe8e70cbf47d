"""The `language` stage: fastText lid.176 language ID; keep the wanted languages (FineWeb: English).

Every document gets `language` (lid's top label, e.g. "en") and `language_score` (its probability),
kept and dropped alike. A document is kept when a wanted language scores above `threshold` (0.65, as
FineWeb), newlines replaced by spaces before predicting (fastText reads one line). Dropped documents
go to `dropped/language.<reason>/`:

    not_wanted_language   lid's top language is not a wanted one
    low_score             the top language is wanted but scores <= threshold (too short or mixed to
                          tell), or there is no text

The model is the checksummed `lid.176.ftz` asset (installed by `gptrecipe assets`) or a fastText
model of the user's (`model_path`). The stage loads it in the driver before any shard is touched, so
a missing or corrupt file is a clear error at the start; each worker process then loads it once and
keeps it for every shard it runs. Prediction is batched (`process_batch`): one call into fastText
per batch of documents.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from components.core.artifacts import Artifact, ArtifactStore
from components.core.assets import AssetError, asset_path
from components.core.config import ConfigError
from components.core.stage import StageContext, stage
from components.data.documents import (
    Block,
    filter_documents,
    filter_outputs,
    load_labels,
    precision_recall,
)
from components.data.language_config import SPEC, LanguageConfig
from components.data.pii import log_dropped_samples
from components.io.documents import Document, list_shards, ratio

LID_ASSET = "lid.176.ftz"
LABEL_PREFIX = "__label__"

# texts, k -> for each text its top-k (language, probability) pairs, best first.
PredictFn = Callable[[list[str], int], list[list[tuple[str, float]]]]


# --- the model -----------------------------------------------------------------------------------


def model_file(config: LanguageConfig) -> Path:
    """The model's path, checked: the asset's checksum, or a user file's existence."""
    if config.model_path is None:
        try:
            return asset_path(LID_ASSET)
        except AssetError as e:
            raise AssetError(f"language: {e}") from None
    path = Path(config.model_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"language.model_path: {path} does not exist (or is not a file)")
    return path


# Run in a child process: a damaged fastText file can load "successfully" and then segfault on the
# first prediction, or ask for absurd amounts of memory, and neither may take the stage down with it.
_PROBE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
import fasttext
model = fasttext.load_model(sys.argv[1])
labels, _ = model.predict("a probe sentence to check that the model works", k=1)
print(len(model.get_labels()), labels[0])
"""


def probe_model(path: Path, timeout_s: float = 120.0) -> None:
    """Load `path` and predict once in a child process; ConfigError (with the fix) if that fails."""
    fix = "point language.model_path at a valid fastText model, or set it to null to use lid.176"
    memory = 2**30 + 8 * path.stat().st_size  # ample for a real model, and a bound for a broken one
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path), str(memory)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"language: loading {path} did not finish in {timeout_s:.0f}s; {fix}") from None
    if done.returncode != 0:
        how = f"died with signal {-done.returncode}" if done.returncode < 0 else "failed"
        detail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        raise ConfigError(
            f"language: {path} is not a usable fastText model (loading it {how}: {detail}); {fix}"
        )


def validated_model_file(config: LanguageConfig) -> Path:
    """`model_file`, and for a user's model a trial load in a child process (the asset has its checksum)."""
    path = model_file(config)
    if config.model_path is not None:
        probe_model(path)
    return path


@functools.lru_cache(maxsize=2)
def load_model(path: str) -> Any:
    """The fastText model at `path`, loaded once per process (a Ray worker keeps it across shards)."""
    import fasttext

    try:
        return fasttext.load_model(path)
    except (ValueError, RuntimeError, MemoryError) as e:
        raise ConfigError(
            f"language: {path} is not a readable fastText model ({e}); run `gptrecipe assets` to "
            "restore lid.176.ftz, or point language.model_path at a valid model"
        ) from None


def model_languages(model: Any) -> set[str]:
    return {label.removeprefix(LABEL_PREFIX) for label in model.get_labels()}


def fasttext_predictor(path: str) -> PredictFn:
    model = load_model(path)

    def predict(texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        labels, probs = model.predict(texts, k=k)
        return [
            [(label.removeprefix(LABEL_PREFIX), float(p)) for label, p in zip(ls, ps, strict=True)]
            for ls, ps in zip(labels, probs, strict=True)
        ]

    return predict


def top_k_needed(threshold: float, n_labels: int = 176) -> int:
    """How many labels to ask for so every one scoring above `threshold` is among them: probabilities
    sum to 1, so at most 1/threshold can exceed it (one more for rounding)."""
    return n_labels if threshold <= 0 else min(n_labels, int(1 / threshold) + 1)


# --- the block -----------------------------------------------------------------------------------


def predictable(text: Any) -> str:
    """fastText reads one line: newlines become spaces (as FineWeb does)."""
    return text.replace("\n", " ").strip() if isinstance(text, str) else ""


class LanguageFilter(Block):
    """Labels each document with lid's top language; keeps the wanted ones. `predict` can be
    injected (tests); by default the fastText model at `model_path`, loaded once per process."""

    name = "language"

    def __init__(
        self, config: LanguageConfig, predict: PredictFn | None = None, model_path: str | None = None
    ):
        self.wanted = frozenset(config.languages)
        self.threshold = config.threshold
        if predict is None:
            predict = fasttext_predictor(model_path or str(model_file(config)))
        self.predict = predict
        self.k = top_k_needed(config.threshold)

    def process(self, doc: Document) -> str | None:
        return self.process_batch([doc])[0]

    def process_batch(self, docs: Sequence[Document]) -> list[str | None]:
        texts = [predictable(doc.get("text")) for doc in docs]
        todo = [i for i, t in enumerate(texts) if t]
        predictions: list[list[tuple[str, float]]] = [[] for _ in docs]
        if todo:
            for i, pred in zip(todo, self.predict([texts[i] for i in todo], self.k), strict=True):
                predictions[i] = pred
        return [self.decide(doc, pred) for doc, pred in zip(docs, predictions, strict=True)]

    def decide(self, doc: Document, pred: list[tuple[str, float]]) -> str | None:
        if not pred:
            doc["language"], doc["language_score"] = None, 0.0
            return "low_score"
        top, score = pred[0]
        # fastText's probabilities can come out a hair above 1.
        doc["language"], doc["language_score"] = top, min(score, 1.0)
        if self.wanted:
            if any(lang in self.wanted and p > self.threshold for lang, p in pred):
                return None
            return "low_score" if top in self.wanted else "not_wanted_language"
        return None if score > self.threshold else "low_score"


def make_blocks(config: LanguageConfig, model_path: str) -> list[Block]:
    """Module-level so Ray tasks can build the block; the model loads once per worker process."""
    return [LanguageFilter(config, model_path=model_path)]


# --- ground truth --------------------------------------------------------------------------------


def language_truth(
    labels: dict[str, dict],
    predicted: dict[str, str | None],
    dropped: set[str],
    wanted: set[str],
    known_languages: set[str],
) -> dict[str, float | None]:
    """Accuracy of lid's top label on the documents whose labelled language the model knows, and
    precision/recall of dropping documents not in a wanted language (unlabelled language, e.g.
    gibberish or code, counts as not wanted). `predicted`: url -> language of every entering doc.
    A score over no document (nothing scored, nothing dropped, nothing to drop) is None."""
    known = {u: labels[u] for u in predicted if u in labels}
    scored = {u: lab for u, lab in known.items() if lab.get("language") in known_languages}
    correct = sum(1 for u, lab in scored.items() if predicted[u] == lab["language"])
    out: dict[str, float | None] = {
        "truth.language_accuracy": ratio(correct, len(scored)),
        "truth.language_scored": len(scored),
    }
    for lang in sorted({lab["language"] for lab in scored.values()}):
        docs = [u for u, lab in scored.items() if lab["language"] == lang]
        out[f"truth.language_accuracy.{lang}"] = sum(predicted[u] == lang for u in docs) / len(docs)
    if wanted:
        actual = {u for u, lab in known.items() if lab.get("language") not in wanted}
        pr = precision_recall({u for u in dropped if u in known}, actual)
        out |= {"truth.drop_precision": pr["precision"], "truth.drop_recall": pr["recall"]}
        lost = [lab for u, lab in known.items() if u in dropped and lab.get("language") in wanted]
        out["truth.wanted_dropped"] = len(lost)
        out["truth.wanted_good_dropped"] = sum(1 for lab in lost if lab.get("category") == "good")
    return out


# --- the stage -----------------------------------------------------------------------------------


def _rows(store: ArtifactStore, uri: str, columns: list[str]) -> Iterator[Document]:
    """`columns` of every document under `uri`; shards with no rows are skipped (a shard whose every
    document was dropped has only the input's columns)."""
    for shard in list_shards(store, uri):
        with store.open(store.join(uri, shard)) as f:
            parquet = pq.ParquetFile(f)
            if parquet.metadata.num_rows:
                yield from parquet.read(columns=columns).to_pylist()


def _check_text_column(ctx: StageContext, documents: Artifact) -> None:
    """Language ID reads `text`: without it (extract switched off) say so before any work."""
    for shard in list_shards(ctx.store, documents.uri):
        with ctx.store.open(ctx.store.join(documents.uri, shard)) as f:
            meta = pq.ParquetFile(f)
            if meta.metadata.num_rows and "text" not in meta.schema_arrow.names:
                raise ConfigError(
                    f"language: the documents in {documents.uri} have no `text` column "
                    "(is the extract stage switched off?)"
                )


@stage(SPEC)
def language(ctx: StageContext, config: LanguageConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Identify each document's language with fastText lid.176; keep the wanted languages."""
    # Here, not only in the workers: a missing or damaged model fails before any shard is read.
    path = str(validated_model_file(config))
    model = load_model(path)
    _check_text_column(ctx, inputs["documents"])
    stats = filter_documents(
        ctx,
        inputs["documents"],
        functools.partial(make_blocks, config, path),
        batch_size=config.batch_size,
    )
    outputs = filter_outputs(ctx, stats, documents_in=stats.documents_in, documents_out=stats.documents_out)
    labels = load_labels(ctx.store, inputs.get("labels"))
    if labels is not None:
        store, predicted, dropped = ctx.store, {}, set()
        for doc in _rows(store, outputs["documents"].uri, ["url", "language"]):
            predicted[doc["url"]] = doc["language"]
        for reason in store.listdir(outputs["dropped"].uri):
            for doc in _rows(store, store.join(outputs["dropped"].uri, reason), ["url", "language"]):
                predicted[doc["url"]] = doc["language"]
                dropped.add(doc["url"])
        truth = language_truth(labels, predicted, dropped, set(config.languages), model_languages(model))
        ctx.log_metrics(truth)
        headline = {"accuracy": truth["truth.language_accuracy"]}
        if config.languages:
            headline |= {"precision": truth["truth.drop_precision"], "recall": truth["truth.drop_recall"]}
        ctx.report(**headline)
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason)
    return outputs
