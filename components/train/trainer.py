"""Shared trainer utilities: what pretraining, SFT and the reward model each need around their loop.

- `Runtime` / `setup_runtime`: rank, device, compute dtype and the autocast context of one worker.
- `prepare_model`: DDP (gloo on CPU, NCCL on GPU: Ray Train picks the backend), FSDP2 for models that
  do not fit one GPU comfortably, optional torch.compile.
- `make_optimizer`, `lr_at`: AdamW over the model's decay / no-decay groups; linear warm-up, then
  cosine decay to `min_lr_ratio` of the peak.
- `optimizer_step`: gradient accumulation over micro-batches (gradients synchronised once, on the
  last one), then `clip_and_step` (clipping, the update); the loss is a parameter (`lm_loss` by
  default) for SFT and the RM.
- `save_checkpoint` / `load_checkpoint_weights` / `load_checkpoint_state`: model weights as safetensors;
  optimizer state, data position and RNG state beside them.
- `MetricLogger`: rank 0 logs into the stage's MLflow run; after a restart, steps the run already has
  are not logged again.
- `ScalingSettings`, `launch`: a Ray Train `TorchTrainer` from a small config, with its storage (and so
  its checkpoints) at a stable path so that a restarted worker group -- or a rerun of the stage after
  a crash -- continues from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from components.core.stage import StageContext
from components.core.staging import restage
from components.core.tracking import Tracker, TrackerHandle
from components.model.checkpoint import CheckpointError, load_state_compatible
from components.train.trainer_config import (
    DTypeSetting,
    ScalingSettings,
    Strategy,
    TrainingConfig,
)

log = logging.getLogger("gptrecipe.train")

# --- the worker's runtime -----------------------------------------------------------------------------


@dataclass
class Runtime:
    """Where and how one training worker computes."""

    rank: int
    world_size: int
    device: torch.device
    dtype: torch.dtype  # compute dtype of matmuls (autocast); parameters and optimizer state stay fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX). Where it does, bf16
    autocast trains the tiny model 2.3x faster than fp32 (2 EPYC cores: 11,600 vs 5,000 tokens/s); where
    it does not, bf16 is emulated and slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private but long-lived
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(setting: DTypeSetting, device: torch.device) -> torch.dtype:
    """ "auto" is bf16 where the hardware computes it natively (a GPU that has it, a CPU with AVX512-BF16
    or AMX) and fp32 otherwise. Parameters and optimizer state stay fp32 either way (autocast)."""
    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def setup_runtime(dtype: DTypeSetting = "auto", threads: int | None = None) -> Runtime:
    """The runtime of this process: inside a Ray Train worker its rank and device; elsewhere rank 0 of 1
    on the GPU if there is one. `threads` sets torch's intra-op threads (None: leave Ray's setting,
    OMP_NUM_THREADS = the worker's CPUs)."""
    if threads:
        torch.set_num_threads(threads)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    try:
        import ray.train.torch

        device = ray.train.torch.get_device()
    except Exception:  # not in a Ray Train worker
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # fp32 matmuls outside autocast (e.g. with dtype float32) may use TF32 tensor cores.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(rank=rank, world_size=world, device=device, dtype=resolve_dtype(dtype, device))


# --- model wrapping -----------------------------------------------------------------------------------


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def prepare_model(
    model: nn.Module, runtime: Runtime, *, strategy: Strategy = "ddp", compile: bool = False
) -> nn.Module:
    """Move `model` to the worker's device and wrap it for data-parallel training; returns the module to
    call in the training step. `model` itself stays usable for evaluation, generation and state dicts
    (under FSDP2 it *is* the sharded root: `fully_shard` works in place).

    ddp: every worker holds the whole model; gradients are all-reduced in backward. Only wrapped when
        there is more than one worker.
    fsdp: FSDP2; parameters, gradients and optimizer state sharded over the workers, each transformer
        block gathered just in time (one `fully_shard` per block, then the root for the embeddings, the
        final norm and the head). With bf16 the gathered parameters are bf16, gradients reduced in fp32.
    """
    model.to(runtime.device)
    train_model = model
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=runtime.dtype, reduce_dtype=torch.float32)
        for block in model.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    elif runtime.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [runtime.device] if runtime.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    if compile:
        train_model = torch.compile(train_model)
    return train_model


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Make an FSDP2 root's own parameters (embeddings, final norm, head) whole for calls that bypass its
    forward, such as generation with a KV cache; blocks gather themselves. A no-op for other models."""
    if not is_fsdp(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


# --- optimizer and schedule ---------------------------------------------------------------------------


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    device: torch.device,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `model.optimizer_groups(weight_decay)`: matrices and embeddings decay, biases and norm
    gains do not. The fused kernel on a GPU (one launch for all parameters) unless told otherwise."""
    groups = model.optimizer_groups(weight_decay)
    if fused is None:
        fused = device.type == "cuda" and not is_fsdp(model)  # FSDP2's DTensors: foreach is the safe path
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def lr_at(step: int, *, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up over `warmup_steps` to `lr`, then
    cosine decay to `min_lr_ratio * lr` at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch of an accumulation:
    the gradients add up locally and are synchronised once."""
    inner = getattr(model, "_orig_mod", model)  # under torch.compile
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2
        inner.set_requires_gradient_sync(enabled)
        yield
    elif hasattr(inner, "no_sync") and not enabled:  # DDP
        with inner.no_sync():
            yield
    else:
        yield


def lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor], runtime: Runtime) -> Tensor:
    """Next-token loss of a micro-batch (x, y) of token ids (targets -100 are ignored)."""
    x, y = batch
    x = x.to(runtime.device, non_blocking=True)
    y = y.to(runtime.device, non_blocking=True)
    with runtime.autocast():
        _, loss = model(x, y)
    return loss


def clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> Tensor:
    """Clip the global gradient norm to `grad_clip` (0 = no clipping, the norm is still measured), update,
    clear the gradients. Returns the norm before clipping, a tensor on the device."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Any],
    runtime: Runtime,
    *,
    grad_clip: float,
    loss_fn: Callable[[nn.Module, Any, Runtime], Tensor | tuple[Tensor, Tensor]] = lm_loss,
) -> tuple[Tensor, Tensor]:
    """One optimizer step over `micro_batches`: forward and backward of each with its loss
    (`loss_fn(model, batch, runtime)`, the language-model loss of (x, y) by default) divided by their
    number, so the accumulated gradient is the mean over all of them; then `clip_and_step`.

    A `loss_fn` may return (loss, figures): a tensor of the micro-batch's figures to average instead of
    the loss (the reward model's loss, accuracy, margin, ...). Returns this worker's mean of the loss (or
    of the figures) and the gradient norm before clipping, as tensors on the device (reading them forces
    a GPU sync, so callers do it only when they log)."""
    n = len(micro_batches)
    total = None
    for i, batch in enumerate(micro_batches):
        with gradient_sync(model, enabled=i == n - 1):
            out = loss_fn(model, batch, runtime)
            loss, figures = out if isinstance(out, tuple) else (out, out)
            (loss / n).backward()
        if total is None:
            total = torch.zeros(figures.shape, device=runtime.device)
        total += figures.detach()
    return total / n, clip_and_step(model, optimizer, grad_clip)


def mean_over_workers(value: Tensor, runtime: Runtime) -> float:
    """The mean of a scalar over all workers (every worker must call this)."""
    if runtime.world_size > 1:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= runtime.world_size
    return float(value)


def sum_over_workers(values: Tensor, runtime: Runtime) -> Tensor:
    if runtime.world_size > 1:
        values = values.detach().clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def scores_across_workers(
    items: Sequence[Any],
    runtime: Runtime,
    batch_size: int,
    score: Callable[[Sequence[Any]], Tensor],
    per_item: int = 1,
) -> Tensor:
    """(per_item, len(items)) scores of every item, on the CPU, in `items` order; `score(batch)` returns
    a (per_item, len(batch)) tensor. Rank r scores items r, r + world_size, ... and the scores are
    gathered. Every rank runs the same number of batches (FSDP's all-gathers pair up): a rank out of
    items scores `items[:1]` and drops the result. Every worker must call this."""
    world, rank = runtime.world_size, runtime.rank
    mine = list(items[rank::world])
    parts = [torch.zeros(per_item, 0)]
    for lo in range(0, -(-len(items) // world), batch_size):
        batch = mine[lo : lo + batch_size]
        scores = score(batch or list(items[:1])).detach().float().cpu()
        if batch:
            parts.append(scores)
    ours = torch.cat(parts, dim=1)
    if world == 1:
        return ours
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, ours)
    out = torch.zeros(per_item, len(items))
    for k, part in enumerate(gathered):  # rank k holds items k, k + world, ...
        out[:, k::world] = part
    return out


# --- checkpoints --------------------------------------------------------------------------------------

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
PROGRESS_FILE = "progress.json"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank:05d}.pt"


def tied_parameter_names(model: nn.Module) -> set[str]:
    """Names under which an already-listed parameter appears again (a tied LM head)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The whole model's weights on CPU, each tied tensor once (safetensors refuses shared memory).
    Every worker must call this (under FSDP2 it gathers the shards); only rank 0 gets them there."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = model.state_dict()
    tied = tied_parameter_names(model)
    return {name: t.detach().cpu().contiguous() for name, t in state.items() if name not in tied}


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    runtime: Runtime,
) -> None:
    """Write a training checkpoint into `directory` (every worker calls this, with its own directory
    when Ray Train merges them):

        model.safetensors   the weights (rank 0), loadable without pickle
        optimizer.pt        AdamW's state, keyed by parameter name (rank 0)
        progress.json       step, data position, tokens seen, ... (rank 0)
        rng-rankNNNNN.pt    this worker's torch RNG state (every rank: dropout masks differ per rank)

    `model` is the unwrapped model (the FSDP2 root under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = full_model_state(model)
    optim_state = get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if runtime.is_main:
        save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        torch.save(optim_state, directory / OPTIMIZER_FILE)
        (directory / PROGRESS_FILE).write_text(json.dumps(progress, indent=2, sort_keys=True) + "\n")
    rng = {"torch": torch.get_rng_state()}
    if runtime.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(runtime.device)
    torch.save(rng, directory / rng_file(runtime.rank))


def read_progress(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint's progress record: {e}") from None


def load_checkpoint_weights(directory: str | Path, model: nn.Module) -> None:
    """Load a checkpoint's (or a model directory's) model.safetensors into the unwrapped, not yet
    sharded `model`. Refused with a CheckpointError naming every tensor whose name or shape differs."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
    load_state_compatible(model, state, source=f"checkpoint {path}")


def load_checkpoint_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime
) -> dict[str, Any]:
    """Restore the optimizer state (resharded for FSDP2) and this worker's RNG state from a checkpoint
    written by `save_checkpoint`; return its progress record. Nothing here is unpickled beyond tensors
    and plain containers (`weights_only=True`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    directory = Path(directory)
    optim_state = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=optim_state, options=StateDictOptions(full_state_dict=True)
    )
    rng_path = directory / rng_file(runtime.rank)
    if rng_path.exists():
        rng = torch.load(rng_path, map_location="cpu", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and runtime.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], runtime.device)
    else:  # the run was restarted with more workers than wrote the checkpoint
        log.warning("%s has no RNG state for rank %d; keeping a fresh seed", directory, runtime.rank)
    return read_progress(directory)


# --- metrics to MLflow --------------------------------------------------------------------------------


def logged_steps(handle: TrackerHandle) -> dict[str, int] | None:
    """The last step logged for each metric of the handle's run; None if MLflow cannot be asked."""
    if handle.run_id is None:
        return {}
    try:
        from mlflow import MlflowClient

        client = MlflowClient(handle.tracking_uri)
        keys = client.get_run(handle.run_id).data.metrics.keys()
        return {key: max(m.step for m in client.get_metric_history(handle.run_id, key)) for key in keys}
    except Exception as e:
        log.warning("cannot read the metric history of run %s (%s)", handle.run_id, e)
        return None


class MetricLogger:
    """MLflow logging from a training worker: rank 0 logs into the stage's run, other ranks do nothing.

    A restarted worker (Ray Train restarts the group from the last checkpoint at step k, or from
    scratch when the group died before the controller collected any checkpoint) recomputes steps the
    run may already have. So the logger first asks MLflow for the last step of every metric and then
    drops a (metric, step) that is not newer; the recomputed values are the same (training is
    deterministic), so the history reads as one uninterrupted run. If MLflow cannot be asked, it drops
    steps <= `resumed_step` only."""

    def __init__(
        self,
        handle: TrackerHandle | None,
        runtime: Runtime,
        *,
        resumed_step: int | None = None,
        spool_dir: str | Path | None = None,
    ):
        self.tracker = None
        self._last: dict[str, int] = {}
        self._floor = -1  # steps <= floor are dropped for keys the history does not know
        if handle is None or not runtime.is_main:
            return
        self.tracker = Tracker.from_handle(handle, spool_dir=spool_dir)
        history = logged_steps(handle)
        if history is not None:
            self._last = history
        elif resumed_step is not None:
            self._floor = resumed_step

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        if self.tracker is None:
            return
        fresh = {
            key: value
            for key, value in metrics.items()
            if value is not None and step > self._last.get(key, self._floor)
        }
        if fresh:
            self.tracker.log_metrics(fresh, step)

    def log_text(self, text: str, name: str) -> None:
        if self.tracker is not None:
            self.tracker.log_text(text, name)

    def flush(self) -> None:
        if self.tracker is not None:
            self.tracker.flush()


# --- launching on Ray Train ---------------------------------------------------------------------------


def launch(
    train_fn: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    scaling: ScalingSettings,
    *,
    name: str,
    storage_path: str,
    keep_checkpoints: int | None = 2,
):
    """Run `train_fn(loop_config)` on Ray Train workers and return the `ray.train.Result`.

    Ray Train keeps its run state and checkpoints under `storage_path/name`. When a worker dies, the
    group is restarted (up to `scaling.max_failures` times) and `ray.train.get_checkpoint()` returns the
    latest checkpoint; a later `launch` with the same name and storage path (a rerun of the stage after
    its process died) finds the same state and resumes too. Raises `ray.train.TrainingFailedError` when
    the workers fail for good. Call it from the driver or from a Ray task that holds no CPU (the stage
    declares cpus=0): the workers need the CPUs."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit()


def train_on_workers(
    ctx: StageContext,
    train_fn: Callable[[dict[str, Any]], None],
    config: TrainingConfig,
    plan: Any,
    build_model: Callable[[], nn.Module],
    *,
    name: str,
) -> tuple[nn.Module, dict[str, Any]]:
    """The driver side of a training stage: run `train_fn` on Ray Train workers (its loop config carries
    the stage config, the plan and the stage's tracker), check that the final checkpoint is at
    `plan.max_steps` (every stage's plan has it), and return `build_model()` loaded with its weights,
    and its progress record."""
    loop_config = {
        "config": config.model_dump(mode="json"),
        "plan": plan,
        "tracker": ctx.tracker_handle(),
        "spool_dir": ctx.scratch_uri("tracking") if ctx.store.is_local else None,
        "staged": ctx.staged_inputs(),
    }
    result = launch(
        functools.partial(_on_this_node, train_fn),
        loop_config,
        config.scaling,
        name=name,
        storage_path=ctx.scratch_uri("ray_train"),
        keep_checkpoints=config.keep_checkpoints,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"{name} finished without a checkpoint")
    with result.checkpoint.as_directory() as final:
        progress = read_progress(final)
        if progress["step"] != plan.max_steps:
            raise RuntimeError(f"the last checkpoint is at step {progress['step']}, not {plan.max_steps}")
        model = build_model()
        load_checkpoint_weights(final, model)
    return model, progress


def _on_this_node(train_fn: Callable[[dict[str, Any]], None], loop_config: dict[str, Any]) -> None:
    """Run a worker's loop with the plan's input paths valid on this worker's node (`restage`)."""
    with restage(loop_config["staged"]) as move:
        train_fn({**loop_config, "plan": move(loop_config["plan"])})


def report_checkpoint(directory: str | Path, metrics: dict[str, float], step: int) -> None:
    """Hand this worker's checkpoint directory to Ray Train (every worker calls it: it is a barrier;
    Ray Train merges the workers' directories into one `checkpoint_<step>` in its storage)."""
    import ray.train

    ray.train.report(
        metrics,
        checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
        checkpoint_dir_name=f"checkpoint_{step:08d}",
    )


def latest_checkpoint_dir() -> contextlib.AbstractContextManager[Path | None]:
    """The directory of Ray Train's latest checkpoint for this run (None at a fresh start)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def as_path() -> Iterator[Path]:
        with checkpoint.as_directory() as d:
            yield Path(d)

    return as_path()
