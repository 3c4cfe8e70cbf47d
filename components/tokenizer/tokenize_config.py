"""The `tokenize` stage's config and declaration: light (no tokenizers, no pyarrow), so that a pipeline config
loads and validates fast; `components.tokenizer.tokenize` is the code."""

from __future__ import annotations

from pydantic import Field

from components.core.config import StageConfig
from components.core.stage import stage_spec


class TokenizeConfig(StageConfig):
    """Encode the curated corpus into token shards with a train/val split by document."""

    val_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of documents (by a hash of the document id, so stable when the corpus changes) "
        "that go to the val split. 0 = everything is train.",
    )
    min_train_tokens: int = Field(
        16_384,
        ge=0,
        description="Fail when the train split has fewer tokens: pretraining needs at least a few batches "
        "of batch_size x context_length tokens (16,384 = 2 batches of 32 x 256, the smoke model). Raise it "
        "with the pretraining batch; lower it only for toy runs.",
    )
    batch_docs: int = Field(
        512,
        ge=1,
        description="Documents per encode_batch call: the Rust encoder's parallel unit, and what one "
        "task holds in memory as token lists at a time.",
    )
    cpus_per_shard: float = Field(
        1.0,
        gt=0,
        description="CPUs reserved by each shard's Ray task; the Rust encoder uses that many threads.",
    )


SPEC = stage_spec(
    "tokenize",
    impl="components.tokenizer.tokenize:tokenize",
    config=TokenizeConfig,
    inputs=("documents", "tokenizer"),
    outputs=("tokens",),
    cpus=0,  # coordinates one Ray task per shard; those reserve the CPUs
)
