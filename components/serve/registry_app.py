"""A Serve application whose model comes from the MLflow model registry (infra/k8s/rayservice.yaml).

`build_app` is the `import_path` target: its `args` are a `ServeConfig` without `model_dir`, plus
`model_uri` (`models:/gptrecipe-gpt2-124m@champion`) and optionally `tracking_uri` (default: the
`MLFLOW_TRACKING_URI` environment variable; credentials from `MLFLOW_TRACKING_USERNAME/PASSWORD`).

The alias is resolved to a version number once, when the application is built (deployed or updated),
so every replica serves the same version even if `champion` moves meanwhile; each replica then
downloads that version into its node's scratch directory and loads it (`components.serve.resolve`).
Redeploying (a RayService update, `serve deploy`) picks up the new champion.
"""

from __future__ import annotations

import os
from typing import Any

from components.core.artifacts import scratch_root
from components.core.config import validate
from components.serve.config import ServeConfig


def pin_version(model_uri: str, tracking_uri: str | None) -> str:
    """`models:/NAME@ALIAS` -> `models:/NAME/VERSION` (other URIs unchanged)."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    from mlflow import MlflowClient

    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    version = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(name, alias)
    return f"models:/{name}/{version.version}"


def _deployment_class():
    from ray import serve

    from components.serve.app import create_app
    from components.serve.resolve import resolve_model
    from components.serve.service import Service

    @serve.deployment(name="gptrecipe")
    @serve.ingress()
    class RegistryChatDeployment:
        def __init__(self, config: dict[str, Any], model_uri: str, tracking_uri: str | None) -> None:
            resolved = resolve_model(
                model_uri, tracking_uri=tracking_uri, cache_dir=scratch_root() / "serve-models"
            )
            config = {**config, "model_dir": str(resolved.model_dir)}
            config["model_name"] = config.get("model_name") or resolved.name
            self.service = Service(ServeConfig.model_validate(config))

        def __serve_build_asgi_app__(self):
            return create_app(self.service)

        def __del__(self) -> None:
            if hasattr(self, "service"):
                self.service.close()

    return RegistryChatDeployment


def build_app(args: dict[str, Any]):
    """Application builder: `import_path: components.serve.registry_app:build_app`."""
    args = dict(args)
    model_uri = args.pop("model_uri", None)
    if not model_uri:
        raise ValueError(
            "serve application args: model_uri (e.g. models:/gptrecipe-tiny@champion) is required"
        )
    tracking_uri = args.pop("tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    # Checked now, with a placeholder directory, so a bad key fails the deployment at once.
    config = validate(ServeConfig, {**args, "model_dir": "<from the registry>"}, "serve application args")
    pinned = pin_version(model_uri, tracking_uri)
    cls = _deployment_class().options(**config.deployment_options())
    return cls.bind(args, pinned, tracking_uri)


__all__ = ["build_app", "pin_version"]
