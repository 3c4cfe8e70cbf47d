"""`gptrecipe submit` against a real Ray head with token auth, started and stopped by the test."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.core.config import ConfigError
from pipelines.submit import job_client

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A one-node Ray cluster with token auth (as Ray >= 2.59 clusters have), in its own session."""
    token = secrets.token_hex(16)
    gcs, dashboard = free_port(), free_port()
    temp = Path("/tmp") / f"ray-test-{secrets.token_hex(3)}"  # short: Ray's socket paths have a length limit
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        # The job's `python` must be this environment's, as it would be the image's on a real cluster.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus=2"]
    command += [f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1"]
    command += [f"--temp-dir={temp}", "--include-dashboard=true"]
    # The session's in-process Ray already holds the default agent ports (52365, ...); a second node on
    # them starts, but its job agent never registers ("No available agent to submit job").
    for flag in (
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
        "ray-client-server-port",
    ):
        command.append(f"--{flag}={free_port()}")
    head = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401: up, and asking for the token
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError("the Ray head did not start") from None
                time.sleep(0.5)
        yield address, token
    finally:
        # SIGTERM to `ray start --block` makes it stop the processes it started, then we reap it.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_submit_runs_the_pipeline_on_the_cluster(ray_head, tmp_path):
    address, token = ray_head
    overrides = [
        f"pipeline.store={tmp_path / 'store'}",
        f"pipeline.runs_dir={tmp_path / 'runs'}",
        f"pipeline.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    env = {**os.environ, "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "pipelines.cli", "submit", "--address", address, "smoke", *overrides]
    result = subprocess.run(
        [*command, "--until", "ingest", "--wait"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job_id = result.stdout.splitlines()[0].strip()
    assert job_id.startswith("raysubmit_")
    # The job's log interleaves Ray's progress bars with our output; the summary path is its own line.
    summary_path = Path(next(x for x in result.stdout.splitlines() if x.endswith("summary.json")))
    assert summary_path.parent.parent == tmp_path / "runs"
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "succeeded"
    assert {s["status"] for s in summary["stages"].values()} == {"done"}
    assert summary["stages"]["ingest"]["metrics"]["documents"] > 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ingest_run = client.get_run(summary["stages"]["ingest"]["mlflow_run_id"])
    assert ingest_run.data.tags["ray.submission_id"] == job_id  # the MLflow run names its Ray job


def test_submit_without_token_is_a_clear_error(ray_head, monkeypatch, tmp_path):
    address, _ = ray_head
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ConfigError, match="pass --token or set RAY_AUTH_TOKEN"):
        job_client(address, None)
