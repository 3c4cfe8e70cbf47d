"""The one-machine cluster (tests/cluster/local_cluster.py) as a fixture."""

from __future__ import annotations

import pytest

from tests.cluster.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def local_cluster():
    """A started LocalCluster: moto S3, an MLflow server on 127.0.0.2 and a Ray head with two worker
    nodes. Module-scoped: the start (10-30 s) happens once per module, and a module that kills nodes
    or stops the cluster does not leave a broken one to the next. Stopped however the tests end."""
    cluster = LocalCluster()
    try:
        cluster.start()  # stops what it started if it fails
        yield cluster
    finally:
        cluster.stop()  # idempotent: a test may have stopped it already
