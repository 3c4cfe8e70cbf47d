"""The `dedup` stage's config and declaration: light (no datasketch, no pyarrow), so that a pipeline
config loads and validates fast; `components.data.dedup` is the code."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.core.config import StageConfig, StrictModel
from components.core.stage import stage_spec


class MinHashConfig(StrictModel):
    """Fuzzy deduplication: MinHash over word n-gram shingles, LSH with `bands` x `rows`."""

    enabled: bool = Field(True, description="Find near duplicates too; False = exact dedup only.")
    ngram: int = Field(5, ge=1, description="Words per shingle (FineWeb: 5).")
    bands: int = Field(14, ge=1, description="LSH bands (FineWeb: 14). More bands: more recall.")
    rows: int = Field(
        8,
        ge=1,
        description="MinHash values per band (FineWeb: 8); num_perm = bands x rows. More rows: "
        "fewer false candidates. The S-curve's threshold is about (1/bands)^(1/rows).",
    )
    seed: int = Field(1, description="Seed of the MinHash permutations.")
    verify_threshold: float | None = Field(
        0.6,
        ge=0,
        le=1,
        description="Keep a fuzzy candidate pair only if the true Jaccard of the two shingle sets is at "
        "least this; None trusts LSH alone. 0.6 sits below the LSH threshold (0.72), so it leaves the "
        "S-curve where it matters, and removes the chance band collisions of different pages built from "
        "one template (true Jaccard 0.2-0.4). On the tiny world after the upstream filters those were "
        "the only false positives: precision 0.984 unverified (too close to the 0.98 target), 1.0 "
        "verified, at the same recall; 0.7 or 0.8 would start dropping true near duplicates. Costs a "
        "second read of the candidate documents' text (about 15% of the stage's time there).",
    )
    key_partitions: int = Field(
        1,
        ge=1,
        description="Split each band's buckets over this many tasks by key range: a bucket task holds "
        "about N x 48 / key_partitions bytes for N documents (raise it beyond ~100M documents).",
    )


class DedupConfig(StageConfig):
    """Exact and fuzzy deduplication; one document per duplicate cluster is kept."""

    exact: bool = Field(
        True,
        description="Drop documents whose normalised text (lower-case, punctuation to spaces, whitespace "
        "collapsed) equals another's.",
    )
    minhash: MinHashConfig = Field(default_factory=MinHashConfig, description="Fuzzy dedup (MinHash-LSH).")
    samples_per_reason: int = Field(
        5, ge=0, description="Dropped documents per reason logged to MLflow (PII scrubbed)."
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> DedupConfig:
        if self.enabled and not self.exact and not self.minhash.enabled:
            raise ValueError("exact and minhash.enabled are both false: switch the stage off instead")
        return self


SPEC = stage_spec(
    "dedup",
    impl="components.data.dedup:dedup",
    config=DedupConfig,
    inputs=("documents",),
    optional_inputs=("labels",),
    outputs=("documents", "dropped"),
    cpus=0,  # fans out Ray tasks (per shard, per band), each reserving its own CPU
    passthrough={"documents": "documents"},
)
