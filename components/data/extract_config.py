"""The `extract` stage's config and declaration: light (no trafilatura, no pyarrow), so that a pipeline config
loads and validates fast; `components.data.extract` is the code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.core.config import StageConfig
from components.data.filter_spec import filter_spec


class ExtractConfig(StageConfig):
    """The extractor, its options, and the limits that keep one bad page from stalling a shard."""

    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura",
        description="trafilatura (FineWeb's choice) or resiliparse's main-content extractor (DCLM's, "
        "several times faster). The options below marked trafilatura apply to it only.",
    )
    favor_precision: bool = Field(
        True, description="trafilatura's favor_precision: less text, but less boilerplate (FineWeb)."
    )
    fast: bool = Field(
        True,
        description="trafilatura's fast mode: no fallback extractors (readability/jusText). About 3x "
        "faster; boilerplate-only pages then come out empty instead of as their navigation text.",
    )
    include_comments: bool = Field(False, description="Keep user comments below an article (both).")
    include_tables: bool = Field(False, description="Keep the text of HTML tables (both).")
    deduplicate: bool = Field(
        False,
        description="trafilatura's cross-document duplicate-segment cache. Off: with it, a page's text "
        "would depend on which pages its worker saw before (not reproducible); dedup is its own stage.",
    )
    time_limit_s: float | None = Field(
        1.0,
        gt=0,
        description="CPU seconds one page may take before it is dropped as `timeout`; null: no limit. "
        "(datatrove uses 0.1 s of wall time; ordinary pages take a few ms either way.)",
    )
    max_html_mb: float = Field(
        2.0, gt=0, description="Pages with more HTML than this (MiB, UTF-8) are not parsed: `too_large`."
    )
    samples_per_reason: int = Field(
        5, ge=0, description="Dropped documents per reason logged to MLflow (PII scrubbed)."
    )


SPEC = filter_spec("extract", ExtractConfig)
