"""The `sft` stage's config and declaration: light (no torch), so that a pipeline config loads and
validates fast; `components.train.sft` is the code."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.core.stage import stage_spec
from components.train.trainer_config import TrainingConfig


class SFTConfig(TrainingConfig):
    """SFT: data, length of training, optimizer, evaluation, checkpoints and workers.

    The defaults are the `tiny` demo, chosen by measurement on the tiny world (see the SFT note in the
    stage's issue): 3 epochs of the ~1,600 training conversations in batches of 16 at a peak learning
    rate of 1e-3 (a third of pretraining's), which takes the 3.3M-parameter pretrained model to near
    perfect format compliance in about a minute on 2 CPU cores."""

    # -- data --
    max_length: int | None = Field(
        None,
        ge=2,
        description="Longest rendered conversation in tokens (render's truncation rules apply; "
        "conversations that cannot fit are skipped and counted); None = the model's context_length.",
    )
    packing: bool = Field(
        False,
        description="Concatenate conversations into rows of max_length tokens (attention crosses "
        "conversations within a row; the loss stays on assistant tokens). See chat_batches.",
    )

    # -- length of training --
    epochs: float | None = Field(3.0, gt=0, description="Passes over the training conversations.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; exclusive with epochs.")
    batch_size: int = Field(16, ge=1, description="Rows (conversations, or packed rows) per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")

    # -- optimizer --
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (matrices and embeddings only).")

    # -- evaluation, samples, logging, checkpoints --
    eval_every: int = Field(
        100, ge=0, description="Validation loss on the held-out conversations every N steps; 0 = at the end."
    )
    val_limit: int | None = Field(
        None, ge=1, description="Held-out conversations for the validation loss; None = all."
    )
    chat_eval_every: int = Field(
        0, ge=0, description="chat_eval of the model every N steps; 0 = only at the end (and the base)."
    )
    eval_base: bool = Field(
        True, description="Evaluate the pretrained model first (step 0), for the base_* figures."
    )
    eval_limit: int | None = Field(
        None, ge=1, description="Held-out prompts for chat_eval (prompts test split); None = all."
    )
    max_new_tokens: int = Field(
        128, ge=1, description="Longest generated reply in chat_eval (the tiny world's longest is ~100)."
    )
    eval_batch_size: int = Field(64, ge=1, description="Prompts per generation batch / rows per val batch.")
    log_samples: int = Field(16, ge=0, description="Sample conversations per text artifact.")
    checkpoint_every: int = Field(200, ge=1, description="Checkpoint every N steps (and at the last one).")

    # -- seed (numerics, workers, checkpoints: TrainingConfig) --
    seed: int | None = Field(None, description="Seed of data order and dropout; None = pipeline seed.")

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of epochs and max_steps (the other to null)")
        return self


SPEC = stage_spec(
    "sft",
    impl="components.train.sft:sft",
    config=SFTConfig,
    inputs=("model", "sft", "prompts"),
    outputs=("model",),
    cpus=0,  # only coordinates: the Ray Train workers reserve the CPUs / GPUs
)
