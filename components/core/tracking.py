"""MLflow tracking that a tracking-server outage cannot kill.

A `Tracker` logs one MLflow run. Every call only appends to an in-memory buffer; the buffer is sent
with `log_batch` every few seconds and when the run finishes. If MLflow cannot be reached, the
records stay buffered and a warning says so; at the end the tracker retries with back-off and, if
the server is still away, writes everything to a backlog file that `gptrecipe tracking-replay`
sends later. Text, dicts and figures are written to a local spool directory first, so an artifact
logged during an outage is never lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.artifacts import scratch_root

log = logging.getLogger("gptrecipe.tracking")

# MLflow's HTTP client retries a dead server for minutes by default (7 retries, back-off factor 2,
# 120 s timeout). The tracker retries and buffers itself, so one quick attempt per flush is right.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

# MLflow's own per-request limits for log_batch.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS, _MAX_PARAM_CHARS = 1000, 100, 100, 6000
PARENT_TAG = "mlflow.parentRunId"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # what `mlflow.log_table` sets: the UI shows these as tables
# MLflow 3's UI opens an experiment in the view this tag names; without it, it guesses from the runs'
# contents and may open the GenAI traces view. Ours are model-training experiments.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def retry_delays() -> list[float]:
    """Back-off before giving up on a finishing run; GPTRECIPE_TRACKING_RETRY_S=1,2,4 overrides."""
    raw = os.environ.get("GPTRECIPE_TRACKING_RETRY_S", "1,2,4,8")
    return [float(x) for x in raw.split(",") if x.strip()]


def default_artifact_location(tracking_uri: str) -> str | None:
    """Run artifacts next to a SQLite tracking database (`<db dir>/mlartifacts`); None otherwise, so that a
    tracking server uses its own. MLflow's own default is `./mlruns` in whatever the working directory is."""
    if tracking_uri.startswith("sqlite:///"):
        return str(Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts")
    return None


@dataclass
class TrackerHandle:
    """What another process (a Ray Train worker) needs to log into the same run."""

    tracking_uri: str
    experiment: str
    run_id: str | None
    run_name: str
    parent_run_id: str | None = None
    artifact_location: str | None = None


@dataclass
class _Buffer:
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, ms, step
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[tuple[str, str | None]] = field(default_factory=list)  # local path, artifact dir

    def __bool__(self) -> bool:
        return bool(self.params or self.metrics or self.tags or self.artifacts)


class Tracker:
    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        *,
        run_name: str,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        spool_dir: str | Path | None = None,
        artifact_location: str | None = None,
        flush_every_s: float = 5.0,
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.run_id = run_id
        self.artifact_location = artifact_location or default_artifact_location(tracking_uri)
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self._own_spool = False  # a temporary spool this tracker made, emptied as it sends
        self.experiment_id: str | None = None  # known once the run exists
        self.flush_every_s = flush_every_s
        self._buffer = _Buffer()
        self._initial_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            self._initial_tags[PARENT_TAG] = parent_run_id
        self._client = None
        self._last_flush = 0.0
        self._down_since: float | None = None
        self._finished = False
        self._tables: list[dict[str, str]] = []

    @classmethod
    def from_handle(cls, handle: TrackerHandle, **kwargs: Any) -> Tracker:
        return cls(
            handle.tracking_uri,
            handle.experiment,
            run_name=handle.run_name,
            parent_run_id=handle.parent_run_id,
            run_id=handle.run_id,
            artifact_location=handle.artifact_location,
            **kwargs,
        )

    def handle(self) -> TrackerHandle:
        self.flush()  # make sure the run exists, so the other process logs into it
        return TrackerHandle(
            self.tracking_uri,
            self.experiment,
            self.run_id,
            self.run_name,
            self.parent_run_id,
            self.artifact_location,
        )

    # -- logging API (never raises for tracking problems) ----------------------------------------

    def log_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            self._buffer.params[key] = text[:_MAX_PARAM_CHARS]
        self._maybe_flush()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is None:
                continue
            self._buffer.metrics.append((key, float(value), now, int(step or 0)))
        self._maybe_flush()

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._buffer.tags.update({k: str(v) for k, v in tags.items()})
        self._maybe_flush()

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._buffer.artifacts.append((str(local_path), artifact_path))
        self._maybe_flush()

    def log_text(self, text: str, name: str) -> Path:
        path = self._spool(name)
        path.write_text(text)
        self.log_artifact(path, os.path.dirname(name) or None)
        return path

    def log_dict(self, data: Any, name: str) -> Path:
        return self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", name)

    def log_table(self, rows: list[dict[str, Any]], name: str) -> Path:
        """Rows as an MLflow table: the JSON `mlflow.log_table` writes (columns + data) and the tag that
        makes the UI show it as a table. `name` ends in .json."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}
        path = self.log_text(json.dumps(table, default=str) + "\n", name)
        self._tables.append({"path": name, "type": "table"})
        self.set_tags({LOGGED_ARTIFACTS_TAG: json.dumps(self._tables)})
        return path

    def log_figure(self, figure: Any, name: str) -> Path:
        path = self._spool(name)
        figure.savefig(path, dpi=110, bbox_inches="tight")
        self.log_artifact(path, os.path.dirname(name) or None)
        return path

    # -- sending ---------------------------------------------------------------------------------

    def _spool_root(self) -> Path:
        if self.spool_dir is None:  # this node's scratch; what was sent from it is removed (`_send`)
            import tempfile

            self.spool_dir = Path(tempfile.mkdtemp(prefix="tracking-", dir=scratch_root()))
            self._own_spool = True
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.spool_dir

    def _spool(self, name: str) -> Path:
        path = self._spool_root() / "artifacts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _maybe_flush(self) -> None:
        interval = self.flush_every_s
        if self._down_since is not None:  # back off while MLflow is away, up to a minute
            interval = min(60.0, max(interval, time.monotonic() - self._down_since))
        if time.monotonic() - self._last_flush >= interval:
            self.flush()

    def _client_or_none(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _ensure_run(self) -> str:
        if self.run_id:
            return self.run_id
        client = self._client_or_none()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(
                    self.experiment,
                    artifact_location=self.artifact_location,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except Exception:  # another process created it first
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        tags = {"mlflow.runName": self.run_name, **self._initial_tags}
        self.experiment_id = exp_id
        self.run_id = client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
        return self.run_id

    def flush(self) -> bool:
        """Send what is buffered. Returns False (and keeps the buffer) when MLflow is unreachable."""
        self._last_flush = time.monotonic()
        try:
            self._send()
        except Exception as e:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning(
                    "MLflow at %s unreachable (%s: %s); buffering run %r and retrying",
                    self.tracking_uri,
                    type(e).__name__,
                    str(e).splitlines()[0][:200] if str(e) else "",
                    self.run_name,
                )
            return False
        if self._down_since is not None:
            log.warning("MLflow reachable again; buffered records of %r sent", self.run_name)
            self._down_since = None
        return True

    def _send(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._ensure_run()
        if not self._buffer:
            return
        client = self._client_or_none()
        buf = self._buffer
        params = [Param(k, v) for k, v in buf.params.items()]
        tags = [RunTag(k, v) for k, v in buf.tags.items()]
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in buf.metrics]
        # Remove from the buffer only what was sent, so a failure halfway re-sends the rest.
        while params or tags or metrics:
            p, t, m = params[:_MAX_PARAMS], tags[:_MAX_TAGS], metrics[:_MAX_METRICS]
            client.log_batch(run_id, metrics=m, params=p, tags=t)
            params, tags, metrics = params[len(p) :], tags[len(t) :], metrics[len(m) :]
            for x in p:
                buf.params.pop(x.key, None)
            for x in t:
                buf.tags.pop(x.key, None)
            del buf.metrics[: len(m)]
        while buf.artifacts:
            path, artifact_path = buf.artifacts[0]
            if Path(path).exists():
                client.log_artifact(run_id, path, artifact_path)
                if self._own_spool and Path(path).is_relative_to(self.spool_dir):
                    Path(path).unlink()
            else:
                log.warning("artifact %s vanished before it could be logged", path)
            buf.artifacts.pop(0)

    def finish(self, status: str = "FINISHED") -> bool:
        """Send everything and close the run. Never raises; returns False if a backlog was written."""
        if self._finished:
            return True
        self._finished = True
        for delay in [0.0, *retry_delays()]:
            time.sleep(delay)
            if self.flush():
                try:
                    self._client_or_none().set_terminated(self.run_id, status)
                    return True
                except Exception:
                    continue
        self._write_backlog(status)
        return False

    def _write_backlog(self, status: str) -> None:
        backlog = {
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "run_name": self.run_name,
            "run_id": self.run_id,
            "parent_run_id": self.parent_run_id,
            "artifact_location": self.artifact_location,
            "tags": {**self._initial_tags, **self._buffer.tags},
            "params": self._buffer.params,
            "metrics": self._buffer.metrics,
            "artifacts": self._buffer.artifacts,
            "status": status,
        }
        path = self._spool_root() / "backlog.json"
        path.write_text(json.dumps(backlog, indent=1))
        log.warning(
            "MLflow at %s still unreachable: %d metrics, %d params, %d artifacts of run %r kept in %s; "
            "send them later with `gptrecipe tracking-replay %s`",
            self.tracking_uri,
            len(self._buffer.metrics),
            len(self._buffer.params),
            len(self._buffer.artifacts),
            self.run_name,
            path,
            path,
        )


def replay_backlog(path: str | Path, tracking_uri: str | None = None) -> str:
    """Send a backlog written by `Tracker.finish` and return the run id it went to."""
    data = json.loads(Path(path).read_text())
    tracker = Tracker(
        tracking_uri or data["tracking_uri"],
        data["experiment"],
        run_name=data["run_name"],
        parent_run_id=data["parent_run_id"],
        run_id=data["run_id"],
        tags={k: v for k, v in data["tags"].items() if k != PARENT_TAG},
        artifact_location=data["artifact_location"],
        spool_dir=Path(path).parent,
    )
    if tracker.run_id:  # the run exists; its creation tags went with it, the rest are sent now
        tracker._buffer.tags.update(data["tags"])
    tracker._buffer.params.update(data["params"])
    tracker._buffer.metrics.extend(tuple(m) for m in data["metrics"])
    tracker._buffer.artifacts.extend(tuple(a) for a in data["artifacts"])
    if not tracker.finish(data["status"]):
        raise ConnectionError(f"MLflow at {tracker.tracking_uri} is still unreachable")
    Path(path).rename(Path(path).with_suffix(".sent.json"))
    return tracker.run_id
