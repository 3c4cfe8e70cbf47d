"""A whole run of the smoke config as a user starts it, for the tests that need a finished run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SmokeRun:
    """A finished `gptrecipe run smoke` in its own store, runs folder and MLflow database."""

    overrides: list[str]  # the command line's settings that put everything under one folder
    summary: dict  # the run's summary.json
    run_dir: Path
    seconds: float  # the run's wall time


def smoke_command(overrides: list[str]) -> tuple[list[str], dict]:
    """The command and environment of a smoke run (no RAY_ADDRESS: Ray embedded, as on a laptop)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return [sys.executable, "-m", "pipelines.cli", "run", "smoke", *overrides], env


def run_smoke(where: Path) -> SmokeRun:
    """Run the smoke config with its store, runs and MLflow database under `where`."""
    overrides = [
        f"pipeline.store={where / 'store'}",
        f"pipeline.runs_dir={where / 'runs'}",
        f"pipeline.tracking_uri=sqlite:///{where / 'mlflow.db'}",
    ]
    cmd, env = smoke_command(overrides)
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.time() - started
    assert done.returncode == 0, done.stderr[-3000:]
    summary_file = Path(done.stdout.strip().splitlines()[-1])
    return SmokeRun(overrides, json.loads(summary_file.read_text()), summary_file.parent, seconds)
