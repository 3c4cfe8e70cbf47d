"""A tracking-server outage never kills a stage: records are buffered, retried and, at worst, kept."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.core.artifacts import Artifact
from components.core.config import StageConfig
from components.core.stage import RunEnv, run_stage, stage
from components.core.tracking import Tracker, replay_backlog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """A TCP forwarder to the MLflow server that the test can switch off and on: an outage."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen()
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        # shutdown() first: close() alone does not wake the thread blocked in accept() on Linux.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for c in self.conns:
            c.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback, stopped by the fixture."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError("mlflow server did not start")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_outage_mid_run_is_buffered_and_sent_when_back(mlflow_server, tmp_path, caplog):
    proxy = Proxy(mlflow_server)
    uri = f"http://127.0.0.1:{proxy.port}"
    tracker = Tracker(uri, "outage", run_name="stage", spool_dir=tmp_path, flush_every_s=0)
    tracker.log_params({"lr": 0.1})
    tracker.log_metrics({"loss": 4.0}, step=0)
    assert tracker.run_id is not None

    proxy.down()
    with caplog.at_level(logging.WARNING, logger="gptrecipe.tracking"):
        for step in (1, 2, 3):
            tracker.log_metrics({"loss": 4.0 - step}, step=step)  # must not raise
        tracker.log_text("sampled during the outage", "samples/step3.txt")
        assert tracker.flush() is False
    assert any("unreachable" in r.message for r in caplog.records)

    proxy.up()
    assert tracker.finish() is True
    client = MlflowClient(f"http://127.0.0.1:{mlflow_server}")
    history = client.get_metric_history(tracker.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 4.0), (1, 3.0), (2, 2.0), (3, 1.0)]
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"}
    assert [a.path for a in client.list_artifacts(tracker.run_id, "samples")] == ["samples/step3.txt"]
    proxy.down()


class Cfg(StageConfig):
    n: int = 3


@stage("counting", config=Cfg, outputs=("out",), cpus=0)
def counting(ctx, config, inputs):
    """Writes a file and reports metrics while MLflow is away."""
    with ctx.output_dir("out") as out:
        (out / "n.txt").write_text(str(config.n))
    for step in range(config.n):
        ctx.log_metrics({"progress": step}, step=step)
    ctx.tracker.log_text("hello", "notes.txt")
    ctx.report(n=config.n)
    return {"out": ctx.artifact("out", kind="text")}


def test_stage_finishes_without_mlflow_and_backlog_replays(tmp_path, tracking_uri):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    env = RunEnv(run_id="r1", store=str(tmp_path / "store"), tracking_uri=dead, experiment="offline")
    started = time.time()
    record = run_stage(counting, Cfg(), {}, env)
    assert time.time() - started < 30  # gave up on MLflow quickly instead of hanging
    assert record.status == "done" and record.metrics == {"n": 3.0}
    assert isinstance(record.outputs["out"], Artifact)
    backlog = Path(env.store, "stages", "counting", record.key, "_tracking", "backlog.json")
    assert backlog.exists()

    run_id = replay_backlog(backlog, tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params["n"] == "3"
    assert run.data.metrics["n"] == 3.0
    assert [m.step for m in client.get_metric_history(run_id, "progress")] == [0, 1, 2]
    assert run.data.tags["gptrecipe.stage"] == "counting"
    assert [a.path for a in client.list_artifacts(run_id)] == ["notes.txt"]
    assert not backlog.exists() and backlog.with_suffix(".sent.json").exists()
