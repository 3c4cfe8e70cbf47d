"""The one-machine cluster works with real values: S3 through AWS_ENDPOINT_URL (s3fs and pyarrow), the
MLflow server on 127.0.0.2 with its artifacts on S3 and its Host guard on, a Ray cluster of separate
node processes that runs tasks on each worker, notices a dead node, and stops without leftovers.
The tests run in file order: the last two kill a node and stop the (module-scoped) cluster."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from pipelines.submit import job_client, submit_when_ready
from tests.cluster.local_cluster import BUCKET, MlflowServer, http_status, pid_gone, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_env(local_cluster, monkeypatch):
    """This process as a client of the cluster's S3, configured by the environment alone."""
    import s3fs

    for key, value in local_cluster.s3_env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made before would keep its old endpoint
    yield local_cluster.s3_env
    s3fs.S3FileSystem.clear_instance_cache()


def s3_keys(cluster, prefix: str) -> list[str]:
    """The keys under `prefix`, asked of the server directly (explicit endpoint, no env)."""
    client = boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_s3fs_uses_aws_endpoint_url(local_cluster, s3_env):
    import s3fs

    from components.core.artifacts import stage_in, stage_out

    fs = s3fs.S3FileSystem()  # no endpoint given: botocore reads AWS_ENDPOINT_URL
    key = f"tests/s3fs-{uuid.uuid4().hex}.txt"
    fs.pipe(f"{BUCKET}/{key}", b"through s3fs")
    assert fs.cat(f"{BUCKET}/{key}") == b"through s3fs"
    assert s3_keys(local_cluster, key) == [key]
    # The product's store helpers on the same store URL.
    url = f"{local_cluster.store_url}/tests/{uuid.uuid4().hex}"
    with stage_out(url) as out:
        (out / "a.txt").write_text("staged")
    with stage_in(url) as local:
        assert (local / "a.txt").read_text() == "staged"


def test_pyarrow_s3_uses_aws_endpoint_url(local_cluster, s3_env):
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(f"s3://{BUCKET}/tests/pyarrow")
    assert path == f"{BUCKET}/tests/pyarrow"
    with fs.open_output_stream(f"{path}/x.bin") as out:
        out.write(b"through pyarrow")
    with fs.open_input_stream(f"{path}/x.bin") as f:
        assert f.read() == b"through pyarrow"
    assert s3_keys(local_cluster, "tests/pyarrow/") == ["tests/pyarrow/x.bin"]


def test_mlflow_run_with_artifacts_on_s3(local_cluster, tmp_path):
    client = MlflowClient(tracking_uri=local_cluster.tracking_uri)
    experiment_id = client.create_experiment(f"local-cluster-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_param(run_id, "lr", "0.001")
    client.log_metric(run_id, "loss", 1.5, step=3)
    client.log_text(run_id, "hello from the test", "notes/hello.txt")  # proxied by the server to S3
    client.set_terminated(run_id)

    got = client.get_run(run_id)
    assert got.data.params == {"lr": "0.001"}
    assert got.data.metrics == {"loss": 1.5}
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # the client never sees S3
    key = f"mlflow/{experiment_id}/{run_id}/artifacts/notes/hello.txt"
    assert s3_keys(local_cluster, f"mlflow/{experiment_id}/") == [key]
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/hello.txt"]
    local = client.download_artifacts(run_id, "notes/hello.txt", str(tmp_path))
    assert Path(local).read_text() == "hello from the test"


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


def test_a_killed_worker_is_reported_dead(local_cluster):
    node_id = local_cluster.ray.node_id(0)
    node = local_cluster.ray.workers[0]
    started = time.monotonic()
    local_cluster.kill_worker(0)
    assert not node.process.running() and not node.process.remaining()  # every process of that node

    def dead() -> bool:
        return any(n["node_id"] == node_id and not n["alive"] for n in local_cluster.ray.nodes())

    wait_until(dead, 60, "the killed node is reported dead")
    elapsed = time.monotonic() - started
    assert elapsed < 45, f"the node was reported dead only after {elapsed:.0f} s"
    alive = sorted(n["node_name"] for n in local_cluster.ray.nodes() if n["alive"])
    assert alive == ["head", "w1"]


def test_stop_leaves_no_process(local_cluster):
    pids = local_cluster.pids()
    assert len(pids) > 10  # moto, mlflow, the head's and a worker's processes
    started = time.monotonic()
    local_cluster.stop()
    assert time.monotonic() - started < 90
    left = {pid for pid, start in pids.items() if not pid_gone(pid, start)}
    assert not left, f"still running: {left}"
    assert not local_cluster.root.exists()
