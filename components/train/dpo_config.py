"""The `dpo` stage's config and declaration: light (no torch), so that a pipeline config loads and validates
fast; `components.train.dpo` is the code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.core.stage import stage_spec
from components.train.trainer_config import TrainingConfig

DPOLoss = Literal["sigmoid", "ipo"]


class DPOConfig(TrainingConfig):
    """DPO: the objective (beta, loss), data, length of training, optimizer, evaluation and workers.

    The defaults are the `tiny` demo's, chosen by measurement on the tiny world (see the stage's
    issue): one epoch over the ~1,900 training pairs, 16 pairs per batch, beta 0.1."""

    # -- objective --
    beta: float = Field(
        0.1,
        gt=0,
        description="Strength of the KL tie to the reference (the SFT model): the implicit reward is "
        "beta * (log pi(y|x) - log pi_ref(y|x)). Smaller beta lets the policy move further.",
    )
    loss: DPOLoss = Field(
        "sigmoid",
        description="sigmoid: DPO's -log sigmoid(beta * h) (Rafailov et al. 2023); ipo: IPO's squared "
        "loss (h - 1/(2 beta))^2 (Azar et al. 2023), which pulls the log-ratio margin h to a finite "
        "target instead of pushing it to infinity. h = (log pi - log pi_ref)(chosen) - (same)(rejected).",
    )

    # -- data --
    max_length: int | None = Field(
        None,
        ge=2,
        description="Longest rendered prompt + completion in tokens; earlier turns are dropped to fit, "
        "a pair whose completion would be cut is skipped and counted. None = the model's context_length.",
    )

    # -- length of training --
    epochs: float | None = Field(1.0, gt=0, description="Passes over the training pairs.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; exclusive with epochs.")
    batch_size: int = Field(16, ge=1, description="Pairs per micro-batch (2x sequences).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")

    # -- optimizer --
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (matrices and embeddings only).")

    # -- evaluation, logging, checkpoints --
    eval_every: int = Field(
        50, ge=0, description="Held-out pair metrics every N steps (and at the end); 0 = end only."
    )
    val_limit: int | None = Field(None, ge=1, description="Held-out pairs evaluated; None = all.")
    eval_batch_size: int = Field(
        64, ge=1, description="Pairs per scoring batch (reference log-probs, held-out metrics)."
    )
    log_examples: int = Field(12, ge=0, description="Held-out pairs with their implicit rewards, as text.")
    checkpoint_every: int = Field(200, ge=1, description="Checkpoint every N steps (and at the last one).")

    # -- seed (numerics, workers, checkpoints: TrainingConfig) --
    seed: int | None = Field(None, description="Seed of data order and dropout; None = pipeline seed.")

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of epochs and max_steps (the other to null)")
        return self


SPEC = stage_spec(
    "dpo",
    impl="components.train.dpo:dpo",
    config=DPOConfig,
    inputs=("model", "preferences"),
    outputs=("policy",),
    cpus=0,  # only coordinates: the Ray Train workers reserve the CPUs / GPUs
)
