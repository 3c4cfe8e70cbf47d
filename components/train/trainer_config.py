"""The config every Ray Train stage shares (`TrainingConfig`, `ScalingSettings`): light, so that a
pipeline config validates without importing torch (`components.train.trainer` is the code)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.core.config import StageConfig, StrictModel

DTypeSetting = Literal["auto", "float32", "bfloat16"]


DTYPE_HELP = "Compute dtype: auto = bf16 where the GPU or CPU has it natively, else fp32 (resolve_dtype)."


Strategy = Literal["ddp", "fsdp"]


class ScalingSettings(StrictModel):
    """How many Ray Train workers, on what, and how often a failed worker group is restarted."""

    num_workers: int = Field(1, ge=1, description="Training workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker; NCCL between them (gloo on CPU).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPU cores reserved per worker.")
    max_failures: int = Field(
        2,
        ge=-1,
        description="Restarts of the worker group after a worker dies, each from the latest checkpoint "
        "(-1 = unlimited, 0 = fail at once).",
    )


class TrainingConfig(StageConfig):
    """The fields every Ray Train stage shares (pretrain, sft, reward_model): optimizer details, logging
    and checkpoint cadence, numerics and workers. Each stage adds its data, length and schedule."""

    # -- optimizer --
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay ends at this fraction of lr.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 = off.")

    # -- logging and checkpoints --
    log_every: int = Field(10, ge=1, description="Log training metrics every N steps (and at step 1).")
    progress_every_s: float = Field(
        10.0,
        ge=0,
        description="A progress line (step, loss, throughput, ETA) in the log at a logging step at most "
        "every N seconds, and at the first and last step; 0 = at every logging step.",
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints Ray Train keeps (the newest).")

    # -- numerics and execution --
    dtype: DTypeSetting = Field("auto", description=DTYPE_HELP)
    compile: bool = Field(False, description="torch.compile the model (GPU runs; minutes of warm-up on CPU).")
    strategy: Strategy = Field("ddp", description="ddp: replicas; fsdp: FSDP2 sharding (large models).")
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="Ray Train workers.")
    torch_threads: int | None = Field(
        None, ge=1, description="Torch threads per worker; None = the worker's CPUs (cpus_per_worker)."
    )
