"""The `pretrain` stage's config and declaration: light (no torch), so that a pipeline config loads and
validates fast; `components.train.pretrain` is the code."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from components.core.config import ConfigError
from components.core.stage import stage_spec
from components.train.trainer_config import TrainingConfig

if TYPE_CHECKING:
    from components.model.gpt import GPTConfig


class PretrainConfig(TrainingConfig):
    """Pretraining: model shape, batches, optimizer, evaluation, checkpoints and workers.

    The defaults are the `tiny` demo's shape: a 4-layer, 256-wide LLaMA-style GPT (4.0M parameters with
    the tiny world's 3,036-token vocabulary) on 256-token rows. On 2 CPU cores with native bf16 the
    `tiny` demo's 1,000 steps of 8 rows take about four minutes and reach val loss 0.39 nats (unigram
    entropy 5.86) and 0.79 accuracy on the world's multiple-choice fact benchmark; its samples state
    the corpus's facts."""

    # -- model shape --
    depth: int | None = Field(
        4, ge=1, description="Layers; width = depth * aspect_ratio rounded up to whole heads (nanochat)."
    )
    aspect_ratio: int = Field(64, ge=1, description="Width per layer when the shape comes from depth.")
    head_dim: int = Field(
        64, ge=2, description="Width of one attention head when the shape comes from depth."
    )
    n_layer: int | None = Field(None, ge=1, description="Explicit shape: layers (with n_head, n_embd).")
    n_head: int | None = Field(None, ge=1, description="Explicit shape: attention heads.")
    n_embd: int | None = Field(None, ge=1, description="Explicit shape: width of the residual stream.")
    block: Literal["gpt2", "llama"] = Field("llama", description="Block style, see GPTConfig.")
    context_length: int = Field(256, ge=2, description="Longest sequence the model accepts, in tokens.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout (0 for pretraining from scratch).")
    pad_vocab_to: int = Field(
        1,
        ge=1,
        description="Round the embedding table up to a multiple of this (64 gives GPU-friendly shapes); "
        "the extra rows are never targets.",
    )

    # -- batches and length of training --
    seq_len: int | None = Field(
        None, ge=1, description="Tokens per training row; None = context_length. Must fit the context."
    )
    batch_size: int = Field(16, ge=1, description="Rows per micro-batch per worker.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (gradient accumulation).")
    max_steps: int | None = Field(1500, ge=1, description="Optimizer steps; exclusive with max_tokens.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Token budget: steps = ceil(max_tokens / tokens per step). Set max_steps: null.",
    )

    # -- optimizer --
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices and embeddings only).")

    # -- evaluation, samples, logging, checkpoints --
    eval_every: int = Field(
        250, ge=0, description="Validation loss and bits/byte every N steps; 0 = at the end."
    )
    eval_batches: int = Field(8, ge=1, description="Validation rows = eval_batches * batch_size.")
    sample_every: int = Field(
        500, ge=0, description="Log continuations of sample_prompts every N steps; 0 = at the end."
    )
    sample_prompts: list[str] = Field(
        default_factory=lambda: [
            "The capital of Ejon is",
            "The capital of Kuviro is",
            "The currency of Odend is the",
            "Reham Thidrem was born in",
        ],
        description="Prompts for the logged samples (each starts a document). The defaults ask for facts "
        "of the tiny world generated with seed 0.",
    )
    sample_tokens: int = Field(32, ge=1, description="Tokens generated per sample.")
    sample_temperature: float = Field(0.0, ge=0, description="0 = greedy, the model's most likely text.")
    checkpoint_every: int = Field(250, ge=1, description="Checkpoint every N steps (and at the last one).")

    # -- in-context copying (components/train/copy_rows.py): off by default --
    copy_warmup_steps: int = Field(
        0,
        ge=0,
        description="Optimizer steps on copy rows (a random block repeated to the row's end) before the "
        "corpus, with their own AdamW: the model crosses the induction-head plateau and learns to copy "
        "from its context. 0 = none. The tiny model needs ~750 of 32 x 128-token rows at lr 1e-3.",
    )
    copy_rows: int = Field(
        0,
        ge=0,
        description="Copy rows added to every corpus step, their loss weighted by their tokens like the "
        "corpus rows': without them pretraining on the corpus erases what the warm-up taught.",
    )
    copy_batch_size: int = Field(32, ge=1, description="Copy rows per warm-up step and worker.")
    copy_seq_len: int = Field(128, ge=2, description="Tokens per copy row; must fit the context.")
    copy_lr: float = Field(
        1e-3, gt=0, description="The warm-up's learning rate (after warmup_steps of linear warm-up)."
    )

    # -- seed and initialisation (numerics, workers, checkpoints: TrainingConfig) --
    seed: int | None = Field(None, description="Seed of init, data order and sampling; None = pipeline seed.")
    init_from: str | None = Field(
        None,
        description="Start from the weights of this model directory or pretrain checkpoint (continued "
        "pretraining); it must have exactly this model's shape.",
    )

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        explicit = [self.n_layer, self.n_head, self.n_embd]
        if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
            raise ValueError("n_layer, n_head and n_embd go together: set all three (or none, and depth)")
        if self.depth is None and not all(v is not None for v in explicit):
            raise ValueError("set depth, or n_layer, n_head and n_embd")
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ValueError("set exactly one of max_steps and max_tokens (the other to null)")
        return self

    @property
    def row_length(self) -> int:
        return self.seq_len or self.context_length

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        from components.model import gpt  # torch: only when a model is built

        padded = self.pad_vocab_to * math.ceil(vocab_size / self.pad_vocab_to)
        common = {"vocab_size": padded, "context_length": self.context_length, "block": self.block}
        if self.n_layer is not None:
            return gpt.GPTConfig(
                n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, **common
            )
        return gpt.GPTConfig.from_depth(
            self.depth, aspect_ratio=self.aspect_ratio, head_dim=self.head_dim, dropout=self.dropout, **common
        )


def check_config(config: PretrainConfig, inputs: Collection[str]) -> None:
    """Preflight: what the config alone rules out, before any stage runs."""
    if (config.copy_warmup_steps or config.copy_rows) and config.copy_seq_len > config.context_length:
        raise ConfigError(
            f"pretrain.copy_seq_len {config.copy_seq_len} is longer than the model's context_length "
            f"{config.context_length}: lower copy_seq_len"
        )
    if config.row_length > config.context_length:
        raise ConfigError(
            f"pretrain.seq_len {config.row_length} is longer than the model's context_length "
            f"{config.context_length}: lower seq_len or raise context_length"
        )


SPEC = stage_spec(
    "pretrain",
    impl="components.train.pretrain:pretrain",
    config=PretrainConfig,
    inputs=("tokens", "tokenizer"),
    outputs=("model",),
    cpus=0,  # only coordinates: the Ray Train workers reserve the CPUs / GPUs
    preflight=check_config,
)
