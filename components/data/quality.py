"""The `quality` stage: FineWeb's heuristic filters in one pass over the documents.

Four blocks, in FineWeb's order, each switchable (`quality.<block>.enabled=false`) and each rule's
threshold a config field (the published values by default; see `quality_rules.py` for how words,
lines and n-grams are counted):

    gopher_repetition -> gopher_quality -> c4 (removes lines from the documents it keeps) -> fineweb

A dropped document goes to `dropped/<block>.<rule>/` (e.g. `gopher_quality.too_few_words`,
`c4.lorem_ipsum`, `fineweb.short_line_frac`); a document left empty at the end is `quality.empty`.
The stage runs on whatever languages language ID kept; Gopher's stop-word rule is English (see
`GopherQualityConfig`). With the tiny world's labels it reports junk precision and recall per junk
class and per block (`junk_truth.py`).
"""

from __future__ import annotations

import functools

from pydantic import Field

from components.core.artifacts import Artifact
from components.core.config import StageConfig
from components.core.stage import StageContext, stage
from components.data.documents import Block, documents_artifacts, dropped_urls, filter_documents, load_labels
from components.data.junk_truth import junk_truth
from components.data.pii import log_dropped_samples
from components.data.quality_rules import (
    C4,
    C4Config,
    FineWebQuality,
    FineWebQualityConfig,
    GopherQuality,
    GopherQualityConfig,
    GopherRepetition,
    GopherRepetitionConfig,
    NotEmpty,
)
from components.io.documents import iter_documents


class QualityConfig(StageConfig):
    """Heuristic quality filtering: Gopher repetition, Gopher quality, C4, FineWeb (in this order)."""

    gopher_repetition: GopherRepetitionConfig = Field(
        default_factory=GopherRepetitionConfig, description="Repeated paragraphs, lines and n-grams."
    )
    gopher_quality: GopherQualityConfig = Field(
        default_factory=GopherQualityConfig, description="Length, word shapes, symbols, stop words."
    )
    c4: C4Config = Field(default_factory=C4Config, description="C4 line removal and page rules.")
    fineweb: FineWebQualityConfig = Field(
        default_factory=FineWebQualityConfig, description="FineWeb's line-based rules."
    )
    samples_per_reason: int = Field(
        5, ge=0, description="Dropped documents per reason logged to MLflow (PII scrubbed)."
    )


def make_blocks(config: QualityConfig) -> list[Block]:
    """The enabled blocks in FineWeb's order (module-level: Ray tasks build them from the config)."""
    blocks: list[Block] = []
    if config.gopher_repetition.enabled:
        blocks.append(GopherRepetition(config.gopher_repetition))
    if config.gopher_quality.enabled:
        blocks.append(GopherQuality(config.gopher_quality))
    if config.c4.enabled:
        blocks.append(C4(config.c4))
    if config.fineweb.enabled:
        blocks.append(FineWebQuality(config.fineweb))
    return [*blocks, NotEmpty()]


def report_truth(ctx: StageContext, inputs: dict[str, Artifact], dropped: Artifact) -> None:
    """Ground-truth metrics when the input comes with the tiny world's labels."""
    labels = load_labels(ctx.store, inputs.get("labels"))
    if labels is None:
        return
    entering = [d["url"] for d in iter_documents(ctx.store, inputs["documents"].uri, columns=["url"])]
    truth = junk_truth(labels, entering, dropped_urls(ctx.store, dropped))
    ctx.log_metrics(truth)
    ctx.report(
        junk_precision=truth["truth.junk_precision"],
        junk_recall=truth["truth.junk_recall"],
        good_dropped=truth["truth.good_dropped"],
    )


@stage(
    "quality",
    config=QualityConfig,
    inputs=("documents",),
    optional_inputs=("labels",),
    outputs=("documents", "dropped"),
    cpus=0,  # fans out one Ray task per shard, each reserving its own CPU
    passthrough={"documents": "documents"},
)
def quality(ctx: StageContext, config: QualityConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Heuristic quality filters (Gopher repetition, Gopher quality, C4, FineWeb) in one pass."""
    stats = filter_documents(ctx, inputs["documents"], functools.partial(make_blocks, config))
    outputs = documents_artifacts(ctx, stats)
    ctx.log_metrics(stats.metrics())
    ctx.report(
        documents_in=stats.documents_in,
        documents_out=stats.documents_out,
        docs_per_s_per_cpu=stats.docs_per_cpu_second,
    )
    report_truth(ctx, inputs, outputs["dropped"])
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason)
    return outputs
