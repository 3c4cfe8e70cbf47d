"""TrainLoop without Ray: the cadence of logging, evaluations, checkpoints and callbacks, the progress
lines, and a resume from a checkpoint continuing to the very same losses. Ray Train's checkpoint hand-over
is replaced by a directory per reported step."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import Field

from components.io.token_stream import DataPosition
from components.model.gpt import GPT, GPTConfig
from components.train import loop as loop_module
from components.train.loop import Periodic, StepResult, TrainLoop, duration
from components.train.trainer import TrainingConfig, load_checkpoint_weights, optimizer_step

SHAPE = GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1)


class LoopConfig(TrainingConfig):
    lr: float = Field(1e-2)
    warmup_steps: int = Field(2)
    weight_decay: float = Field(0.1)
    checkpoint_every: int = Field(3)


class Rows:
    """A deterministic stream: step s trains on two micro-batches drawn from a generator seeded by s."""

    def __init__(self, position: DataPosition | None):
        self.position = position or DataPosition()

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.position.row)
        self.position = DataPosition(self.position.epoch, self.position.row + 1)
        ids = torch.randint(0, 64, (2, 2, 17), generator=g)
        return [(m[:, :-1], m[:, 1:]) for m in ids]


@pytest.fixture
def ray_train(monkeypatch, tmp_path):
    """Stand-ins for Ray Train: `state["latest"]` is the checkpoint a worker starts from; every reported
    checkpoint is copied to tmp_path/reported/step-N."""
    state = {"latest": None, "reported": tmp_path / "reported"}

    def latest_checkpoint_dir():
        return contextlib.nullcontext(state["latest"])

    def report_checkpoint(directory, metrics, step):
        shutil.copytree(directory, state["reported"] / f"step-{step}")

    monkeypatch.setattr(loop_module, "latest_checkpoint_dir", latest_checkpoint_dir)
    monkeypatch.setattr(loop_module, "report_checkpoint", report_checkpoint)
    monkeypatch.setattr(loop_module, "worker_logging", lambda: None)  # leave pytest's logging alone
    return state


@pytest.fixture
def lines():
    """The messages of the loop's logger 'gptrecipe.test' (caught here: 'gptrecipe' may not propagate)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("gptrecipe.test")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def train(max_steps: int = 8, *, callbacks=(), eval_every: int = 4, **overrides) -> tuple[TrainLoop, dict]:
    """Run a TrainLoop over a tiny GPT; returns it and what happened: losses by step, evaluation steps."""
    defaults = {"log_every": 1, "torch_threads": torch.get_num_threads(), "dtype": "float32"}
    cfg = LoopConfig(**(defaults | overrides))
    plan = SimpleNamespace(max_steps=max_steps, seed=3)
    seen: dict = {"losses": {}, "evals": [], "finals": []}

    def build_model(checkpoint: Path | None) -> GPT:
        model = GPT(SHAPE)
        if checkpoint is not None:
            load_checkpoint_weights(checkpoint, model)
        return model

    loop = TrainLoop("test", cfg, plan, {"tracker": None, "callbacks": callbacks}, build_model)
    data = Rows(loop.data_position)

    def train_step() -> StepResult:
        loss, _ = optimizer_step(
            loop.train_model, loop.optimizer, data.next_step(), loop.runtime, grad_clip=1.0
        )

        def metrics() -> dict:
            seen["losses"][loop.step] = float(loss)
            return {"train/loss": float(loss)}

        return StepResult(work=64, metrics=metrics)

    def evaluate(step: int) -> None:
        seen["evals"].append(step)
        loop.summary["val_at"] = step

    loop.run(
        data,
        train_step,
        [Periodic(eval_every, evaluate), Periodic(0, lambda step: seen["finals"].append(step))],
    )
    return loop, seen


def test_cadence_progress_lines_and_callbacks(ray_train, lines):
    calls = []
    loop, seen = train(callbacks=[lambda loop, step: calls.append(step)], progress_every_s=0)
    assert sorted(seen["losses"]) == list(range(1, 9))
    assert seen["evals"] == [4, 8] and seen["finals"] == [8]
    assert calls == list(range(1, 9))
    assert sorted(p.name for p in ray_train["reported"].iterdir()) == ["step-3", "step-6", "step-8"]
    assert lines[0] == "starting: 8 steps on 1 worker(s)"
    assert lines[1].startswith("step 1/8: loss ") and " tokens/s, ETA " in lines[1]
    assert lines[-2].startswith("step 8/8: loss ") and lines[-2].endswith("ETA 0s")
    assert lines[-1].startswith("done: step 8 in ")
    # The checkpoint's summary: what the stage put there, the last train loss, throughput, work seen.
    assert loop.summary["val_at"] == 8 and loop.summary["tokens_seen"] == 8 * 64
    assert loop.summary["train_loss"] == seen["losses"][8] and loop.summary["tokens_per_s"] > 0


def test_progress_lines_are_throttled(ray_train, lines):
    train(progress_every_s=3600)
    steps = [line.split(":")[0] for line in lines if line.startswith("step ")]
    assert steps == ["step 1/8", "step 8/8"]  # the first and the last; the hour never passes


def test_resumed_loop_continues_to_the_same_losses(ray_train, lines):
    """Dropout is on: the weights, AdamW, the RNG and the data position must all come back."""
    _, uninterrupted = train()
    ray_train["latest"] = ray_train["reported"] / "step-3"
    ray_train["reported"] = ray_train["reported"].parent / "again"
    lines.clear()
    loop, resumed = train()
    assert lines[0] == "resuming from the checkpoint at step 3 of 8"
    assert loop.resumed and sorted(resumed["losses"]) == [4, 5, 6, 7, 8]
    assert resumed["losses"] == {s: uninterrupted["losses"][s] for s in range(4, 9)}
    assert resumed["evals"] == [4, 8] and loop.summary["tokens_seen"] == 8 * 64


def test_a_throughput_without_timed_steps_is_no_number(ray_train):
    """A checkpoint before any timed interval (only step 1, which is left out) has no tokens/s."""
    loop, _ = train(max_steps=2, log_every=5, checkpoint_every=1)

    first = json.loads((ray_train["reported"] / "step-1" / "progress.json").read_text())
    assert first["summary"]["tokens_per_s"] is None
    assert loop.summary["tokens_per_s"] > 0  # step 2, the last, is logged and timed


def test_duration():
    assert [duration(s) for s in (0, 44.6, 192, 3725)] == ["0s", "45s", "3m12s", "1h02m"]
