"""The cluster path end to end: the smoke pipeline submitted to a three-node Ray cluster with the plain
`ray job submit` and with `gptrecipe submit`, its store on S3 and its tracking on an MLflow server.

One cluster serves the package (tests/cluster/conftest.py); the tests run in file order, each building
on the store the earlier ones filled. The last ones kill a node, stop the S3 server, then everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs
from mlflow import MlflowClient

from tests.cluster.local_cluster import pid_gone

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXPERIMENT = "gptrecipe-cluster-test"
# Pretraining long enough, with checkpoints often enough, for a node to die between two of them.
MAX_STEPS = 40
OVERRIDES = [
    f"pretrain.max_steps={MAX_STEPS}",
    "pretrain.checkpoint_every=5",
    f"pipeline.experiment={EXPERIMENT}",
]

pytestmark = pytest.mark.slow


def settings(cluster) -> list[str]:
    where = [f"pipeline.store={cluster.store_url}", f"pipeline.tracking_uri={cluster.tracking_uri}"]
    return [*where, *OVERRIDES]


def s3(cluster) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        endpoint_url=cluster.s3_env["AWS_ENDPOINT_URL"],
        key=cluster.s3_env["AWS_ACCESS_KEY_ID"],
        secret=cluster.s3_env["AWS_SECRET_ACCESS_KEY"],
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def summaries(cluster) -> dict[str, dict]:
    """Every run's summary.json in the store, by run id."""
    fs = s3(cluster)
    found = {}
    for path in fs.glob(cluster.store_url.removeprefix("s3://") + "/runs/*/summary.json"):
        found[path.split("/")[-2]] = json.loads(fs.cat(path))
    return found


def new_summary(cluster, before: dict[str, dict]) -> dict:
    fresh = {k: v for k, v in summaries(cluster).items() if k not in before}
    assert len(fresh) == 1, f"expected one new run in the store, found {sorted(fresh)}"
    return next(iter(fresh.values()))


def tree_snapshot(root: Path) -> dict[str, float]:
    """Every file under the checkout with its modification time (caches that pytest itself writes and
    the environments left out)."""
    skip = {".git", ".venv", ".venv-datatrove", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = path.stat().st_mtime
    return found


def scratch_files(cluster) -> list[str]:
    return sorted(str(p) for d in cluster.scratch_dirs for p in Path(d).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def first_run(local_cluster):
    """The smoke pipeline through the plain `ray job submit`, as a user types it."""
    before_tree, before_runs = tree_snapshot(REPO), summaries(local_cluster)
    command = [str(BIN / "ray"), "job", "submit", "--address", local_cluster.job_address]
    command += ["--working-dir", ".", "--", "gptrecipe", "run", "smoke", *settings(local_cluster)]
    started = time.monotonic()
    proc = subprocess.run(
        command, cwd=REPO, env=local_cluster.shell_env(), capture_output=True, text=True, timeout=900
    )
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return {
        "summary": new_summary(local_cluster, before_runs),
        "wall_s": wall,
        "changed": sorted(set(tree_snapshot(REPO).items()) ^ set(before_tree.items())),
        "scratch_left": scratch_files(local_cluster),
        "log": proc.stdout,
    }


def test_every_stage_runs_on_the_cluster_from_s3(first_run, local_cluster):
    summary = first_run["summary"]
    statuses = {name: s["status"] for name, s in summary["stages"].items()}
    assert set(statuses.values()) == {"done"}, statuses
    assert summary["store"] == local_cluster.store_url
    # Stages that hold CPUs run on the workers (the head has none); stages that only coordinate other Ray
    # work (cpus=0) may run anywhere, the head included.
    nodes = {n["node_id"]: n for n in local_cluster.ray.nodes()}
    used = {name: s["node_id"] for name, s in summary["stages"].items()}
    assert set(used.values()) <= set(nodes) and len(set(used.values())) >= 2, used
    assert not nodes[used["world"]]["is_head"]  # world reserves a CPU
    fs = s3(local_cluster)
    for name, stage in summary["stages"].items():
        for uri in stage["outputs"].values():
            assert uri.startswith(local_cluster.store_url + f"/stages/{name}/"), uri
        key = stage["cache_key"]
        record = json.loads(fs.cat(f"{local_cluster.store_url}/stages/{name}/{key}/stage.json"))
        assert record["status"] == "done" and record["node_id"] == stage["node_id"]
    # The pretraining checkpoints went to the store too, through Ray Train's storage path.
    key = summary["stages"]["pretrain"]["cache_key"]
    assert fs.glob(f"{local_cluster.store_url}/stages/pretrain/{key}/_work/ray_train/pretrain/checkpoint_0*")


def test_nothing_is_written_where_it_should_not_be(first_run):
    assert first_run["changed"] == [], "the submitting checkout changed"
    assert first_run["scratch_left"] == [], "a stage left files in its node's scratch"


def test_the_tracking_server_holds_every_stage_with_artifacts_on_s3(first_run, local_cluster):
    summary = first_run["summary"]
    client = MlflowClient(local_cluster.tracking_uri)
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.data.tags["gptrecipe.pipeline_run"] == summary["run_id"]
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.name == EXPERIMENT
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_stage = {run.data.tags["gptrecipe.stage"]: run for run in children}
    assert sorted(by_stage) == sorted(summary["stages"])
    for name, run in by_stage.items():
        assert run.data.tags["ray.node_id"] == summary["stages"][name]["node_id"]
        assert run.data.params, name
        assert "stage_duration_s" in run.data.metrics, name
    pretrain = by_stage["pretrain"]
    val_loss = summary["stages"]["pretrain"]["metrics"]["val_loss"]
    assert pretrain.data.metrics["val/loss"] == pytest.approx(val_loss)
    # Artifacts travel through the server to S3 and come back.
    local = client.download_artifacts(by_stage["evaluate"].info.run_id, "evaluation_table.txt")
    assert "accuracy" in Path(local).read_text()
    stored = s3(local_cluster).find("gptrecipe/mlflow")
    assert any(p.endswith("evaluation_table.txt") for p in stored)


def test_a_second_submission_is_fully_cached(first_run, local_cluster):
    before = summaries(local_cluster)
    command = [str(BIN / "gptrecipe"), "submit", "--address", local_cluster.job_address, "smoke"]
    command += [*settings(local_cluster), "--wait"]
    proc = subprocess.run(
        command, cwd=REPO, env=local_cluster.shell_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = new_summary(local_cluster, before)
    assert {s["status"] for s in summary["stages"].values()} == {"cached"}
    first = first_run["summary"]["stages"]
    keys = {n: s["cache_key"] for n, s in summary["stages"].items()}
    assert keys == {n: s["cache_key"] for n, s in first.items()}


def test_a_worker_node_dies_during_pretraining_and_another_resumes_from_s3(first_run, local_cluster):
    """A new pretraining (keep_checkpoints changes the key, not what is computed) loses the node its
    training worker runs on after the first checkpoint; Ray Train restarts the worker on the other
    node from that checkpoint in S3, and the run ends with the uninterrupted run's validation loss."""
    before = summaries(local_cluster)
    command = [str(BIN / "gptrecipe"), "submit", "--address", local_cluster.job_address, "smoke"]
    command += [*settings(local_cluster), "pretrain.keep_checkpoints=3", "--until", "pretrain"]
    submitted = subprocess.run(
        command, cwd=REPO, env=local_cluster.shell_env(), capture_output=True, text=True, timeout=300
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.strip().splitlines()[-1]

    # Wait until Ray Train has registered this pretraining's first checkpoint -- its checkpoint manager
    # writes checkpoint_manager_snapshot.json after a reported checkpoint is fully uploaded (a
    # checkpoint_0000000N directory can be seen while its upload is still under way) -- then kill the
    # node its training worker runs on, while it still has steps to go.
    fs = s3(local_cluster)
    old_key = first_run["summary"]["stages"]["pretrain"]["cache_key"]
    train_dir = f"{local_cluster.store_url}/stages/pretrain/*/_work/ray_train/pretrain"
    deadline = time.monotonic() + 400
    snapshot = f"{train_dir}/checkpoint_manager_snapshot.json"
    while not [p for p in fs.glob(snapshot) if f"/{old_key}/" not in p]:
        assert time.monotonic() < deadline, "no pretraining checkpoint was registered in the store"
        time.sleep(0.2)
    steps = [int(p[-8:]) for p in fs.glob(f"{train_dir}/checkpoint_0*") if f"/{old_key}/" not in p]
    workers = [
        a
        for a in local_cluster.ray.api("/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
        if a.get("state") == "ALIVE" and "RayTrainWorker" in a.get("class_name", "")
    ]
    assert len(workers) == 1 and max(steps) < MAX_STEPS, (workers, steps)  # killed mid-run, not after
    victim = workers[0]["address"]["node_id"] if "address" in workers[0] else workers[0]["node_id"]
    local_cluster.ray.kill_worker(victim)

    status = wait_for_job(local_cluster, job_id)
    summary = new_summary(local_cluster, before)
    assert status == "SUCCEEDED", summary
    pretrain = summary["stages"]["pretrain"]
    assert pretrain["status"] == "done" and pretrain["node_id"] != victim
    uninterrupted = first_run["summary"]["stages"]["pretrain"]["metrics"]["val_loss"]
    assert pretrain["metrics"]["val_loss"] == uninterrupted
    client = MlflowClient(local_cluster.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`gptrecipe.pipeline_run` = '{summary['run_id']}' "
        "and tags.`gptrecipe.stage` = 'pretrain'",
    )
    tag = "pretrain.resumed_from_step"
    resumed = [int(r.data.tags[tag]) for r in runs if tag in r.data.tags]
    assert resumed and min(resumed) >= 5, [r.data.tags for r in runs]
    dead = {n["node_id"] for n in local_cluster.ray.nodes() if not n["alive"]}
    assert victim in dead


def wait_for_job(cluster, job_id: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.ray.api(f"/api/jobs/{job_id}")["status"]
        if status in {"SUCCEEDED", "FAILED", "STOPPED"}:
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status}"
        time.sleep(1.0)


def test_the_store_down_at_submission_fails_before_any_stage(first_run, local_cluster):
    local_cluster.s3.stop()  # the last test of the module: nothing after it needs S3
    client = MlflowClient(local_cluster.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs_before = len(client.search_runs([experiment.experiment_id], max_results=1000))
    command = [str(BIN / "gptrecipe"), "submit", "--address", local_cluster.job_address, "smoke"]
    command += [*settings(local_cluster), "--wait"]
    started = time.monotonic()
    proc = subprocess.run(
        command, cwd=REPO, env=local_cluster.shell_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"artifact store {local_cluster.store_url}" in output and "is not usable" in output, output[-3000:]
    assert "EndpointConnectionError" in output or "Could not connect" in output, output[-3000:]
    assert time.monotonic() - started < 120
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == runs_before


def test_stopping_the_cluster_leaves_no_process(local_cluster):
    pids = local_cluster.pids()
    assert len(pids) > 10  # mlflow, the head's and a worker's processes
    started = time.monotonic()
    local_cluster.stop()
    assert time.monotonic() - started < 90
    left = {pid for pid, start in pids.items() if not pid_gone(pid, start)}
    assert not left, f"still running: {left}"
    assert not local_cluster.root.exists()
