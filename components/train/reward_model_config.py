"""The `reward_model` stage's config and declaration: light (no torch), so that a pipeline config loads and
validates fast; `components.train.reward_model` is the code."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.core.stage import stage_spec
from components.train.trainer_config import TrainingConfig


class RewardModelConfig(TrainingConfig):
    """Reward model: data, length of training, optimizer, evaluation, checkpoints and workers.

    The defaults are the `tiny` demo, chosen by measurement on the tiny world: two epochs over the
    ~1,900 training pairs, 16 pairs per batch, peak learning rate 3e-4."""

    # -- data --
    max_length: int | None = Field(
        None,
        ge=2,
        description="Longest rendered prompt + completion in tokens; earlier turns are dropped to fit, "
        "a pair whose completion would be cut is skipped and counted. None = the model's context_length.",
    )

    # -- length of training --
    epochs: float | None = Field(2.0, gt=0, description="Passes over the training pairs.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; exclusive with epochs.")
    batch_size: int = Field(16, ge=1, description="Pairs per micro-batch (2x sequences).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")

    # -- objective and optimizer --
    center_rewards_coef: float = Field(
        0.0,
        ge=0,
        description="Weight of mean((r_chosen + r_rejected)^2), which keeps rewards near 0; 0 = off.",
    )
    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (matrices and embeddings only).")

    # -- evaluation, logging, checkpoints --
    eval_every: int = Field(
        100,
        ge=0,
        description="Held-out pair metrics every N steps (and at the end); 0 = end only.",
    )
    val_limit: int | None = Field(None, ge=1, description="Held-out pairs evaluated; None = all.")
    stats_limit: int | None = Field(
        None, ge=1, description="Training pairs scored for reward_stats at the end; None = all."
    )
    eval_batch_size: int = Field(64, ge=1, description="Pairs per scoring batch.")
    log_examples: int = Field(12, ge=0, description="Scored held-out pairs in the text artifact.")
    checkpoint_every: int = Field(200, ge=1, description="Checkpoint every N steps (and at the last one).")

    # -- seed (numerics, workers, checkpoints: TrainingConfig) --
    seed: int | None = Field(None, description="Seed of data order and dropout; None = pipeline seed.")

    @model_validator(mode="after")
    def _check(self) -> RewardModelConfig:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of epochs and max_steps (the other to null)")
        return self


SPEC = stage_spec(
    "reward_model",
    impl="components.train.reward_model:reward_model",
    config=RewardModelConfig,
    inputs=("model", "preferences"),
    outputs=("reward_model",),
    cpus=0,  # only coordinates: the Ray Train workers reserve the CPUs / GPUs
)
