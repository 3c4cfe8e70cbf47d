"""The `model_quality` stage: a fastText classifier of "good reference text" vs "crawl text".

The GPT-3 / DCLM approach: train a linear classifier to tell a reference set of good text from the
crawl, score every document with the probability of the good class, keep the documents that look
most like the reference. Or load a classifier trained elsewhere (`model_path`).

- Positives (`__label__good`): the user's `reference_path` (JSONL, Parquet or plain text), or the
  `reference` input's reference.jsonl: on the tiny world the world stage writes it into its knowledge
  artifact, encyclopedia articles composed with the crawl's own English sentence templates -- the tiny
  world's Wikipedia.
- Negatives (`__label__crawl`): up to `max_negatives` documents sampled (by a hash of id and seed)
  from the documents entering the stage.
- Kept: documents scoring at least the cutoff; every document gets a `quality_score` column. The
  cutoff is `threshold` (a probability), `threshold: auto` (below), or the score of the
  `top_percentile` of the entering documents.
- The `classifier` output holds the model and `classifier.json` (training data sizes, parameters,
  score quantiles, the cutoff); both are logged to MLflow. The cutoff is a metric only when it was
  derived from the scores (auto, top_percentile); a fixed `threshold` is a setting, logged as a param.

Why `auto` is the default. The classifier learns "looks like the reference", so good pages in styles
the reference lacks (forum threads, fact lists) score below encyclopedia articles, and junk scores far
below both. How far apart depends on how long it trains: fastText's log-odds stretch as epochs x lr
grow (they start near 0 and, trained long enough, the classifier memorises its negatives -- the very
documents it scores -- and good pages drift towards 0 with the junk). A fixed probability threshold is
right for one training length only. The *shape* of the log-odds distribution is far more stable, so
`auto` puts the cutoff `auto_sigmas` robust standard deviations (1.4826 x the median absolute
deviation) below the median log-odds of the entering documents: it drops only documents that look
much less like the reference than the typical crawl document. On the tiny world (3 crawl seeds;
the labels' main text and real extracted text; 6 to 10 epochs) good pages lie at most 3.7 robust
deviations below the median, and the spam that the heuristic filters miss at least 4.6 below it (6.6
at the default 8 epochs). Trained 1.5x longer (12 epochs), spam and good pages start to merge: auto
then drops less spam but still no good page.
"""

from __future__ import annotations

import functools
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.core.artifacts import Artifact, ArtifactStore, scratch_dir, stage_in
from components.core.config import ConfigError
from components.core.parallel import parallel_map, resumable
from components.core.stage import StageContext, stage
from components.data.documents import Block, filter_documents, filter_outputs
from components.data.junk_truth import JUNK_CATEGORIES, report_junk_truth
from components.data.model_quality_config import NEGATIVE_LABEL, SPEC, ModelQualityConfig, check_sources
from components.data.pii import log_dropped_samples
from components.data.quality_classifier import (
    LABEL_PREFIX,
    LogitHistogram,
    classifier_text,
    good_scores,
    load_classifier,
    probe_fasttext,
    read_reference_file,
    reference_from_artifact,
    sample_texts,
    sigmoid,
    train_fasttext,
    training_lines,
)
from components.io.documents import Document, iter_documents, list_shards, read_documents

# --- scoring -------------------------------------------------------------------------------------


class ModelQuality(Block):
    """Adds `quality_score` and drops documents scored below `cutoff` (reason `low_score`)."""

    name = "model_quality"

    def __init__(self, model: Any, config: ModelQualityConfig, cutoff: float) -> None:
        self.model, self.config, self.cutoff = model, config, cutoff

    def process(self, doc: Document) -> str | None:
        return self.process_batch([doc])[0]

    def process_batch(self, docs: list[Document]) -> list[str | None]:
        scores = score_documents(self.model, docs, self.config)
        for doc, score in zip(docs, scores, strict=True):
            doc["quality_score"] = score
        return [None if score >= self.cutoff else "low_score" for score in scores]


def score_documents(model: Any, docs: list[Document], config: ModelQualityConfig) -> list[float]:
    texts = [classifier_text(d.get("text"), config.max_chars, config.normalize) for d in docs]
    return good_scores(model, texts, config.positive_label)


def _model(model_uri: str) -> Any:
    with stage_in(model_uri) as path:  # fastText reads the whole file; a download may then go
        return load_classifier(str(path))


def make_blocks(config: ModelQualityConfig, store_root: str, model_uri: str, cutoff: float) -> list[Block]:
    return [ModelQuality(_model(model_uri), config, cutoff)]


def no_blocks() -> list[Block]:
    return []


def shard_histogram(
    shard: str, *, store_root: str, in_uri: str, done_uri: str, model_uri: str, config: ModelQualityConfig
) -> dict:
    """Ray task: the log-odds histogram of one shard's scores (resumable)."""
    store = ArtifactStore(store_root)

    def compute() -> dict:
        docs = read_documents(store, store.join(in_uri, shard), columns=["text"])
        histogram = LogitHistogram()
        histogram.add(score_documents(_model(model_uri), docs, config))
        return {"bins": histogram.to_json()}

    return resumable(store, store.join(done_uri, shard + ".json"), compute)


def find_cutoff(ctx: StageContext, config: ModelQualityConfig, documents: Artifact, model_uri: str) -> dict:
    """The cutoff probability, and what it was derived from."""
    if config.keep_by == "threshold" and config.threshold != "auto":
        return {"cutoff": float(config.threshold), "rule": "threshold"}
    work = functools.partial(
        shard_histogram,
        store_root=ctx.store.root,
        in_uri=documents.uri,
        done_uri=ctx.scratch_uri("histograms"),
        model_uri=model_uri,
        config=config,
    )
    histogram = LogitHistogram()
    shards = list_shards(ctx.store, documents.uri)
    for result in parallel_map(work, shards, progress=ctx.progress, desc="scores"):
        histogram.merge(LogitHistogram.from_json(result["bins"]))
    if not histogram.total:
        return {"rule": "no documents", "cutoff": 0.0, "scored": 0}
    median, mad = histogram.median_mad()
    found = {"logit_median": median, "logit_mad": mad, "scored": histogram.total}
    if config.keep_by == "top_percentile":
        cut = histogram.top_cutoff(config.top_percentile)
        return {**found, "rule": f"top_percentile {config.top_percentile}", "cutoff": sigmoid(cut)}
    sigma = 1.4826 * mad
    if sigma == 0:  # (nearly) all scores in one bin: nothing is an outlier
        ctx.log.warning("model_quality: the scores have no spread; threshold=auto keeps everything")
        return {**found, "rule": "auto (no spread)", "cutoff": 0.0}
    cut = median - config.auto_sigmas * sigma
    return {**found, "rule": f"auto {config.auto_sigmas} sigmas", "cutoff_logit": cut, "cutoff": sigmoid(cut)}


# --- the classifier ------------------------------------------------------------------------------


def install_given_model(
    ctx: StageContext, config: ModelQualityConfig, path: str, out_uri: str
) -> tuple[str, dict]:
    """Copy the user's model into the classifier output, once it has loaded in a child process and
    turned out to have the positive label."""
    import fsspec

    model_uri = ctx.store.join(out_uri, "model" + (".ftz" if path.lower().endswith(".ftz") else ".bin"))
    with fsspec.open(path, "rb") as src, ctx.store.atomic_write(model_uri) as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    with stage_in(model_uri) as local:
        try:
            labels = probe_fasttext(local)
        except RuntimeError as e:
            raise ConfigError(
                f"model_quality.model_path: {path} is not a usable fastText model ({e})"
            ) from None
    if LABEL_PREFIX + config.positive_label not in labels:
        raise ConfigError(
            f"model_quality.model_path: {path} has the labels {labels}, not "
            f"{LABEL_PREFIX}{config.positive_label}; set model_quality.positive_label to its good label"
        )
    return model_uri, {"source": "model_path", "model_path": path, "labels": labels}


def train_classifier(
    ctx: StageContext, config: ModelQualityConfig, inputs: dict[str, Artifact], out_uri: str
) -> tuple[str, dict] | None:
    """Train on reference vs sampled crawl documents; the model's URI and the training stats (None
    when no document with text enters the stage: there is nothing to train against, or to score)."""
    if config.reference_path:
        reference = read_reference_file(config.reference_path, config.reference_field)
        source = "reference_path"
    else:
        reference = reference_from_artifact(ctx.store, inputs["reference"].uri)
        source = "knowledge"
    rng = random.Random(f"{ctx.seed}/model_quality/train")
    if len(reference) > config.max_reference:
        reference = rng.sample(reference, config.max_reference)

    def prepared(texts) -> list[str]:
        return [t for t in (classifier_text(x, config.max_chars, config.normalize) for x in texts) if t]

    positives = prepared(reference)
    negatives = prepared(sample_texts(ctx.store, inputs["documents"].uri, config.max_negatives, ctx.seed))
    if not negatives:
        return None
    examples = {config.positive_label: positives, NEGATIVE_LABEL: negatives}
    lines = training_lines(examples, config.balance, rng)
    model_uri = ctx.store.join(out_uri, "model.bin")
    with scratch_dir("gptrecipe-model-quality-") as tmp:
        train_file, model_file = Path(tmp, "train.txt"), Path(tmp, "model.bin")
        train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        started = time.perf_counter()
        train_fasttext(train_file, model_file, config.fasttext_params(ctx.seed))
        seconds = time.perf_counter() - started
        ctx.store.upload(model_file, model_uri)
    model = _model(model_uri)
    stats = {
        "source": source,
        "reference_documents": len(positives),
        "negative_documents": len(negatives),
        "training_examples": len(lines),
        "train_seconds": round(seconds, 3),
        "fasttext": config.fasttext_params(ctx.seed),
        "labels": [LABEL_PREFIX + config.positive_label, LABEL_PREFIX + NEGATIVE_LABEL],
        # Where the training sets fall, as a guide to a fixed threshold.
        "reference_score_quantiles": _quantiles(good_scores(model, positives[:5000], config.positive_label)),
        "crawl_score_quantiles": _quantiles(good_scores(model, negatives[:5000], config.positive_label)),
    }
    return model_uri, stats


def _quantiles(scores: list[float]) -> dict[str, float]:
    if not scores:
        return {}
    qs = (0.01, 0.05, 0.5, 0.95, 0.99)
    values = np.quantile(np.array(scores), qs)
    return {f"p{round(q * 100)}": round(float(v), 5) for q, v in zip(qs, values, strict=True)}


def log_classifier(ctx: StageContext, model_uri: str, stats: dict) -> None:
    ctx.tracker.log_dict(stats, "classifier/classifier.json")
    if ctx.store.is_local:
        ctx.tracker.log_artifact(model_uri, "classifier")
    else:  # the tracker may send later: a copy in the stage's scratch, which outlives the tracker's flush
        local = ctx.scratch / Path(model_uri).name
        ctx.store.fs.get_file(model_uri, str(local))
        ctx.tracker.log_artifact(local, "classifier")
    numbers = {k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    numbers["cutoff"] = measured_cutoff(stats)  # None (not logged) for the `threshold` setting
    ctx.log_metrics({f"classifier.{k}": v for k, v in numbers.items()})


def measured_cutoff(stats: dict) -> float | None:
    """The cutoff as a metric: derived from the scores, else None (a fixed `threshold` is a setting,
    and with no document scored there was nothing to derive it from)."""
    return None if stats.get("rule") in ("threshold", "no documents") else stats.get("cutoff")


# --- ground truth --------------------------------------------------------------------------------


def score_truth(ctx: StageContext, labels: dict[str, dict], outputs: dict[str, Artifact]) -> dict[str, float]:
    """Minimum, median and maximum score per label category (junk: per class)."""
    groups: dict[str, list[float]] = defaultdict(list)
    dropped = outputs["dropped"].uri
    uris = [outputs["documents"].uri, *(ctx.store.join(dropped, r) for r in ctx.store.listdir(dropped))]
    for uri in uris:
        for doc in iter_documents(ctx.store, uri, columns=["url", "quality_score"]):
            label = labels.get(doc["url"])
            if label is not None and doc.get("quality_score") is not None:
                group = label["junk_class"] if label["category"] in JUNK_CATEGORIES else label["category"]
                groups[group].append(doc["quality_score"])
    out: dict[str, float] = {}
    for group, scores in sorted(groups.items()):
        out[f"truth.score_min.{group}"] = min(scores)
        out[f"truth.score_median.{group}"] = float(np.median(scores))
        out[f"truth.score_max.{group}"] = max(scores)
    return out


# --- the stage -----------------------------------------------------------------------------------


@stage(SPEC)
def model_quality(
    ctx: StageContext, config: ModelQualityConfig, inputs: dict[str, Artifact]
) -> dict[str, Artifact]:
    """fastText quality classifier (reference vs crawl): trains or loads it, scores, keeps the best."""
    check_sources(config, inputs)
    out_uri = ctx.output_uri("classifier")
    ctx.store.makedirs(out_uri)
    trained = (
        install_given_model(ctx, config, config.model_path, out_uri)
        if config.model_path
        else train_classifier(ctx, config, inputs, out_uri)
    )
    if trained is None:
        ctx.log.warning("model_quality: no document with text enters the stage; nothing to train or score")
        stats: dict[str, Any] = {"source": "none", "cutoff": 0.0, "rule": "no documents"}
        make: Callable[[], list[Block]] = no_blocks
    else:
        model_uri, stats = trained
        stats |= find_cutoff(ctx, config, inputs["documents"], model_uri)
        log_classifier(ctx, model_uri, stats)
        make = functools.partial(make_blocks, config, ctx.store.root, model_uri, stats["cutoff"])
    ctx.store.write_json(ctx.store.join(out_uri, "classifier.json"), stats)
    filtered = filter_documents(ctx, inputs["documents"], make, desc="shards")
    outputs = filter_outputs(
        ctx,
        filtered,
        documents_in=filtered.documents_in,
        documents_out=filtered.documents_out,
        cutoff=measured_cutoff(stats),
    )
    outputs["classifier"] = ctx.artifact(
        "classifier", kind="fasttext_classifier", source=stats["source"], cutoff=stats["cutoff"]
    )
    report_junk_truth(ctx, inputs, outputs["dropped"], lambda labels: score_truth(ctx, labels, outputs))
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason)
    return outputs


__all__ = ["ModelQuality", "ModelQualityConfig", "model_quality"]
