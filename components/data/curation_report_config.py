"""The `curation_report` stage's config and declaration: light (no pyarrow, no matplotlib), so that a pipeline
config loads and validates fast; `components.data.curation_report` is the code."""

from __future__ import annotations

from pydantic import Field

from components.core.config import StageConfig
from components.core.stage import stage_spec

CURATION_STAGES: tuple[str, ...] = (
    "url_filter",
    "extract",
    "language",
    "quality",
    "model_quality",
    "dedup",
    "pii",
    "decontaminate",
)


class CurationReportConfig(StageConfig):
    """What the report counts as junk detection and how much the funnel plot spells out."""

    junk_stages: list[str] = Field(
        default_factory=lambda: ["url_filter", "extract", "quality", "model_quality"],
        description="Stages whose drops are junk detection (junk precision is computed over their drops).",
    )
    reasons_per_stage: int = Field(
        3, ge=0, description="Drop reasons named beside each bar of the funnel; the rest are summed."
    )
    samples_per_reason: int = Field(
        5,
        ge=0,
        description="Dropped documents per stage and reason logged to MLflow (`samples/dropped/<stage>/"
        "<reason>.jsonl`: url, reason, the first 600 characters, PII scrubbed); 0 = none.",
    )


SPEC = stage_spec(
    "curation_report",
    impl="components.data.curation_report:curation_report",
    config=CurationReportConfig,
    optional_inputs=(
        "ingest_documents",
        *(f"{name}_{out}" for name in CURATION_STAGES for out in ("documents", "dropped")),
        "labels",
    ),
    outputs=("report",),
    cpus=1,
)
