"""What the benchmarks that compare us with datatrove share: checking that datatrove can be run, and
running a script's `--worker` side (which imports datatrove) in the interpreter that has it.

datatrove lives in its own venv (`make bench` builds .venv-datatrove): its pins clash with ours. A
bench script re-runs itself there with `--worker` and reads back the one JSON line it prints last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def require_datatrove(datatrove_python: str | None, missing: str) -> None:
    """Exit with `missing` (how to get datatrove) unless `datatrove_python` is given or this
    interpreter can import datatrove; then put the repository on the path (scripts run from anywhere)."""
    if not datatrove_python:
        try:
            import datatrove  # noqa: F401
        except ImportError:
            sys.exit(missing)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def run_worker(
    script: str, datatrove_python: str | None, worker_args: list[str], failed: str = "", **env: str
) -> dict:
    """Run `script --worker ...worker_args` in `datatrove_python` (default: this interpreter), with
    `env` added to the environment, and return the JSON it prints last. A failed run exits with its
    stderr's end, then `failed` (a hint)."""
    cmd = [datatrove_python or sys.executable, script, "--worker", *worker_args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        sys.exit(f"datatrove run failed:\n{done.stderr[-3000:]}" + (f"\n\n{failed}" if failed else ""))
    return json.loads(done.stdout.strip().splitlines()[-1])
