"""Config models and YAML loading.

Every config in gptrecipe is a pydantic v2 model that refuses unknown keys, so a typo is an error
before any work starts. YAML files may inherit from another config (`inherit: smoke`) and the
command line overrides single keys (`pretrain.max_steps=200`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A mistake in a config file or an override, described so that the user can fix it."""


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class Resources(StrictModel):
    """What one stage's Ray task asks the scheduler for."""

    cpus: float = Field(1.0, ge=0, description="CPU cores reserved for the stage's own task.")
    gpus: float = Field(0.0, ge=0, description="GPUs reserved for the stage's own task.")
    memory_gb: float | None = Field(None, gt=0, description="Memory reserved (GiB); None = no reservation.")


class StageConfig(StrictModel):
    """Fields every stage config has. Each stage documents its own fields in a subclass."""

    enabled: bool = Field(
        True, description="False passes the stage's input through unchanged (only stages that can do so)."
    )
    resources: Resources | None = Field(None, description="Overrides the stage's declared resources.")

    def external_inputs(self) -> list[str]:
        """Files or URLs outside the artifact store that this config makes the stage read (a user's
        tokenizer, data or list files). Their fingerprints are part of the cache key, so replacing such
        a file under the same name reruns the stage. Stages with path fields override this."""
        return []


# --- loading -------------------------------------------------------------------------------------


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins; nested mappings merge key by key, everything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is read as YAML (so 3 is an int, [1,2] a list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty part in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            shown = e.get("input")
            got = f" (got {shown!r})" if shown is not None and not isinstance(shown, dict | list) else ""
            lines.append(f"  {key}: {e['msg']}{got}")
    return "\n".join(lines)


def validate(model: type[BaseModel], data: Mapping[str, Any], source: str) -> Any:
    """Validate `data` against `model`, turning pydantic's error into a ConfigError naming key and source."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: how a config becomes MLflow params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
