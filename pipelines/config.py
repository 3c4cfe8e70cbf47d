"""Pipeline-level settings and loading a pipeline config (YAML file + `key.sub=value` overrides)."""

from __future__ import annotations

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
    check_switches(config, pipeline, stages)
    return config, source


def check_switches(config: BaseModel, pipeline: Pipeline, stages: list[str] | None = None) -> None:
    """Before any work: a stage switched off must be able to pass its input through, or nothing may need
    its output; and every stage's own preflight check passes with the inputs it will actually get.
    Only `stages` (default: all) are checked; they must include what they depend on."""
    for name in pipeline.names if stages is None else stages:
        node = pipeline.nodes[name]
        if not getattr(config, name).enabled:
            continue
        available = set()
        for inp, (src, out) in node.sources().items():
            if getattr(config, src).enabled or out in pipeline.nodes[src].stage.passthrough:
                available.add(inp)
            elif inp not in node.stage.optional_inputs:
                raise ConfigError(
                    f"{src}.enabled is false, but {name} needs its output {out!r} (input {inp!r}); "
                    f"switch {name} off too or give it another source"
                )
        if node.stage.preflight:
            node.stage.preflight(getattr(config, name), available)
