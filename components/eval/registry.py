"""The MLflow model registry side of the `register` stage: log, register, lineage, champion/challenger.

MLflow 3's registry has no stages (Staging/Production are gone); versions carry aliases. A new version
gets `champion` only when its gold accuracy (a number from evaluate's report, stored on the version as
the tag `gptrecipe.gold_accuracy`) is strictly higher than the current champion's; otherwise it gets
`challenger`. A first version with a known accuracy becomes champion. A version whose accuracy is
unknown (no report) or a champion without the tag never moves the champion.

Everything here talks to MLflow and may raise; the stage turns a failure into a warning.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CHAMPION, CHALLENGER = "champion", "challenger"
GOLD_TAG = "gptrecipe.gold_accuracy"
METRIC_TAG = "gptrecipe.gold_metric"
AGENT_FILE = Path(__file__).resolve().parents[1] / "model" / "responses_agent_model.py"
# What the logged model needs besides gptrecipe's own `components` package (which the serving image
# provides): pinned to this environment's versions, so MLflow need not infer them in a subprocess.
REQUIREMENTS = ("mlflow", "torch", "tokenizers", "safetensors", "pydantic", "numpy")
# Input example: MLflow predicts on it when logging, to check the agent answers; keep it short.
INPUT_EXAMPLE = {"input": [{"role": "user", "content": "Hello!"}], "max_output_tokens": 8}


@dataclass
class Registration:
    """What registering one model did; written to registration.json and reported as metrics."""

    registered: bool
    name: str
    version: str | None = None
    model_uri: str | None = None  # models:/NAME/VERSION
    alias: str | None = None  # champion or challenger
    gold_metric: str = ""
    gold_accuracy: float | None = None
    previous_champion: str | None = None
    previous_champion_accuracy: float | None = None
    run_id: str | None = None
    model_id: str | None = None
    datasets: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gold_accuracy(report_dir: Path | None, metric: str) -> float | None:
    """`<model>.<metric>` (e.g. ppo.accuracy) from evaluate's evaluation.json; None when absent."""
    if report_dir is None:
        return None
    path = Path(report_dir) / "evaluation.json"
    if not path.is_file():
        return None
    model, _, name = metric.partition(".")
    value = json.loads(path.read_text()).get("models", {}).get(model, {}).get(name)
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def requirements() -> list[str]:
    out = []
    for dist in REQUIREMENTS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        out.append(f"{dist}=={version.split('+')[0]}")  # a local build tag (+cpu) is no PyPI version
    return out


def dataset_inputs(datasets: Mapping[str, tuple[str, str, str]]) -> list[Any]:
    """`mlflow.data` inputs, one per name -> (uri, digest, context). Metadata only (source and content
    digest): the data stays in the artifact store."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    out = []
    for name, (uri, digest, context) in datasets.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
                source = resolve_dataset_source(uri)
        except Exception:
            source = CodeDatasetSource({"uri": uri})
        dataset = MetaDataset(source=source, name=name, digest=digest[:36])
        out.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return out


@contextlib.contextmanager
def mlflow_at(tracking_uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent API (which `Model.log` and `register_model` use) pointed at `tracking_uri`.

    Logging a ResponsesAgent predicts on the input example, once with tracing as configured (switched
    off here) and once in a simulated serving environment, which traces regardless. That trace goes to
    `experiment_id`, synchronously: exported later, it would land in whatever tracking URI and default
    experiment the process has then (a `mlflow.db` and `mlruns/` in the working directory)."""
    import mlflow
    from mlflow.tracing.provider import is_tracing_enabled
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}
    if experiment_id is not None:
        env["MLFLOW_EXPERIMENT_ID"] = experiment_id
    saved = {k: os.environ.get(k) for k in env}
    tracing = is_tracing_enabled()
    with _use_tracking_uri(tracking_uri):
        mlflow.tracing.disable()
        os.environ.update(env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if tracing:  # re-initialised here: outside, MLflow would set up its default store (./mlflow.db)
                mlflow.tracing.enable()


def log_agent(client, run_id: str, artifacts: dict[str, str], model_config: dict[str, Any]):
    """Log the chat model as a ResponsesAgent pyfunc (models-from-code) in run `run_id`: ModelInfo."""
    import mlflow
    from mlflow.models import Model

    # The logged model is created first, in the run's experiment: given only a run id (no active run),
    # MLflow would put it in the default experiment, with its artifacts wherever that one keeps them.
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id, model_type="agent")
    return Model.log(
        artifact_path=None,
        name="model",
        flavor=mlflow.pyfunc,
        run_id=run_id,
        model_id=logged.model_id,
        python_model=str(AGENT_FILE),
        artifacts=artifacts,
        model_config=model_config,
        pip_requirements=requirements(),
        input_example=INPUT_EXAMPLE,
    )


def current_champion(client, name: str) -> tuple[str | None, float | None]:
    """(version, gold accuracy) of the version holding `champion`; (None, None) when none does."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None, None
        raise
    raw = version.tags.get(GOLD_TAG)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        value = None
    return str(version.version), value


def pick_alias(new: float | None, champion_version: str | None, champion: float | None) -> str:
    """champion when the new version's gold accuracy is known and strictly beats the champion's (or there
    is no champion yet); challenger otherwise."""
    if new is None:
        return CHALLENGER
    if champion_version is None:
        return CHAMPION
    return CHAMPION if champion is not None and new > champion else CHALLENGER


def register(
    *,
    tracking_uri: str,
    run_id: str,
    name: str,
    artifacts: dict[str, str],
    model_config: dict[str, Any],
    gold_metric: str,
    gold: float | None,
    datasets: Mapping[str, tuple[str, str, str]],
    tags: Mapping[str, str],
) -> Registration:
    """Log the agent in `run_id`, register it as a new version of `name`, record lineage and set its
    alias. Raises on any MLflow failure."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    inputs = dataset_inputs(datasets)
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    with mlflow_at(tracking_uri, client.get_run(run_id).info.experiment_id):
        info = log_agent(client, run_id, artifacts, model_config)
        version_tags = {**tags, METRIC_TAG: gold_metric}
        if gold is not None:
            version_tags[GOLD_TAG] = repr(gold)
        version = mlflow.register_model(info.model_uri, name, tags=version_tags)
    # The champion before this version: read after registering, so two versions never both see none.
    champion_version, champion = current_champion(client, name)
    alias = pick_alias(gold, champion_version, champion)
    client.set_registered_model_alias(name, alias, version.version)
    client.set_registered_model_tag(name, METRIC_TAG, gold_metric)
    return Registration(
        registered=True,
        name=name,
        version=str(version.version),
        model_uri=f"models:/{name}/{version.version}",
        alias=alias,
        gold_metric=gold_metric,
        gold_accuracy=gold,
        previous_champion=champion_version,
        previous_champion_accuracy=champion,
        run_id=run_id,
        model_id=info.model_id,
        datasets=sorted(datasets),
    )


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GOLD_TAG",
    "Registration",
    "current_champion",
    "dataset_inputs",
    "gold_accuracy",
    "pick_alias",
    "register",
]
