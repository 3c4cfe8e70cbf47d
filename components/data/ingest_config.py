"""The `ingest` stage's config and declaration: light (no warcio, no pyarrow), so that a pipeline config loads
and validates fast; `components.data.ingest` is the code."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import Field

from components.core.config import ConfigError, StageConfig
from components.core.stage import stage_spec


class IngestConfig(StageConfig):
    """Which WARC files to read and what to keep from them."""

    paths: list[str] = Field(
        default_factory=list,
        description="WARC files, directories (every *.warc[.gz] below), globs or URLs to read. Empty: every "
        "*.warc[.gz] of the `crawl` input.",
    )
    shard_docs: int = Field(2000, ge=1, description="Documents per output Parquet shard.")
    max_body_mb: float = Field(
        8.0, gt=0, description="Responses with a larger body are skipped (counted as too_large)."
    )
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml"],
        description="MIME types kept; everything else is skipped (counted as not_html).",
    )
    split_mb: float = Field(
        256.0,
        gt=0,
        description="A gzipped WARC larger than this is read as byte ranges of about this size, each its "
        "own Ray task, split where a record's gzip member starts (a Common Crawl file of 1 GB: 4 tasks). "
        "Plain .warc files are read whole.",
    )

    def external_inputs(self) -> list[str]:
        return list(self.paths)


def check_source(config: IngestConfig, inputs: Collection[str]) -> None:
    """Preflight: WARC files must come from somewhere, said before any stage runs."""
    if not config.paths and "crawl" not in inputs:
        raise ConfigError("ingest has no input: set ingest.paths, or enable the world stage")


SPEC = stage_spec(
    "ingest",
    impl="components.data.ingest:ingest",
    config=IngestConfig,
    optional_inputs=("crawl",),
    outputs=("documents",),
    cpus=0,  # fans out one Ray task per file or byte range, each reserving its own CPU
    preflight=check_source,
)
