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

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.data.documents import Block, filter_documents, filter_outputs
from components.data.junk_truth import report_junk_truth
from components.data.pii import log_dropped_samples
from components.data.quality_config import SPEC, QualityConfig
from components.data.quality_rules import (
    C4,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    NotEmpty,
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


@stage(SPEC)
def quality(ctx: StageContext, config: QualityConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Heuristic quality filters (Gopher repetition, Gopher quality, C4, FineWeb) in one pass."""
    stats = filter_documents(ctx, inputs["documents"], functools.partial(make_blocks, config))
    outputs = filter_outputs(ctx, stats, documents_in=stats.documents_in, documents_out=stats.documents_out)
    report_junk_truth(ctx, inputs, outputs["dropped"])
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason)
    return outputs
