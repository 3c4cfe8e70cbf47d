"""The stage contract.

A stage is a function `(ctx, config, inputs) -> outputs` declared with `@stage(...)`: its name, its
config model, the artifacts it reads and writes, and the resources its Ray task asks for.
`run_stage` executes one stage with caching:

    key = hash(stage name, stage code version, canonical config, input digests, pipeline seed)

A stage writes its outputs under `<store>/stages/<name>/<key>/` and then, last, `stage.json` (the
success record, written atomically). A later run that computes the same key finds `stage.json` and
reuses the outputs; a stage killed halfway leaves no `stage.json`, so it runs again -- and may
resume from whatever per-shard files or checkpoints it had finished (`ctx.work_uri`).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from components.core import code_version as code_versions
from components.core.artifacts import Artifact, ArtifactStore, scratch_root, stage_in, stage_out
from components.core.config import ConfigError, Resources, StageConfig, StrictModel, flatten
from components.core.staging import StagedInputs
from components.core.tracking import Tracker, TrackerHandle

log = logging.getLogger("gptrecipe")

RECORD_NAME = "stage.json"
T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """A stage: what the DAG knows of it without running anything (name, config model, inputs, outputs,
    resources, preflight check) and its code, `fn`, or where to find it, `impl` ("module:function").

    A stage's declaration lives beside its config model in a light module (`dedup_config.py` beside
    `dedup.py`) that imports neither torch nor the stage's other heavy libraries, so loading and
    validating a pipeline config is fast; the heavy module binds its function to the declaration
    (`@stage(SPEC)`) and is imported only when the stage runs (`Stage.function`)."""

    name: str
    fn: Callable[..., dict[str, Artifact]] | None
    config: type[StageConfig]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    resources: Resources
    optional_inputs: tuple[str, ...] = ()
    passthrough: dict[str, str] = field(default_factory=dict)  # output -> input, when switched off
    # Files or directories (relative to the project root) the stage's code reads, hashed into its code
    # version with the modules it imports (which are found from the code itself).
    data_files: tuple[str, ...] = ()
    # Checks a config against the inputs the DAG will provide, when the config is loaded (before any stage
    # runs), so a stage deep in the pipeline cannot fail late on something knowable up front.
    preflight: Callable[[StageConfig, Collection[str]], None] | None = None
    # Optional inputs the stage needs unless one of these config fields is set (model_quality's
    # `reference` unless `reference_path` or `model_path`): the pipeline skips a stage whose needed input
    # comes from nothing (`pipelines.config.plan_inputs`).
    replaced_by: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # "module:function" of the stage's code, imported only when needed (None: `fn` is the code).
    impl: str | None = None

    def needed_inputs(self, config: StageConfig) -> list[str]:
        """The inputs this config cannot run without: the declared ones, and each `replaced_by` input
        whose replacing config fields are all unset."""
        replaced = {i for i, fields in self.replaced_by.items() if any(getattr(config, f) for f in fields)}
        optional = set(self.optional_inputs) - set(self.replaced_by)
        return [i for i in self.inputs if i not in optional and i not in replaced]

    @property
    def module(self) -> str:
        """The module holding the stage's code (its code version starts there), found without importing it."""
        if self.impl:
            return self.impl.partition(":")[0]
        if self.fn is None:
            raise ValueError(f"stage {self.name} has neither code (fn) nor a reference to it (impl)")
        return self.fn.__module__

    @property
    def function(self) -> Callable[..., dict[str, Artifact]]:
        """The stage's code; a declaration (`fn` None) imports its `impl` module now."""
        if self.fn is not None:
            return self.fn
        module, _, attr = (self.impl or "").partition(":")
        bound = getattr(importlib.import_module(module), attr or self.name)
        fn = bound.function if isinstance(bound, Stage) else bound
        if isinstance(bound, Stage) and bound.name != self.name:
            raise ValueError(f"{self.impl} is stage {bound.name!r}, not {self.name!r}")
        return fn

    @property
    def description(self) -> str:
        """The first line of the stage function's docstring (read from the source, not imported)."""
        doc = inspect.getdoc(self.fn) if self.fn is not None else _docstring(self.impl or "")
        return (doc or "").split("\n", 1)[0]

    def __call__(self, ctx: StageContext, config: StageConfig, inputs: dict[str, Artifact]):
        return self.function(ctx, config, inputs)


def _docstring(impl: str) -> str | None:
    module, _, name = impl.partition(":")
    path = code_versions.module_file(module)
    if path is None:
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return ast.get_docstring(node)
    return None


def stage_spec(
    name: str,
    *,
    impl: str,
    config: type[StageConfig],
    outputs: Iterable[str],
    inputs: Iterable[str] = (),
    optional_inputs: Iterable[str] = (),
    cpus: float = 1,
    gpus: float = 0,
    memory_gb: float | None = None,
    passthrough: dict[str, str] | None = None,
    data_files: Iterable[str] = (),
    preflight: Callable[[StageConfig, Collection[str]], None] | None = None,
    replaced_by: dict[str, Iterable[str]] | None = None,
) -> Stage:
    """Declare a stage without its code: `impl` ("module:function") names the function, which binds
    itself with `@stage(SPEC)`. `cpus`/`gpus`/`memory_gb` are what its Ray task reserves; a stage that
    only coordinates other Ray work (Ray Train, fan-out over shards) should reserve `cpus=0`.
    `replaced_by={"input": ("field", ...)}`: an optional input the stage needs unless one of those config
    fields is set; without either, the pipeline skips the stage (and says why) instead of running it."""
    optional_inputs = tuple(optional_inputs)
    replaced = {inp: tuple(fields) for inp, fields in (replaced_by or {}).items()}
    unknown = [inp for inp in replaced if inp not in optional_inputs]
    if unknown:
        raise ValueError(f"stage {name}: replaced_by names {unknown}, which are not optional inputs")
    return Stage(
        name=name,
        fn=None,
        config=config,
        inputs=tuple(inputs) + tuple(optional_inputs),
        optional_inputs=tuple(optional_inputs),
        outputs=tuple(outputs),
        resources=Resources(cpus=cpus, gpus=gpus, memory_gb=memory_gb),
        passthrough=dict(passthrough or {}),
        data_files=tuple(data_files),
        preflight=preflight,
        impl=impl,
        replaced_by=replaced,
    )


def stage(name: str | Stage, **declaration: Any) -> Callable[[Callable[..., dict[str, Artifact]]], Stage]:
    """Bind a stage function to its declaration (`@stage(SPEC)`, see `stage_spec`), or declare a stage
    in place (`@stage("name", config=..., outputs=...)`, `stage_spec`'s arguments but `impl`)."""

    def wrap(fn: Callable[..., dict[str, Artifact]]) -> Stage:
        if isinstance(name, Stage):
            here = f"{fn.__module__}:{fn.__name__}"
            if name.impl and name.impl != here:
                raise ValueError(f"stage {name.name} is declared at {name.impl}, but bound at {here}")
            return dataclasses.replace(name, fn=fn, impl=name.impl or here)
        if declaration.get("config") is None:
            raise TypeError(f"stage {name!r}: config= is required")
        return dataclasses.replace(stage_spec(name, impl="", **declaration), fn=fn, impl=None)

    return wrap


# --- cache keys and success records --------------------------------------------------------------


def code_version(stage: Stage) -> str:
    """Hash of the parsed code of every project module the stage's module imports, transitively, and of
    the bytes of its `data_files` (see `components.core.code_version`). Editing anything a stage can run
    or ships with reruns it; editing an unrelated module, a comment or a docstring does not."""
    return code_versions.code_version(stage.module, stage.data_files)


def fingerprint(location: str) -> str:
    """A cheap identity for a file, directory or URL outside the store: size plus modification time,
    ETag or checksum -- whatever the filesystem knows without reading the content (a WARC may be GBs)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    try:
        files = sorted(fs.find(path, detail=True).items()) if fs.isdir(path) else [(path, fs.info(path))]
    except FileNotFoundError:
        return "missing"
    h = hashlib.sha256()
    for name, info in files:
        stamp = next(
            (info[k] for k in ("ETag", "etag", "md5", "mtime", "LastModified", "created") if k in info), ""
        )
        h.update(f"{name}\0{info.get('size')}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def cache_key(stage: Stage, config: StageConfig, inputs: dict[str, Artifact], seed: int, code: str) -> str:
    # `enabled` and `resources` do not change what a stage computes, so they stay out of the key.
    semantic = config.model_dump(mode="json", exclude={"enabled", "resources"})
    payload = {
        "stage": stage.name,
        "code": code,
        "config": semantic,
        "inputs": {name: art.digest for name, art in sorted(inputs.items())},
        "external": {loc: fingerprint(loc) for loc in sorted(config.external_inputs())},
        "seed": seed,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class StageRecord(StrictModel):
    """The outcome of one stage in one pipeline run; on disk (`stage.json`) it marks success."""

    stage: str
    status: str = Field(description="done | cached | skipped | failed | not_run")
    key: str | None = None
    outputs: dict[str, Artifact] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict, description="Headline metrics.")
    duration_s: float = 0.0
    mlflow_run_id: str | None = None
    produced_by_run: str | None = Field(None, description="MLflow run that computed the outputs.")
    finished_at: float | None = None
    node_id: str | None = Field(None, description="The Ray node that computed the outputs.")
    error: str | None = None
    reason: str | None = Field(None, description="Why the pipeline skipped the stage (None: switched off).")


def stage_dir(store: ArtifactStore, stage_name: str, key: str) -> str:
    return store.uri("stages", stage_name, key)


def read_record(store: ArtifactStore, stage_name: str, key: str) -> StageRecord | None:
    uri = store.join(stage_dir(store, stage_name, key), RECORD_NAME)
    if not store.exists(uri):
        return None
    try:
        return StageRecord.model_validate(store.read_json(uri))
    except Exception:  # a damaged record is not a finished stage
        log.warning("ignoring unreadable success record %s", uri)
        return None


# --- the run environment and the context a stage sees --------------------------------------------


class RunEnv(StrictModel):
    """What executing any stage of a pipeline run needs; travels to Ray workers."""

    run_id: str
    store: str
    seed: int = 0
    tracking_uri: str
    experiment: str
    artifact_location: str | None = None
    parent_run_id: str | None = None
    git_revision: str = "unknown"
    pipeline: str = ""
    ray_submission_id: str | None = Field(
        default_factory=lambda: ray_submission_id(),
        description="The Ray job this run was submitted as (read in the driver; workers do not see it).",
    )
    progress_bars: bool = Field(
        default_factory=lambda: sys.stderr.isatty(),
        description="Draw progress bars (the driver's stderr is a terminal); otherwise stay quiet.",
    )
    code_versions: dict[str, str] = Field(
        default_factory=dict, description="Stage code versions, computed once by the driver."
    )

    def key(self, stage: Stage, config: StageConfig, inputs: dict[str, Artifact]) -> str:
        code = self.code_versions.get(stage.name) or code_version(stage)
        return cache_key(stage, config, inputs, self.seed, code)


def ray_submission_id() -> str | None:
    """The submission id of the Ray job this driver runs as, if it was submitted through the job API:
    Ray passes the job's config, metadata included, to the entrypoint as JSON in this variable."""
    try:
        return json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])["metadata"]["job_submission_id"]
    except (KeyError, TypeError, ValueError):
        return None


def ray_node_id() -> str | None:
    """The id of the Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def _ray_job_ids(env: RunEnv) -> dict[str, str]:
    ids = {"ray.submission_id": env.ray_submission_id} if env.ray_submission_id else {}
    try:
        import ray

        if ray.is_initialized():
            ids["ray.job_id"] = ray.get_runtime_context().get_job_id()
            ids["ray.node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:
        pass
    return ids


@dataclass
class StageContext:
    """What a stage function gets besides its config and inputs."""

    stage: str
    key: str
    store: ArtifactStore
    tracker: Tracker
    seed: int
    env: RunEnv
    log: logging.Logger
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(dir=scratch_root())))
    headline: dict[str, float] = field(default_factory=dict)
    # Inputs staged into `scratch` on this node: local path -> store URI (empty on a local store). Work
    # this stage hands to other processes (Ray Train workers, RL roles) stages them again on their own
    # node and rebases the paths (`staged_inputs()`, `components.core.staging`).
    staged: dict[str, str] = field(default_factory=dict)
    _digests: dict[str, str] = field(default_factory=dict)
    _inputs: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def work_uri(self) -> str:
        """This stage's directory for this cache key; scratch and checkpoints go under `_work/`."""
        return stage_dir(self.store, self.stage, self.key)

    def output_uri(self, name: str) -> str:
        return self.store.join(self.work_uri, name)

    def local_input(self, artifact: Artifact | str) -> Path:
        """A local path holding an input (artifact or URI) until the stage ends: the path itself on a
        local store, a copy in this node's scratch otherwise (staged once per stage run)."""
        uri = artifact if isinstance(artifact, str) else artifact.uri
        for local, staged_uri in self.staged.items():
            if staged_uri == uri:
                return Path(local)
        path = self._inputs.enter_context(stage_in(uri))
        if str(path) != uri:
            self.staged[str(path)] = uri
        return path

    @contextlib.contextmanager
    def output_dir(self, name: str) -> Iterator[Path]:
        """A local directory for output `name`, in the store when the block ends without an error (see
        `stage_out`); the local copy stays readable until the stage ends (e.g. for the tracker). Its
        digest is taken from the local copy, so `artifact(name)` reads nothing back."""
        with stage_out(self.output_uri(name), within=self.scratch) as local:
            yield local
            self._digests[name] = ArtifactStore(str(local)).digest(str(local))

    def staged_inputs(self) -> StagedInputs:
        """What this stage staged, for work it hands to processes that may run on other nodes."""
        return StagedInputs(node_id=ray_node_id(), paths=dict(self.staged))

    def close(self) -> None:
        """Remove what this stage staged and its scratch directory."""
        self._inputs.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def scratch_uri(self, name: str) -> str:
        return self.store.join(self.work_uri, "_work", name)

    def artifact(self, name: str, kind: str, **meta: Any) -> Artifact:
        uri = self.output_uri(name)
        digest = self._digests.get(name) or self.store.digest(uri)
        return Artifact(uri=uri, kind=kind, digest=digest, meta=meta)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.tracker.log_metrics(metrics, step)

    def report(self, **metrics: float) -> None:
        """Headline metrics: logged to MLflow and shown in summary.json and the run's summary."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self.headline.update(clean)
        self.tracker.log_metrics(clean)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """A progress bar: Ray's (drawn by the driver) inside a Ray worker, tqdm on a terminal."""
        desc = f"{self.stage}: {desc}" if desc else self.stage
        if not self.env.progress_bars:
            return iter(items)
        if _in_ray_worker():
            from ray.experimental import tqdm_ray

            return iter(tqdm_ray.tqdm(items, total=total, desc=desc))
        from tqdm import tqdm

        return iter(tqdm(items, total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False))

    def tracker_handle(self) -> TrackerHandle:
        return self.tracker.handle()


def _in_ray_worker() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:
        return False


# --- executing one stage ---------------------------------------------------------------------


def passthrough_record(stage: Stage, inputs: dict[str, Artifact]) -> StageRecord:
    """A switched-off stage hands its input on as its output (a filter that keeps everything)."""
    outputs = {out: inputs[src] for out, src in stage.passthrough.items() if src in inputs}
    return StageRecord(stage=stage.name, status="skipped", outputs=outputs)


def _run_tags(stage: Stage, key: str, env: RunEnv) -> dict[str, str]:
    return {
        "gptrecipe.stage": stage.name,
        "gptrecipe.cache_key": key,
        "gptrecipe.pipeline_run": env.run_id,
        "mlflow.source.git.commit": env.git_revision,
        **_ray_job_ids(env),
    }


def find_cached(
    stage: Stage, config: StageConfig, inputs: dict[str, Artifact], env: RunEnv
) -> StageRecord | None:
    """The stage's outcome if nothing needs computing: switched off, or finished before with this key."""
    if not config.enabled:
        return passthrough_record(stage, inputs)
    store = ArtifactStore(env.store)
    return read_record(store, stage.name, env.key(stage, config, inputs))


def lookup_cached(
    stage: Stage, config: StageConfig, inputs: dict[str, Artifact], env: RunEnv
) -> StageRecord | None:
    """`find_cached`, and a cache hit gets its own short MLflow child run (tagged
    `gptrecipe.cache=hit`), so the run tree always shows every stage."""
    record = find_cached(stage, config, inputs, env)
    if record is None or record.status == "skipped":
        return record
    tags = _run_tags(stage, record.key or "", env)
    tags.update({"gptrecipe.cache": "hit", "gptrecipe.produced_by_run": record.produced_by_run or ""})
    tracker = Tracker(
        env.tracking_uri,
        env.experiment,
        run_name=stage.name,
        parent_run_id=env.parent_run_id,
        tags=tags,
        artifact_location=env.artifact_location,
    )
    tracker.log_metrics(record.metrics)
    tracker.finish()
    log.info("%s: cached (key %s)", stage.name, record.key)
    return record.model_copy(update={"status": "cached", "mlflow_run_id": tracker.run_id, "duration_s": 0.0})


def run_stage(
    stage: Stage,
    config: StageConfig,
    inputs: dict[str, Artifact],
    env: RunEnv,
    *,
    force: bool = False,
) -> StageRecord:
    """Run `stage` unless its outputs for this exact key exist; return what happened."""
    check_inputs(stage, inputs)
    if not force and (record := lookup_cached(stage, config, inputs, env)):
        return record
    store = ArtifactStore(env.store)
    key = env.key(stage, config, inputs)
    work_uri = stage_dir(store, stage.name, key)
    if force and store.exists(work_uri):
        log.info("%s: forced, discarding the cached outputs in %s", stage.name, work_uri)
        store.remove(work_uri)
    store.makedirs(work_uri)
    # The tracker spools artifacts (and, if the server stays away, its backlog) beside the outputs on a
    # local store; on an object store in node-local scratch, removed once everything has been sent.
    local_spool = store.is_local
    spool = (
        Path(work_uri, "_tracking") if local_spool else scratch_root() / "tracking" / f"{stage.name}-{key}"
    )
    tracker = Tracker(
        env.tracking_uri,
        env.experiment,
        run_name=stage.name,
        parent_run_id=env.parent_run_id,
        tags={**_run_tags(stage, key, env), "gptrecipe.cache": "miss"},
        spool_dir=spool,
        artifact_location=env.artifact_location,
    )
    tracker.log_params(flatten(config.model_dump(mode="json")))
    tracker.log_params({f"input.{n}": a.uri for n, a in inputs.items()})
    ctx = StageContext(
        stage=stage.name,
        key=key,
        store=store,
        tracker=tracker,
        seed=env.seed,
        env=env,
        log=logging.getLogger(f"gptrecipe.{stage.name}"),
    )
    log.info("%s: running (key %s) on node %s", stage.name, key, ray_node_id() or "-")
    started = time.time()
    try:
        try:
            outputs = stage.function(ctx, config, inputs)
            missing = set(stage.outputs) - set(outputs or {})
            if missing:
                raise RuntimeError(
                    f"stage {stage.name} did not produce its declared outputs {sorted(missing)}"
                )
        except BaseException as e:
            tracker.set_tags({"gptrecipe.error": f"{type(e).__name__}: {e}"[:5000]})
            tracker.finish("FAILED")
            raise
        duration = time.time() - started
        tracker.log_metrics({"stage_duration_s": duration})
        tracker.flush()
        record = StageRecord(
            stage=stage.name,
            status="done",
            key=key,
            outputs=outputs,
            metrics=ctx.headline,
            duration_s=duration,
            mlflow_run_id=tracker.run_id,
            produced_by_run=tracker.run_id,
            finished_at=time.time(),
            node_id=ray_node_id(),
        )
        # The success record goes last: only now does this key count as finished. Unsorted, so that a
        # cached stage's headline metrics print in the order the stage chose.
        store.write_json(store.join(work_uri, RECORD_NAME), record.model_dump(mode="json"), sort_keys=False)
        if tracker.finish() and not local_spool:
            shutil.rmtree(spool, ignore_errors=True)
    finally:
        ctx.close()
    log.info("%s: done in %.1fs", stage.name, duration)
    return record


def check_inputs(stage: Stage, inputs: dict[str, Artifact]) -> None:
    missing = [n for n in stage.inputs if n not in inputs and n not in stage.optional_inputs]
    if missing:
        raise ConfigError(f"stage {stage.name} is missing its inputs {missing}")
