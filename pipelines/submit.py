"""`gptrecipe submit`: the same pipeline on a Ray cluster, through the Ray job API.

The project directory is shipped as the job's working dir (the cluster image provides the
dependencies: infra/Dockerfile), and the entrypoint is the ordinary `gptrecipe run`. Ray >= 2.59
protects the job API with a bearer token; we send the one the user has, from --token,
RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (Ray's own order).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from components.core.config import ConfigError
from pipelines.runner import git_revision

# Never shipped: environments, local runs and caches. The cluster has its own store and MLflow.
EXCLUDES = [
    ".venv",
    "runs",
    ".git",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
]


def auth_token(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.path.isfile(path):
        return Path(path).read_text().strip() or None
    return None


def job_client(address: str, token: str | None):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as e:
        hint = "" if token else " (if the cluster uses token auth, pass --token or set RAY_AUTH_TOKEN)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot reach the Ray job API at {address}: {first}{hint}") from None


def submit(
    *,
    address: str,
    config: str,
    overrides: list[str],
    working_dir: Path,
    wait: bool,
    token: str | None = None,
    run_args: list[str] | None = None,
) -> int:
    working_dir = working_dir.resolve()
    config_arg = config
    if Path(config).suffix in {".yaml", ".yml"}:
        path = Path(config).resolve()
        if not path.is_relative_to(working_dir):
            raise ConfigError(f"config {config} is outside the shipped working dir {working_dir}")
        config_arg = str(path.relative_to(working_dir))
    entrypoint = shlex.join(
        ["python", "-m", "pipelines.cli", "run", config_arg, *overrides, *(run_args or [])]
    )
    client = job_client(address, auth_token(token))
    runtime_env = {
        "working_dir": str(working_dir),
        "excludes": EXCLUDES,
        "env_vars": {
            "GPTRECIPE_GIT_REVISION": git_revision(working_dir),
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
        },
    }
    job_id = submit_when_ready(
        client, entrypoint=entrypoint, runtime_env=runtime_env, metadata={"gptrecipe.config": config_arg}
    )
    print(f"submitted job {job_id} to {address}: {entrypoint}", file=sys.stderr)
    print(job_id, flush=True)
    if not wait:
        return 0
    return wait_for_job(client, job_id)


def submit_when_ready(client, *, wait_s: float = 120.0, **job) -> str:
    """Submit, waiting out a cluster that is up but not ready to run jobs yet: a head answers the job
    API before its job agent has registered ("No available agent"), for a while after it starts."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            print("the cluster's job agent is not ready yet; retrying", file=sys.stderr, flush=True)
            time.sleep(2.0)


def wait_for_job(client, job_id: str) -> int:
    from ray.job_submission import JobStatus

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(stream())
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can end a moment before the status does
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1
