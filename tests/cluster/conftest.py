"""The one-machine cluster (tests/cluster/local_cluster.py) as a fixture."""

from __future__ import annotations

import pytest

from tests.cluster.local_cluster import LocalCluster


@pytest.fixture(scope="package")
def local_cluster():
    """A started LocalCluster: moto S3, an MLflow server on 127.0.0.2 and a Ray head with two worker
    nodes, shared by the package (its start costs 10-30 s). The modules run in name order:
    test_local_cluster checks the pieces, then test_pipeline_on_cluster runs the pipeline on them and
    ends by killing a node, stopping S3 and stopping everything. Stopped however the tests end."""
    cluster = LocalCluster()
    try:
        cluster.start()  # stops what it started if it fails
        yield cluster
    finally:
        cluster.stop()  # idempotent: a test may have stopped it already
