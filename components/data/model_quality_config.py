"""The `model_quality` stage's config and declaration: light (no fastText, no numpy, no pyarrow), so that a
pipeline config loads and validates fast; `components.data.model_quality` is the code."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from components.core.config import ConfigError, StageConfig
from components.data.filter_spec import filter_spec

NEGATIVE_LABEL = "crawl"  # the classifier's label of crawl text (the good text's is `positive_label`)


class ModelQualityConfig(StageConfig):
    """Train (or load) a fastText good-vs-crawl classifier and keep the documents it scores high."""

    model_path: str | None = Field(
        None,
        description="A trained fastText model (.bin/.ftz, local path or URL) to use instead of training "
        "one; it must have the label `positive_label`.",
    )
    reference_path: str | None = Field(
        None,
        description="Good text to train on (local path or URL): .jsonl (field `reference_field`), "
        ".parquet (column `reference_field`) or plain text (documents separated by blank lines). "
        "None: read the `reference` input's reference.jsonl (the tiny world's articles).",
    )
    reference_field: str = Field("text", description="Field/column of `reference_path` with the text.")
    max_reference: int = Field(50_000, ge=1, description="At most this many reference documents.")
    max_negatives: int = Field(
        50_000, ge=1, description="At most about this many crawl documents sampled as negatives."
    )
    balance: bool = Field(
        True,
        description="Repeat the smaller class until both have as many examples, so that the prior "
        "is 1/2 whatever the two set sizes are.",
    )
    epoch: int = Field(8, ge=1, description="fastText epochs (see the module doc on training length).")
    lr: float = Field(0.1, gt=0, description="fastText learning rate (decays linearly to 0).")
    dim: int = Field(16, ge=1, description="fastText embedding size.")
    word_ngrams: int = Field(
        2,
        ge=2,
        le=5,
        description="Longest word n-gram used as a feature; >= 2 because with words alone (1) the "
        "fastText build we pin diverges to NaN.",
    )
    min_count: int = Field(1, ge=1, description="fastText minCount: words seen fewer times are ignored.")
    bucket: int = Field(
        # 20k rather than fastText's 2M (or 200k): no measurable difference on the tiny world's scores,
        # and a 1.4 MB model instead of 13 MB in every run's MLflow artifacts.
        20_000,
        ge=1,
        description="Hash buckets for word n-grams (the model has bucket x dim floats).",
    )
    max_chars: int = Field(
        10_000, ge=100, description="The classifier reads the first this many characters of a document."
    )
    preprocess: Literal["normalize", "raw"] = Field(
        "normalize",
        description="normalize: list markers at line starts removed, lowercase, punctuation split from "
        "words (what our training uses); raw: text as is (for a model trained on raw text). Both "
        "collapse whitespace, newlines included.",
    )
    positive_label: str = Field("good", description="The label (without __label__) of good text.")
    keep_by: Literal["threshold", "top_percentile"] = Field(
        "threshold",
        description="threshold: keep documents scoring >= `threshold`; top_percentile: keep the "
        "`top_percentile` % best-scored documents.",
    )
    threshold: float | Literal["auto"] = Field(
        "auto",
        description="A probability of the good class, or auto: `auto_sigmas` robust standard deviations "
        "below the median log-odds of the entering documents (see the module doc).",
    )
    auto_sigmas: float = Field(
        4.5, gt=0, description="threshold=auto: how far below the median (in 1.4826 x MAD of log-odds)."
    )
    top_percentile: float = Field(
        90.0,
        gt=0,
        le=100,
        description="keep_by=top_percentile: the percentage of entering documents kept, best first "
        "(at least that many: scores within 1e-4 log-odds of the cutoff are kept together).",
    )
    samples_per_reason: int = Field(5, ge=0, description="Dropped documents logged to MLflow (PII scrubbed).")

    @field_validator("model_path", "reference_path")
    @classmethod
    def _local_file_exists(cls, value: str | None) -> str | None:
        # Checked when the config is read, so a typo fails the run before any stage works; URLs are
        # checked when the stage starts (reaching them here would need the network at config time).
        if value and "://" not in value and not Path(value).expanduser().is_file():
            raise ValueError(f"{value} does not exist (or is not a file)")
        return value

    @field_validator("threshold")
    @classmethod
    def _probability(cls, value: float | str) -> float | str:
        if value != "auto" and not 0 <= float(value) <= 1:
            raise ValueError("a probability in [0, 1], or auto")
        return value

    @field_validator("positive_label")
    @classmethod
    def _not_the_crawl_label(cls, value: str) -> str:
        if not value or value == NEGATIVE_LABEL or any(c.isspace() for c in value):
            raise ValueError(f"a label name without spaces, other than {NEGATIVE_LABEL!r} (the crawl's)")
        return value

    @property
    def normalize(self) -> bool:
        return self.preprocess == "normalize"

    def fasttext_params(self, seed: int) -> dict[str, Any]:
        """`train_supervised` arguments: one thread and a seed, so that training is reproducible."""
        return {
            "epoch": self.epoch,
            "lr": self.lr,
            "dim": self.dim,
            "wordNgrams": self.word_ngrams,
            "minCount": self.min_count,
            "bucket": self.bucket,
            "loss": "softmax",
            "thread": 1,
            "seed": seed,
            "verbose": 0,
        }


def check_sources(config: ModelQualityConfig, inputs: Collection[str]) -> None:
    """Before any work: where the classifier comes from, with a clear error when nowhere."""
    import fsspec

    for key in ("model_path", "reference_path"):
        path = getattr(config, key)
        if path:
            fs, _ = fsspec.core.url_to_fs(path)
            if not fs.isfile(path):
                raise ConfigError(f"model_quality.{key}: {path} does not exist (or is not a file)")
            return
    if "reference" not in inputs:
        raise ConfigError(
            "model_quality has nothing to train on: set model_quality.reference_path (good text), "
            "model_quality.model_path (a trained classifier), or enable the world stage (its "
            "knowledge artifact holds the tiny world's reference.jsonl)"
        )


SPEC = filter_spec(
    "model_quality",
    ModelQualityConfig,
    optional_inputs=("labels", "reference"),
    outputs=("documents", "dropped", "classifier"),
    preflight=check_sources,
    # Without the world's reference text and without yours, the pipeline skips the stage.
    replaced_by={"reference": ("reference_path", "model_path")},
)
