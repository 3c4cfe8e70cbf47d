"""The one-machine cluster's pieces, with real values: the MLflow server on 127.0.0.2 with its Host guard
on, and a Ray cluster of separate node processes whose tasks see their own node's environment and reach
S3 through it (s3fs and pyarrow). S3 and MLflow round trips, a node dying and stopping without leftovers
are checked by the pipeline's tests on the same cluster (test_pipeline_on_cluster.py), which run next."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.submit import job_client, submit_when_ready
from tests.cluster.local_cluster import MlflowServer, http_status, wait_until

pytestmark = pytest.mark.slow


def test_mlflow_host_guard_is_on(local_cluster):
    url = f"{local_cluster.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(url) == 200
    assert http_status(url, headers={"Host": "evil.example"}) == 403
    request = urllib.request.Request(url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=5)
    assert "Invalid Host header" in e.value.read().decode()


def test_mlflow_on_a_non_localhost_address_needs_allowed_hosts(local_cluster, tmp_path):
    """Why the server gets --allowed-hosts: MLflow 3 allows localhost and private ranges by default,
    and 127.0.0.2 is neither. (/health is exempt from the check; the API is not.)"""
    server = MlflowServer(tmp_path / "mlflow", local_cluster.s3_env, allowed_hosts=False)
    try:
        server.launch()
        wait_until(
            lambda: http_status(f"{server.tracking_uri}/health") == 200, 120, "MLflow", [server.process]
        )
        url = f"{server.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(url) == 403
    finally:
        server.stop()


def test_ray_cluster_has_a_head_and_two_workers(local_cluster):
    nodes = local_cluster.ray.nodes()
    assert len(nodes) == 3 and all(n["alive"] for n in nodes)
    assert sorted(n["node_name"] for n in nodes) == ["head", "w0", "w1"]
    assert sum(n["cpus"] for n in nodes) == 4
    assert [n["cpus"] for n in nodes if n["is_head"]] == [0]  # stages go to the workers
    assert all(n["ip"].startswith("127.") for n in nodes)
    # The job API wants the token.
    assert http_status(f"{local_cluster.job_address}/api/jobs/") == 401


TASK_SCRIPT = """
import json, os
import pyarrow.fs, ray, s3fs
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=1)
def probe(key):
    # The node's environment alone configures both S3 clients (Ray Train's storage goes through pyarrow).
    fs = s3fs.S3FileSystem()
    fs.pipe(f"gptrecipe/{key}", key.encode())
    pa, path = pyarrow.fs.FileSystem.from_uri(f"s3://gptrecipe/{key}")
    with pa.open_input_stream(path) as f:
        read = f.read().decode()
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "scratch": os.environ.get("GPTRECIPE_SCRATCH"),
        "tmpdir": os.environ.get("TMPDIR"),
        "read": read,
    }

ray.init()
workers = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
refs = [
    probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
        f"tests/ray/{node_id}"
    )
    for node_id in workers
]
print("RESULT " + json.dumps(ray.get(refs)), flush=True)
"""


def run_job(cluster, working_dir: Path, entrypoint: str, timeout: float = 240.0) -> str:
    from ray.job_submission import JobStatus

    client = job_client(cluster.job_address, cluster.token)
    job_id = submit_when_ready(client, entrypoint=entrypoint, runtime_env={"working_dir": str(working_dir)})
    deadline = time.monotonic() + timeout
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout} s"
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def test_a_task_runs_on_each_worker_with_its_environment(local_cluster, tmp_path):
    (tmp_path / "probe.py").write_text(TASK_SCRIPT)
    logs = run_job(local_cluster, tmp_path, "python probe.py")
    results = json.loads(next(line for line in logs.splitlines() if line.startswith("RESULT "))[7:])
    by_node = {r["node_id"]: r for r in results}
    workers = local_cluster.ray.workers
    assert set(by_node) == {local_cluster.ray.node_id(i) for i in range(len(workers))}
    for i, node in enumerate(workers):
        result = by_node[local_cluster.ray.node_id(i)]
        assert result["scratch"] == str(node.scratch) == str(local_cluster.scratch_dirs[i])
        assert result["tmpdir"] == str(node.tmpdir)
        assert result["read"] == f"tests/ray/{local_cluster.ray.node_id(i)}"
