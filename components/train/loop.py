"""The training loop of pretraining, SFT and the reward model: one loop, three step functions.

A stage's Ray Train worker (`train_worker` in pretrain.py, sft.py, reward_model.py) creates a `TrainLoop`,
which sets the worker up -- runtime, seeds, the model from the latest checkpoint or from the stage's
starting weights, AdamW, the RNG state, the MLflow logger -- and then calls `run` with what only the stage
knows: its data, its step (`StepResult`) and its evaluations (`Periodic`). `run` reads top to bottom:

    while step < max_steps:
        learning rate of this step (linear warm-up, cosine decay), the stage's step
        every log_every steps (and the first and last): training metrics, throughput, a progress line
        each evaluation every its N steps (and at the last): the stage's function
        every checkpoint_every steps (and at the last): a checkpoint reported to Ray Train
        the callbacks (tests inject failures there)

Resume. A checkpoint holds everything the next step depends on (weights, AdamW state, step, data
position, RNG, the summary so far), so a resumed run computes the same losses as an uninterrupted one;
see `MetricLogger` for how the MLflow history stays free of duplicated steps.

Progress. Rank 0 writes lines to the logger 'gptrecipe.<stage>' (stderr, which Ray forwards to the
driver): where the run starts or resumes, and at log steps -- at most every `progress_every_s` seconds
-- the step, loss, throughput and ETA. Lines, not a progress bar, so a log file reads as well as a
terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from components.core.artifacts import scratch_dir
from components.io.token_stream import DataPosition
from components.train.throughput import mfu, peak_flops, peak_memory_mb
from components.train.trainer import (
    MetricLogger,
    TrainingConfig,
    latest_checkpoint_dir,
    load_checkpoint_state,
    lr_at,
    make_optimizer,
    prepare_model,
    report_checkpoint,
    save_checkpoint,
    set_lr,
    setup_runtime,
)

# A callback runs after every step, on every rank, once the step's logging, evaluations and checkpoint
# are done: `callback(loop, step)`. Production passes none; tests kill a worker from one.
Callback = Callable[["TrainLoop", int], None]


@dataclass
class StepResult:
    """What a stage's step function hands back to the loop."""

    work: int  # tokens (pairs for the reward model) the step trained on, all workers together
    # The step's training metrics ("train/loss" among them). Called on logging steps only, by every rank
    # (it may all-reduce); reading device tensors waits for the device, so the timing after it is real.
    metrics: Callable[[], dict[str, float | None]]


@dataclass
class Periodic:
    """Something a stage does every `every` steps (0 = only at the last step) and at the last step, such
    as an evaluation: `fn(step)`. Its time is left out of the throughput figures."""

    every: int
    fn: Callable[[int], None]

    def due(self, step: int, last: bool) -> bool:
        return bool(self.every and step % self.every == 0) or last


class Batches(Protocol):
    """The stage's data: the loop only records where it is (the stage's step draws from it)."""

    @property
    def position(self) -> DataPosition: ...


def worker_logging() -> None:
    """A Ray Train worker is a fresh process where the 'gptrecipe' loggers have no handler (INFO would be
    dropped): write to stderr, which Ray forwards to the driver, as the driver's own lines look."""
    root = logging.getLogger("gptrecipe")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def duration(seconds: float) -> str:
    """45s, 3m12s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class TrainLoop:
    """One Ray Train worker's training loop; every rank creates one, rank 0 logs and writes.

    `config` is the stage's config: TrainingConfig plus the stage's lr, warmup_steps, weight_decay and
    checkpoint_every. `plan` has max_steps and seed. `build_model(checkpoint)` returns the unwrapped model
    with its starting weights: the checkpoint's when there is one (checkpoint is its directory), else the
    stage's own (pretrained weights, a fresh init). `unit` names what `StepResult.work` counts ("tokens",
    "pairs"); `flops_per_token`, when given, adds MFU on GPUs with a known peak.

    After construction: `model` (unwrapped: evaluation, generation, state dicts), `train_model` (the one
    to step), `optimizer`, `runtime`, `step` (0, or the checkpoint's), `resumed` (whether it restored a
    checkpoint), `progress` (the checkpoint's record, for the stage's data position), `summary` (figures
    carried from checkpoint to checkpoint into the stage's output), `logger`."""

    def __init__(
        self,
        stage: str,
        config: TrainingConfig,
        plan: Any,
        loop_config: dict[str, Any],
        build_model: Callable[[Path | None], nn.Module],
        *,
        unit: str = "tokens",
        flops_per_token: float | None = None,
    ):
        worker_logging()
        self.stage, self.cfg, self.unit = stage, config, unit
        self.max_steps: int = plan.max_steps
        self.flops_per_token = flops_per_token
        self.log = logging.getLogger(f"gptrecipe.{stage}")
        self.callbacks: Sequence[Callback] = loop_config.get("callbacks", ())
        cfg = config
        self.runtime = runtime = setup_runtime(
            cfg.dtype, cfg.torch_threads or max(1, int(cfg.scaling.cpus_per_worker))
        )

        # The same initial weights on every worker (DDP would broadcast them anyway; FSDP2 shards them).
        torch.manual_seed(plan.seed)
        with latest_checkpoint_dir() as checkpoint:
            self.model = build_model(checkpoint)
            self.train_model = prepare_model(self.model, runtime, strategy=cfg.strategy, compile=cfg.compile)
            self.optimizer = make_optimizer(
                self.model,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                betas=cfg.betas,
                eps=cfg.eps,
                device=runtime.device,
            )
            torch.manual_seed(plan.seed + 1 + runtime.rank)  # dropout masks differ between workers
            self.progress = (
                load_checkpoint_state(checkpoint, self.model, self.optimizer, runtime) if checkpoint else None
            )

        self.peak = peak_flops(runtime.device)
        self.resumed = self.progress is not None
        self.step: int = self.progress["step"] if self.progress else 0
        # Work and seconds of the logged intervals (the first step's warm-up left out): the throughput.
        self.timing: dict[str, float] = (
            self.progress["timing"] if self.progress else {unit: 0, "seconds": 0.0}
        )
        self.summary: dict[str, Any] = self.progress["summary"] if self.progress else {}
        self.seen: int = self.summary.get(f"{unit}_seen", 0)
        self.logger = MetricLogger(
            loop_config["tracker"],
            runtime,
            resumed_step=self.step if self.resumed else None,
            spool_dir=loop_config.get("spool_dir"),
        )
        if self.resumed:
            if self.logger.tracker is not None:
                self.logger.tracker.set_tags({f"{stage}.resumed_from_step": self.step})
            self.info("resuming from the checkpoint at step %d of %d", self.step, self.max_steps)
        else:
            self.info("starting: %d steps on %d worker(s)", self.max_steps, runtime.world_size)

    @property
    def data_position(self) -> DataPosition | None:
        """Where the checkpoint left the stage's data (None at a fresh start)."""
        return DataPosition.from_dict(self.progress["data"]) if self.progress else None

    def info(self, message: str, *args: Any) -> None:
        """A progress line, from rank 0 only."""
        if self.runtime.is_main:
            self.log.info(message, *args)

    # --- the loop -------------------------------------------------------------------------------------

    def run(self, data: Batches, train_step: Callable[[], StepResult], periodic: Sequence[Periodic] = ()):
        """Train from `step` to `max_steps`: the loop of the module docstring."""
        cfg = self.cfg
        self.model.train()
        started, started_step, last_line = time.perf_counter(), self.step, float("-inf")
        interval_start, interval_work = time.perf_counter(), 0
        while self.step < self.max_steps:
            lr = lr_at(
                self.step,
                max_steps=self.max_steps,
                lr=cfg.lr,
                warmup_steps=cfg.warmup_steps,
                min_lr_ratio=cfg.min_lr_ratio,
            )
            set_lr(self.optimizer, lr)
            result = train_step()
            self.step += 1
            step, last = self.step, self.step == self.max_steps
            self.seen += result.work
            interval_work += result.work

            if step % cfg.log_every == 0 or step == 1 or last:
                metrics = result.metrics()  # first: it waits for the device, so the timing below is real
                seconds = time.perf_counter() - interval_start
                per_s = interval_work / seconds
                if step > 1 or self.max_steps == 1:  # the first step pays for warm-up; keep it out
                    self.timing = {
                        self.unit: self.timing[self.unit] + interval_work,
                        "seconds": self.timing["seconds"] + seconds,
                    }
                self.summary["train_loss"] = metrics["train/loss"]
                self.logger.log(metrics | self._throughput(lr, per_s), step)
                now = time.perf_counter()
                if step == 1 or last or now - last_line >= cfg.progress_every_s:
                    eta = (now - started) / (step - started_step) * (self.max_steps - step)
                    self.info(
                        "step %d/%d: loss %.4f, lr %.2e, %s %s/s, ETA %s",
                        step,
                        self.max_steps,
                        metrics["train/loss"],
                        lr,
                        f"{per_s:,.0f}",
                        self.unit,
                        duration(eta),
                    )
                    last_line = now
                interval_start, interval_work = time.perf_counter(), 0

            paused = False  # evaluations and checkpoints stay out of the throughput figures
            for job in periodic:
                if job.due(step, last):
                    job.fn(step)
                    paused = True
            if step % cfg.checkpoint_every == 0 or last:
                self.checkpoint(data)
                paused = True
            for callback in self.callbacks:
                callback(self, step)
            if paused:
                interval_start, interval_work = time.perf_counter(), 0
        self.logger.flush()
        if self.step > started_step:
            self.info("done: step %d in %s", self.step, duration(time.perf_counter() - started))

    def _throughput(self, lr: float, per_s: float) -> dict[str, float | None]:
        metrics = {
            "train/lr": lr,
            f"train/{self.unit}_per_s": per_s,
            f"train/{self.unit}_seen": self.seen,
            "train/peak_memory_mb": peak_memory_mb(self.runtime.device),
        }
        if self.flops_per_token is not None:
            metrics["train/mfu"] = mfu(per_s / self.runtime.world_size, self.flops_per_token, 1, self.peak)
        return metrics

    def checkpoint(self, data: Batches) -> None:
        """Save and report a checkpoint of this step (every worker: it is a barrier)."""
        seconds = self.timing["seconds"]
        self.summary[f"{self.unit}_per_s"] = self.timing[self.unit] / seconds if seconds else None
        self.summary[f"{self.unit}_seen"] = self.seen
        progress = {
            "step": self.step,
            "data": data.position.to_dict(),
            "timing": self.timing,
            "summary": self.summary,
        }
        self.logger.flush()  # what is logged up to this checkpoint reaches MLflow before it counts
        with scratch_dir("gptrecipe-ckpt-") as tmp:
            save_checkpoint(tmp, self.model, self.optimizer, progress, self.runtime)
            report_checkpoint(tmp, {"step": self.step}, self.step)
