"""Running a pipeline.

1. The driver walks the stages in order and resolves every stage whose outputs are already in the
   cache (a fully cached run never starts Ray).
2. Every other stage becomes a Ray task with the stage's declared resources. Upstream tasks'
   ObjectRefs are passed as arguments of the downstream ones, so Ray's dependency resolution is the
   DAG and independent branches run in parallel.
3. The driver collects the stage records as they finish and writes `summary.json`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import flatten
from components.core.stage import (
    RunEnv,
    StageRecord,
    code_version,
    find_cached,
    lookup_cached,
    passthrough_record,
    run_stage,
)
from components.core.tracking import Tracker
from pipelines.config import PipelineSettings, RaySettings, plan_inputs
from pipelines.dag import Node, Pipeline

log = logging.getLogger("gptrecipe")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def git_revision(cwd: Path) -> str:
    if rev := os.environ.get("GPTRECIPE_GIT_REVISION"):  # set by `gptrecipe submit` for cluster jobs
        return rev
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("gptrecipe")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False


def gather_inputs(node: Node, records: dict[str, StageRecord]) -> dict[str, Artifact]:
    inputs = {}
    for inp, (src, out) in node.sources().items():
        if src in records and out in records[src].outputs:
            inputs[inp] = records[src].outputs[out]
    return inputs


def _execute(payload: dict[str, Any], *upstream: StageRecord) -> StageRecord:
    """Body of a stage's Ray task: assemble inputs from the finished upstream records and run."""
    setup_logging()
    node: Node = payload["node"]
    records = dict(payload["records"])
    records.update({rec.stage: rec for rec in upstream})
    if payload.get("skip"):
        return skipped_record(node, records, payload["skip"])
    config = node.stage.config.model_validate(payload["config"])
    env = RunEnv.model_validate(payload["env"])
    return run_stage(node.stage, config, gather_inputs(node, records), env, force=payload["force"])


def skipped_record(node: Node, records: dict[str, StageRecord], reason: str) -> StageRecord:
    """A stage the pipeline skips (an input it needs comes from nothing): it hands on what it passes
    through, like a stage switched off, and keeps the reason."""
    record = passthrough_record(node.stage, gather_inputs(node, records))
    return record.model_copy(update={"reason": reason})


@contextlib.contextmanager
def ray_session(settings: RaySettings, address: str | None) -> Iterator[None]:
    """Join the configured cluster, or start Ray in this process for a local run."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or settings.address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(
            num_cpus=settings.num_cpus,
            num_gpus=settings.num_gpus,
            object_store_memory=settings.object_store_mb * 2**20,
            include_dashboard=settings.dashboard,
            **quiet,
        )
    try:
        yield
    finally:
        ray.shutdown()


class PipelineRun:
    """One execution of a pipeline config."""

    def __init__(
        self,
        config: BaseModel,
        pipeline: Pipeline,
        *,
        source: str,
        until: str | None = None,
        from_stage: str | None = None,
        force: tuple[str, ...] = (),
        address: str | None = None,
        cwd: Path | None = None,
    ):
        self.config = config
        self.pipeline = pipeline
        self.source = source
        self.address = address
        self.cwd = cwd or Path.cwd()
        self.settings: PipelineSettings = config.pipeline.resolved(self.cwd)
        self.selected = pipeline.select(until)
        self.inputs_plan = plan_inputs(config, pipeline, self.selected)
        self.skipped = {name: skip.reason for name, skip in self.inputs_plan.skipped.items()}
        forced = {pipeline.require(name) for name in force}
        if from_stage:
            forced |= {pipeline.require(from_stage)} | pipeline.descendants(from_stage)
        self.forced = forced & set(self.selected)
        self.run_id = new_run_id()
        self.env = RunEnv(
            run_id=self.run_id,
            store=self.settings.store,
            seed=self.settings.seed,
            tracking_uri=self.settings.tracking_uri,
            experiment=self.settings.experiment,
            artifact_location=self.settings.artifact_location,
            git_revision=git_revision(self.cwd),
            pipeline=self.settings.name,
            code_versions={n: code_version(pipeline.nodes[n].stage) for n in self.selected},
        )

    def section(self, name: str):
        return getattr(self.config, name)

    # -- plan (no side effects): what `gptrecipe stages` shows -----------------------------------

    def plan(self) -> list[dict[str, Any]]:
        ArtifactStore(self.settings.store).check()
        records: dict[str, StageRecord] = {}
        rows = []
        for name in self.selected:
            node = self.pipeline.nodes[name]
            row = {"stage": name, "after": self.pipeline.upstream(name), "key": None}
            ups_known = all(up in records for up in self.pipeline.upstream(name))
            if not self.section(name).enabled or name in self.skipped:
                row["status"] = "skipped" if name in self.skipped else "off"
                row["reason"] = self.skipped.get(name)
                if ups_known or not node.stage.passthrough:  # what it hands on is known
                    records[name] = skipped_record(node, records, row["reason"] or "")
            elif name in self.forced:
                row["status"] = "forced"
            elif ups_known:
                inputs = gather_inputs(node, records)
                row["key"] = self.env.key(node.stage, self.section(name), inputs)
                record = find_cached(node.stage, self.section(name), inputs, self.env)
                if record:
                    records[name] = record
                    row["status"] = "cached"
                else:
                    row["status"] = "will run"
            else:
                row["status"] = "will run (after upstream)"
            rows.append(row)
        return rows

    # -- execution --------------------------------------------------------------------------------

    def execute(self) -> tuple[Path, dict[str, Any]]:
        store = ArtifactStore(self.settings.store)
        store.check()  # an unreachable store, a missing bucket, bad credentials: said now, not mid-run
        run_dir = Path(self.settings.runs_dir, self.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        file_log = logging.FileHandler(run_dir / "run.log")
        file_log.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logging.getLogger("gptrecipe").addHandler(file_log)
        started = time.time()
        parent = Tracker(
            self.settings.tracking_uri,
            self.settings.experiment,
            run_name=f"{self.settings.name}-{self.run_id}",
            tags={
                "gptrecipe.pipeline_run": self.run_id,
                "gptrecipe.config": self.source,
                "mlflow.source.git.commit": self.env.git_revision,
            },
            spool_dir=run_dir / "_tracking",
            artifact_location=self.settings.artifact_location,
        )
        parent.log_params(flatten(self.config.model_dump(mode="json")))
        parent.set_tags({f"gptrecipe.skipped.{name}": reason for name, reason in self.skipped.items()})
        parent.log_dict(self.config.model_dump(mode="json"), "config.json")
        parent.flush()
        self.env = self.env.model_copy(update={"parent_run_id": parent.run_id})
        log.info("run %s of %s (%s)", self.run_id, self.settings.name, self.source)
        for line in self.inputs_plan.skip_lines():  # once per cause, not once per stage
            log.info("%s", line)

        records: dict[str, StageRecord] = {}
        try:
            self._resolve_cached(records)
            pending = [n for n in self.selected if n not in records]
            if pending:
                with ray_session(self.settings.ray, self.address):
                    self._run_on_ray(pending, records)
        except KeyboardInterrupt:
            log.warning("interrupted; stages that did not finish will run again next time")
            for name in self.selected:
                records.setdefault(name, StageRecord(stage=name, status="not_run", error="interrupted"))

        summary = self._summary(records, started, parent.run_id, parent.experiment_id)
        summary_path = run_dir / "summary.json"
        ArtifactStore(run_dir).write_json(str(summary_path), summary)
        if not store.is_local:  # the run's record lives with its outputs, beside the node-local copy
            summary["summary_uri"] = store.uri("runs", self.run_id, "summary.json")
            store.write_json(summary["summary_uri"], summary, sort_keys=False)
        parent.log_artifact(summary_path)
        for name, record in records.items():
            parent.log_metrics({f"{name}/{k}": v for k, v in record.metrics.items()})
        parent.finish("FINISHED" if summary["status"] == "succeeded" else "FAILED")
        logging.getLogger("gptrecipe").removeHandler(file_log)
        file_log.close()
        return summary_path, summary

    def _resolve_cached(self, records: dict[str, StageRecord]) -> None:
        for name in self.selected:
            node = self.pipeline.nodes[name]
            ups_known = all(up in records for up in self.pipeline.upstream(name))
            if name in self.skipped and (ups_known or not node.stage.passthrough):
                records[name] = skipped_record(node, records, self.skipped[name])
                continue
            if name in self.forced or not ups_known:
                continue
            inputs = gather_inputs(node, records)
            record = lookup_cached(node.stage, self.section(name), inputs, self.env)
            if record is not None:
                records[name] = record
                _print_progress(record)

    def _run_on_ray(self, pending: list[str], records: dict[str, StageRecord]) -> None:
        import ray

        remote = ray.remote(_execute)
        refs: dict[str, Any] = {}
        for name in pending:
            node = self.pipeline.nodes[name]
            res = self.section(name).resources or node.stage.resources
            ups = [up for up in self.pipeline.upstream(name) if up in refs]
            payload = {
                "node": node,
                "config": self.section(name).model_dump(mode="json"),
                "env": self.env.model_dump(mode="json"),
                "force": name in self.forced,
                "skip": self.skipped.get(name),
                "records": {up: records[up] for up in self.pipeline.upstream(name) if up in records},
            }
            options: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus, "name": f"stage:{name}"}
            if res.memory_gb:
                options["memory"] = int(res.memory_gb * 2**30)
            # Retries cover a lost worker or node; a stage resumes from its finished shards/checkpoints.
            options["max_retries"] = 1
            refs[name] = remote.options(**options).remote(payload, *(refs[up] for up in ups))

        waiting = {ref: name for name, ref in refs.items()}
        errors: dict[str, BaseException] = {}
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            name = waiting.pop(done[0])
            try:
                records[name] = ray.get(done[0])
                if name not in self.skipped:  # said once, before the run
                    _print_progress(records[name])
            except Exception as e:
                errors[name] = getattr(e, "cause", None) or e
        # A task whose upstream failed raises the upstream's error, possibly before the upstream is
        # collected; so classify only now, in topological order.
        for name in pending:
            if name not in errors:
                continue
            failed_up = [u for u in self.pipeline.ancestors(name) if u in errors]
            if failed_up:
                first = min(failed_up, key=self.pipeline.names.index)
                records[name] = StageRecord(stage=name, status="not_run", error=f"{first} failed")
            else:
                cause = errors[name]
                msg = f"{type(cause).__name__}: {cause}".strip()
                records[name] = StageRecord(stage=name, status="failed", error=msg[:2000])
                log.error("%s failed: %s", name, msg.splitlines()[0] if msg else "")
            _print_progress(records[name])

    def _summary(
        self,
        records: dict[str, StageRecord],
        started: float,
        parent_run_id: str | None,
        experiment_id: str | None = None,
    ) -> dict:
        stages = {}
        for name in self.selected:
            record = records.get(name) or StageRecord(stage=name, status="not_run")
            stages[name] = {
                "status": record.status,
                "cache_key": record.key,
                "duration_s": round(record.duration_s, 3),
                "outputs": {k: a.uri for k, a in record.outputs.items()},
                "metrics": record.metrics,
                "mlflow_run_id": record.mlflow_run_id,
                "node_id": record.node_id,
                **({"error": record.error} if record.error else {}),
                **({"reason": record.reason} if record.reason else {}),
            }
        ok = all(s["status"] in {"done", "cached", "skipped"} for s in stages.values())
        return {
            "run_id": self.run_id,
            "pipeline": self.settings.name,
            "config": self.source,
            "status": "succeeded" if ok else "failed",
            "duration_s": round(time.time() - started, 3),
            "git_revision": self.env.git_revision,
            "store": self.settings.store,
            "mlflow": {
                "tracking_uri": self.settings.tracking_uri,
                "experiment": self.settings.experiment,
                "parent_run_id": parent_run_id,
                "experiment_id": experiment_id,
            },
            "stages": stages,
        }


def _print_progress(record: StageRecord) -> None:
    took = f" in {record.duration_s:.1f}s" if record.status == "done" else ""
    print(f"[{record.status}] {record.stage}{took}", file=sys.stderr, flush=True)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'stage':<18} {'status':<8} {'time':>8}  headline"]
    for name, s in summary["stages"].items():
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in list(s["metrics"].items())[:6])
        took = f"{s['duration_s']:.1f}s" if s["status"] == "done" else "-"
        note = s.get("error") or s.get("reason") or ""
        lines.append(f"{name:<18} {s['status']:<8} {took:>8}  {shown or note[:100]}")
    lines.append(f"run {summary['run_id']} {summary['status']} in {summary['duration_s']:.1f}s")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) and not value.is_integer() else str(int(value))


def run_config(
    config: BaseModel, pipeline: Pipeline, *, source: str, **kwargs: Any
) -> tuple[Path, dict[str, Any]]:
    setup_logging()
    return PipelineRun(config, pipeline, source=source, **kwargs).execute()
