"""The `train_tokenizer` stage's config and declaration: without the stage's code (no pyarrow), so that a
pipeline config loads and validates fast; `components.tokenizer.train` is the code. The tokenizer fields
are `bpe.TokenizerConfig`'s, so `tokenizers` comes with them."""

from __future__ import annotations

from pydantic import Field

from components.core.config import StageConfig
from components.core.stage import stage_spec
from components.tokenizer.bpe import TokenizerConfig


class TrainTokenizerConfig(StageConfig, TokenizerConfig):
    """Train a byte-level BPE tokenizer on the curated corpus (or validate a given one).

    The tokenizer fields (`vocab_size`, `min_frequency`, `split_digits`, `pretokenizer`, `special_tokens`,
    `n_reserved`, `tokenizer_path`) are `TokenizerConfig`'s, inherited flat rather than nested under a
    `tokenizer:` key, so an override reads `train_tokenizer.vocab_size=8192`.
    """

    max_train_docs: int | None = Field(
        None, ge=1, description="Train on at most this many documents (an even sample); None = no cap."
    )
    max_train_chars: int | None = Field(
        1_000_000_000,
        ge=1,
        description="Train on at most this many characters (an even sample); BPE quality saturates after "
        "a few GB of text while training time keeps growing. None = no cap.",
    )
    heldout_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of documents (by hash of id) held out of training to measure bytes/token. "
        "Keep it >= tokenize.val_fraction so that validation documents never train the tokenizer.",
    )
    max_heldout_chars: int = Field(
        10_000_000, ge=1, description="At most this many held-out characters are encoded for bytes/token."
    )

    def external_inputs(self) -> list[str]:
        return [self.tokenizer_path] if self.tokenizer_path else []

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(**self.model_dump(include=set(TokenizerConfig.model_fields)))


SPEC = stage_spec(
    "train_tokenizer",
    impl="components.tokenizer.train:train_tokenizer",
    config=TrainTokenizerConfig,
    inputs=("documents",),
    outputs=("tokenizer",),
    cpus=1,
)
