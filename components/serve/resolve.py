"""MODEL, as `gptrecipe serve` and `gptrecipe chat` take it, to a local model directory.

MODEL may be

- a model directory (config.json + model.safetensors + tokenizer.json, as `save_model_dir` writes);
- a run: its `summary.json`, its directory (`runs/<id>`) or just its id (looked up under --runs-dir);
  the chat model is the output of the last post-training stage that ran (ppo, then grpo, then sft,
  then pretrain), or of `--stage`; the run's reward model, if it has one, is served for /v1/score;
- left out, with `--stage`: the latest run under --runs-dir (of `--config`, if given) with that stage;
- an MLflow URI (`models:/gptrecipe-tiny@champion`, `runs:/<id>/model`), downloaded with
  `mlflow.artifacts.download_artifacts` from --tracking-uri.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.artifacts import filesystem
from components.model.checkpoint import CONFIG_FILE

# Stage -> the output that holds its model directory; the order is the default preference.
CHAT_STAGES: dict[str, str] = {"ppo": "policy", "grpo": "policy", "sft": "model", "pretrain": "model"}
REWARD_OUTPUT = ("reward_model", "reward_model")


class ModelNotFound(ValueError):
    """MODEL names nothing servable; the message says what was looked for."""


@dataclass(frozen=True)
class ResolvedModel:
    model_dir: Path
    name: str
    reward_model_dir: Path | None = None


def resolve_model(
    model: str | None,
    *,
    stage: str | None = None,
    config: str | None = None,
    runs_dir: str | Path = "runs",
    tracking_uri: str | None = None,
    cache_dir: str | Path | None = None,
) -> ResolvedModel:
    if stage is not None and stage not in CHAT_STAGES:
        raise ModelNotFound(f"--stage {stage!r} is not one of {', '.join(CHAT_STAGES)}")
    runs_dir = Path(runs_dir)
    cache = Path(cache_dir) if cache_dir else runs_dir / "serve-cache"
    if model is None:
        if stage is None:
            raise ModelNotFound("give a MODEL (a model directory, run or models:/ URI) or --stage")
        return _from_summary(_latest_summary(runs_dir, stage, config), stage, cache)
    if "://" in model or model.startswith(("models:/", "runs:/")):
        return _from_mlflow(model, tracking_uri, cache)
    path = Path(model)
    if (path / CONFIG_FILE).is_file():
        return ResolvedModel(path, path.name)
    for summary in (path, path / "summary.json", runs_dir / model / "summary.json"):
        if summary.is_file() and summary.name == "summary.json":
            return _from_summary(summary, stage, cache)
    raise ModelNotFound(
        f"{model} is neither a model directory (no {CONFIG_FILE}), a run's summary.json, a run directory, "
        f"a run id under {runs_dir}, nor an MLflow URI (models:/NAME@ALIAS)"
    )


def _latest_summary(runs_dir: Path, stage: str, config: str | None) -> Path:
    candidates = []
    for path in runs_dir.glob("*/summary.json"):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if config is not None and Path(str(summary.get("config", ""))).stem != Path(config).stem:
            continue
        if _stage_output(summary, stage) is not None:
            candidates.append((path.stat().st_mtime, path))
    if not candidates:
        which = f" of config {config}" if config else ""
        raise ModelNotFound(f"no run{which} under {runs_dir} has a finished {stage} stage")
    return max(candidates)[1]


def _stage_output(summary: dict[str, Any], stage: str, output: str | None = None) -> str | None:
    record = summary.get("stages", {}).get(stage) or {}
    if record.get("status") not in {"done", "cached"}:
        return None
    return record.get("outputs", {}).get(output or CHAT_STAGES[stage])


def chat_stage(summary: dict[str, Any]) -> str | None:
    """The stage whose model a run's chat should use: the last post-training stage that finished."""
    return next((s for s in CHAT_STAGES if s != "pretrain" and _stage_output(summary, s)), None)


def _from_summary(path: Path, stage: str | None, cache: Path) -> ResolvedModel:
    summary = json.loads(path.read_text())
    stage = stage or chat_stage(summary) or ("pretrain" if _stage_output(summary, "pretrain") else None)
    uri = _stage_output(summary, stage) if stage else None
    if uri is None:
        raise ModelNotFound(f"run {summary.get('run_id')} ({path}) has no finished {stage or 'model'} stage")
    reward = _stage_output(summary, *REWARD_OUTPUT)
    name = f"{Path(str(summary.get('config', 'gptrecipe'))).stem}-{stage}"
    return ResolvedModel(_local(uri, cache), name, _local(reward, cache) if reward else None)


def _local(uri: str, cache: Path) -> Path:
    """A local copy of a model directory that may live in object storage."""
    fs, path = filesystem(uri)
    if fs.protocol in ("file", "local") or (isinstance(fs.protocol, tuple) and "file" in fs.protocol):
        return Path(path)
    dest = cache / path.strip("/").replace("/", "_")
    if not (dest / CONFIG_FILE).is_file():
        fs.get(uri.rstrip("/") + "/", str(dest), recursive=True)
    return dest


def _from_mlflow(uri: str, tracking_uri: str | None, cache: Path) -> ResolvedModel:
    import contextlib

    import mlflow.artifacts
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    cache.mkdir(parents=True, exist_ok=True)
    # models:/ URIs are looked up in the registry, whose URI defaults to the *current* tracking URI, not to
    # download_artifacts' tracking_uri argument: make --tracking-uri the current one while downloading.
    with _use_tracking_uri(tracking_uri) if tracking_uri else contextlib.nullcontext():
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, tracking_uri=tracking_uri, dst_path=str(cache)
            )
        )
    # A registered model's artifacts may hold the model directory one level down (the `register` stage's
    # ResponsesAgent: artifacts/model_dir, beside the transformers export whose config.json is not ours).
    found = [local] if _is_model_dir(local) else sorted(p.parent for p in local.rglob(CONFIG_FILE))
    found = [p for p in found if _is_model_dir(p)] or found
    if not found:
        raise ModelNotFound(f"{uri} downloaded to {local}, but no {CONFIG_FILE} is in it")
    name = (
        uri.removeprefix("models:/").split("@")[0].split("/")[0]
        if uri.startswith("models:/")
        else found[0].name
    )
    return ResolvedModel(found[0], name)


def _is_model_dir(path: Path) -> bool:
    """A gptrecipe model directory (our config.json format), not e.g. a transformers export."""
    from components.model.checkpoint import read_model_config

    try:
        read_model_config(path)
    except (OSError, ValueError):
        return False
    return True
