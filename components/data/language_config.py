"""The `language` stage's config and declaration: light (no fastText, no pyarrow), so that a pipeline config
loads and validates fast; `components.data.language` is the code."""

from __future__ import annotations

from pydantic import Field

from components.core.config import StageConfig
from components.data.filter_spec import filter_spec


class LanguageConfig(StageConfig):
    """Which languages to keep, and how sure language ID must be."""

    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="Wanted languages (lid.176 codes: en, de, fr, ...); [] keeps any language that "
        "scores above the threshold.",
    )
    threshold: float = Field(
        0.65, ge=0, lt=1, description="Keep when a wanted language's probability is above this (FineWeb)."
    )
    model_path: str | None = Field(
        None,
        description="A fastText language-ID model file; null: the shipped lid.176.ftz asset "
        "(`gptrecipe assets` installs it). Replacing a custom file reruns the stage.",
    )
    batch_size: int = Field(512, ge=1, description="Documents per fastText predict call.")
    samples_per_reason: int = Field(
        5, ge=0, description="Dropped documents per reason logged to MLflow (PII scrubbed)."
    )

    def external_inputs(self) -> list[str]:
        return [self.model_path] if self.model_path else []


SPEC = filter_spec("language", LanguageConfig)
