"""The `register_model` stage: the run's final policy as a version in the MLflow model registry.

In the stage's own MLflow run it logs the model as an MLflow 3 `ResponsesAgent` pyfunc
(`components.model.responses_agent`; artifacts: the model directory and the transformers export), links
the SFT, preference, RL-prompt and evaluation data as `mlflow.data` inputs of that run, registers the
model as a new version of `gptrecipe-<pipeline name>` (tagged with its gold accuracy, cache key and
pipeline run) and sets an alias: `champion` when its gold accuracy (`gold_metric` in evaluate's report,
by default the PPO policy's verifier accuracy on held-out prompts) beats the current champion's,
`challenger` otherwise (`components.eval.registry`). `gptrecipe serve models:/gptrecipe-tiny@champion`
serves the champion.

The stage is cached like any other: a cache hit registers nothing again. A registry that cannot be
reached (or refuses) does not fail the pipeline: the stage warns, reports `registered=0`, and
`gptrecipe run CONFIG --force register_model` registers later. Output (`registration`): registration.json.
"""

from __future__ import annotations

import json

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.eval import registry
from components.eval.register_model_config import DATASETS, SPEC, RegisterConfig
from components.model.responses_agent import HF_ARTIFACT, MODEL_DIR_ARTIFACT


@stage(SPEC)
def register_model(ctx: StageContext, config: RegisterConfig, inputs: dict[str, Artifact]) -> dict:
    """The final policy as a model version in the MLflow registry (champion/challenger by gold accuracy)."""
    name = config.model_name or f"gptrecipe-{ctx.env.pipeline or 'recipe'}"
    report = ctx.local_input(inputs["report"]) if "report" in inputs else None
    gold = registry.gold_accuracy(report, config.gold_metric)
    if gold is None:
        ctx.log.warning(
            "register_model: no %s in evaluate's report; the version becomes challenger", config.gold_metric
        )
    artifacts = {MODEL_DIR_ARTIFACT: str(ctx.local_input(inputs["model"]))}
    if "hf_model" in inputs:
        artifacts[HF_ARTIFACT] = str(ctx.local_input(inputs["hf_model"]))
    datasets = {n: (inputs[n].uri, inputs[n].digest, c) for n, c in DATASETS.items() if n in inputs}
    tags = {
        "gptrecipe.pipeline_run": ctx.env.run_id,
        "gptrecipe.cache_key": ctx.key,
        "gptrecipe.model_uri": inputs["model"].uri,
        "mlflow.source.git.commit": ctx.env.git_revision,
    }
    model_config = {"max_output_tokens": config.max_output_tokens, "temperature": config.temperature}

    ctx.tracker.flush()  # the stage's run must exist: the model is logged into it
    result = registry.Registration(
        registered=False, name=name, gold_metric=config.gold_metric, gold_accuracy=gold
    )
    if ctx.tracker.run_id is None:
        result.error = f"MLflow at {ctx.env.tracking_uri} unreachable: the stage has no run to log into"
    else:
        try:
            result = registry.register(
                tracking_uri=ctx.env.tracking_uri,
                run_id=ctx.tracker.run_id,
                name=name,
                artifacts=artifacts,
                model_config=model_config,
                gold_metric=config.gold_metric,
                gold=gold,
                datasets=datasets,
                tags=tags,
            )
        except Exception as e:  # an outage or a refusal must not fail the pipeline
            result.error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    if result.registered:
        ctx.log.info(
            "registered %s version %s as %s (%s %s; champion before: %s at %s)",
            name, result.version, result.alias, config.gold_metric, gold,
            result.previous_champion, result.previous_champion_accuracy,
        )  # fmt: skip
        ctx.tracker.set_tags(
            {"gptrecipe.registered_model": result.model_uri, "gptrecipe.alias": result.alias}
        )
    else:
        ctx.log.warning(
            "register_model: %s was NOT registered (%s); the pipeline goes on. Register it later with "
            "`gptrecipe run CONFIG --force register_model`",
            name,
            result.error,
        )
    with ctx.output_dir("registration") as out:
        (out / "registration.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    ctx.report(
        registered=float(result.registered),
        version=float(result.version) if result.version else None,
        champion=float(result.alias == registry.CHAMPION),
        gold_accuracy=gold,
    )
    return {
        "registration": ctx.artifact(
            "registration", kind="registration", model_name=name, version=result.version, alias=result.alias
        )
    }


__all__ = ["RegisterConfig", "register_model"]
