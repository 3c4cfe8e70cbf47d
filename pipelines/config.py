"""Pipeline-level settings and loading a pipeline config (YAML file + `key.sub=value` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from components.core.config import (
    ConfigError,
    StrictModel,
    apply_overrides,
    deep_merge,
    read_yaml,
    validate,
)
from pipelines.dag import Pipeline

CONFIG_DIR = Path(__file__).parent / "configs"


class RaySettings(StrictModel):
    address: str | None = Field(
        None, description="Ray cluster to join ('auto', host:port); None starts Ray in-process."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the in-process Ray (None = all).")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of the in-process Ray (None = detected).")
    object_store_mb: int = Field(512, ge=64, description="Object store size of the in-process Ray.")
    dashboard: bool = Field(
        True,
        description="Start the in-process Ray's dashboard on 127.0.0.1 (it serves the state API, which "
        "Ray Train's placement-group cleanup polls; without it that cleanup warns every second).",
    )


class PipelineSettings(StrictModel):
    name: str = Field("gptrecipe", description="Name of this pipeline config; names the MLflow runs.")
    seed: int = Field(0, description="Global seed; part of every stage's cache key.")
    store: str = Field("runs/store", description="Artifact store: local path or fsspec URL (s3://...).")
    runs_dir: str = Field("runs", description="Where each run's summary.json and log go (local path).")
    tracking_uri: str = Field("sqlite:///runs/mlflow.db", description="MLflow tracking URI.")
    experiment: str = Field("gptrecipe", description="MLflow experiment.")
    artifact_location: str | None = Field(
        None,
        description="Where MLflow keeps run artifacts when it creates the experiment; None = next to a "
        "SQLite database, or the tracking server's default.",
    )
    ray: RaySettings = Field(default_factory=RaySettings)

    def resolved(self, base: Path) -> PipelineSettings:
        """Relative local paths become absolute, because Ray workers do not share our working dir."""

        def local(path: str) -> str:
            return path if "://" in path else str((base / path).resolve())

        tracking = self.tracking_uri
        if tracking.startswith("sqlite:///") and not tracking.startswith("sqlite:////"):
            db = (base / tracking[len("sqlite:///") :]).resolve()
            tracking = f"sqlite:///{db}"
        artifacts = local(self.artifact_location) if self.artifact_location else None
        return self.model_copy(
            update={
                "store": local(self.store),
                "runs_dir": local(self.runs_dir),
                "tracking_uri": tracking,
                "artifact_location": artifacts,
            }
        )


def config_path(spec: str) -> Path:
    """A config given by name (`tiny`) or path (`my/exp.yaml`)."""
    path = Path(spec)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {spec} does not exist")
        return path
    named = CONFIG_DIR / f"{spec}.yaml"
    if not named.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no config named {spec!r} (known: {known}); or give a path to a YAML file")
    return named


def read_config_data(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config, following `inherit: <name or path>` (relative to the inheriting file)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: inherit cycle through {[str(p) for p in seen]}")
    data = read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    sibling = path.parent / (parent if str(parent).endswith((".yaml", ".yml")) else f"{parent}.yaml")
    parent_path = sibling if sibling.exists() else config_path(str(parent))
    return deep_merge(read_config_data(parent_path, (*seen, path.resolve())), data)


def load_config(
    spec: str, overrides: list[str], pipeline: Pipeline, until: str | None = None
) -> tuple[BaseModel, str]:
    """Validate a pipeline config before any work starts; errors name the key and the file. With `until`,
    only the sections of the stages that will run (`until` and what it depends on) are validated."""
    path = config_path(spec)
    data = read_config_data(path)
    data.setdefault("pipeline", {}).setdefault("name", path.stem)
    source = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source += f" with overrides {' '.join(overrides)}"
    stages = pipeline.select(until)
    model = pipeline.config_model(PipelineSettings, stages)
    config = validate(model, data, source)
    check_switches(config, pipeline, stages, target=until)
    return config, source


@dataclass(frozen=True)
class Skip:
    """Why the pipeline skips a stage that is switched on: an input it needs comes from nothing. `root`
    is the stage where that started (itself, or the skipped stage it waits on)."""

    reason: str
    root: str


@dataclass
class Plan:
    """What each stage of a config gets: the inputs that will be there, and the stages to skip."""

    available: dict[str, set[str]] = field(default_factory=dict)  # stage -> input names that will exist
    skipped: dict[str, Skip] = field(default_factory=dict)

    def skip_lines(self) -> list[str]:
        """One line per root cause, naming every stage skipped because of it."""
        lines = []
        for root, skip in self.skipped.items():
            if skip.root != root:
                continue
            followers = [n for n, s in self.skipped.items() if s.root == root and n != root]
            also = f" and what needs it ({', '.join(followers)})" if followers else ""
            lines.append(f"skipping {root}{also}: {skip.reason}")
        return lines


def plan_inputs(config: BaseModel, pipeline: Pipeline, stages: list[str] | None = None) -> Plan:
    """Walk the stages in order: a stage switched on whose needed input comes from nothing (a stage that
    is off or skipped, and hands nothing on; or no wiring at all) is skipped, with the reason. A stage
    off or skipped still hands on its `passthrough` outputs (a filter that keeps everything)."""
    plan = Plan()
    provided: dict[str, set[str]] = {}  # stage -> outputs that will exist
    for name in pipeline.names if stages is None else stages:
        node, section = pipeline.nodes[name], getattr(config, name)
        sources = node.sources()
        available = {inp for inp, (src, out) in sources.items() if out in provided.get(src, set())}
        plan.available[name] = available
        if section.enabled:
            for inp in node.stage.needed_inputs(section):
                if inp in available:
                    continue
                fields = node.stage.replaced_by.get(inp, ())
                instead = (
                    f"; it runs with {', '.join(f'{name}.{f}' for f in fields)} instead" if fields else ""
                )
                if inp not in sources:
                    plan.skipped[name] = Skip(f"nothing provides its input {inp!r}{instead}", name)
                else:
                    src, out = sources[inp]
                    upstream = plan.skipped.get(src)
                    state = "skipped" if upstream else "off"
                    reason = f"its input {inp!r} comes from {src}.{out}, and {src} is {state}{instead}"
                    plan.skipped[name] = Skip(reason, upstream.root if upstream else name)
                break
        if section.enabled and name not in plan.skipped:
            provided[name] = set(node.stage.outputs)
        else:
            passed = node.stage.passthrough.items()
            provided[name] = {out for out, inp in passed if inp in available}
    return plan


def check_switches(
    config: BaseModel, pipeline: Pipeline, stages: list[str] | None = None, target: str | None = None
) -> Plan:
    """Before any work: which stages are skipped (`plan_inputs`), and every other stage's own preflight
    check passes with the inputs it will actually get. Only `stages` (default: all) are checked; they
    must include what they depend on. `target`, the stage a run was asked for (`--until`), must not be
    one the pipeline skips."""
    plan = plan_inputs(config, pipeline, stages)
    if target in plan.skipped:
        raise ConfigError(f"{target} would be skipped: {plan.skipped[target].reason}")
    for name in pipeline.names if stages is None else stages:
        node, section = pipeline.nodes[name], getattr(config, name)
        if section.enabled and name not in plan.skipped and node.stage.preflight:
            node.stage.preflight(section, plan.available[name])
    return plan
