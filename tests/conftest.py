"""Shared fixtures. Ray is started once per test session (2 CPUs, no dashboard) and stopped at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.smoke_run import SmokeRun, run_smoke

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GPTRECIPE_TRACKING_RETRY_S", "0.2,0.2")  # give up on an absent MLflow quickly


@pytest.fixture(scope="session")
def ray_cluster():
    """An in-process Ray shared by the tests that need one."""
    import ray

    # The dashboard serves the state API that Ray Train's placement-group cleanup polls.
    ray.init(num_cpus=2, include_dashboard=True, object_store_memory=128 * 2**20, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow database per session (creating its schema costs seconds); tests use own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def settings(tmp_path: Path, tracking_uri: str, request) -> dict:
    """`pipeline:` settings that keep a test's store and runs under its tmp_path, in its own experiment."""
    return {
        "name": "test",
        "store": str(tmp_path / "store"),
        "runs_dir": str(tmp_path / "runs"),
        "tracking_uri": tracking_uri,
        "experiment": request.node.nodeid,
    }


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """One whole run of the smoke config, shared by the tests that read a finished run (the CLI's cached
    rerun, the notebook): each would otherwise pay the minute and a half it takes."""
    return run_smoke(tmp_path_factory.mktemp("smoke"))
