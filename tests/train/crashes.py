"""Failure injection for the training tests, from outside the production code: a stage whose Ray Train
worker dies after chosen steps, as a crashed worker would.

`TrainLoop` calls the loop config's "callbacks" after every step; production passes none. The tests wrap
a stage's `train_worker` so that its loop config carries `crash_after_marked_steps`, and swap the wrapped
worker in for the duration of the stage (`crashing_workers`), in the process that runs the stage: the
test's own for `run_stage`, the stage's Ray task in a pipeline (`crashing_stage`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray.cloudpickle

from components.core.stage import Stage

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests


def crash_after_marked_steps(markers: Path) -> Callable[[Any, int], None]:
    """A loop callback: after step N, if the file <markers>/step-N exists, rank 0 deletes it and dies
    (os._exit), once per marker. The metrics logged so far are flushed first, so that the restarted
    worker meets steps the run already has."""

    def crash(loop: Any, step: int) -> None:
        marker = markers / f"step-{step}"
        if loop.runtime.is_main and marker.exists():
            marker.unlink()
            loop.logger.flush()
            # Ray Train's controller collects reported checkpoints by polling the workers; a crash within
            # milliseconds of a report would race it. Real crashes come later; so does this one.
            time.sleep(1.0)
            os._exit(17)

    return crash


def with_callbacks(module: str, *callbacks: Callable[[Any, int], None]) -> Callable[[dict], None]:
    """`module`'s train_worker with `callbacks` added to its loop config. The worker is looked up by name
    on the Ray Train worker, where nothing is patched."""

    def train_worker(loop_config: dict[str, Any]) -> None:
        worker = importlib.import_module(module).train_worker
        worker({**loop_config, "callbacks": [*loop_config.get("callbacks", ()), *callbacks]})

    return train_worker


@contextlib.contextmanager
def crashing_workers(module: str, markers: Path) -> Iterator[None]:
    """While inside, the stage in `module` launches workers that die after each marked step."""
    stage_module = importlib.import_module(module)
    original = stage_module.train_worker
    stage_module.train_worker = with_callbacks(module, crash_after_marked_steps(markers))
    try:
        yield
    finally:
        stage_module.train_worker = original


def crashing_stage(stage: Stage, markers: Path) -> Stage:
    """`stage` for a pipeline, its workers dying after each marked step. The same code version (and so
    cache key) as `stage`. In the stage's Ray task the stage function is taken from its module as imported
    there: a copy pickled with the stage would keep its own `train_worker`, not the swapped one."""
    module, name = stage.fn.__module__, stage.name

    @functools.wraps(stage.fn)
    def fn(ctx: Any, config: Any, inputs: dict) -> dict:
        with crashing_workers(module, markers):
            return getattr(importlib.import_module(module), name).fn(ctx, config, inputs)

    return dataclasses.replace(stage, fn=fn)
