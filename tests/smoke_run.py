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


def local_tracking_uri(where: Path) -> str:
    return f"sqlite:///{where / 'mlflow.db'}"


def local_overrides(where: Path) -> list[str]:
    """The command line's settings that put a run's store, runs folder and MLflow database under `where`."""
    return [
        f"pipeline.store={where / 'store'}",
        f"pipeline.runs_dir={where / 'runs'}",
        f"pipeline.tracking_uri={local_tracking_uri(where)}",
    ]


def cli_env() -> dict[str, str]:
    """The environment of a command as a user types it on a laptop (no RAY_ADDRESS: Ray embedded)."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


@dataclass(frozen=True)
class SmokeRun:
    """A finished `gptrecipe run smoke` with everything under `where`."""

    where: Path
    summary: dict  # the run's summary.json
    run_dir: Path
    seconds: float  # the run's wall time

    @property
    def overrides(self) -> list[str]:
        return local_overrides(self.where)

    @property
    def tracking_uri(self) -> str:
        return local_tracking_uri(self.where)


def run_smoke(where: Path) -> SmokeRun:
    """Run the smoke config with its store, runs and MLflow database under `where` (a second call with the
    same `where` is the cached rerun)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "smoke", *local_overrides(where)]
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    seconds = time.time() - started
    assert done.returncode == 0, done.stderr[-3000:]
    summary_file = Path(done.stdout.strip().splitlines()[-1])
    return SmokeRun(where, json.loads(summary_file.read_text()), summary_file.parent, seconds)
