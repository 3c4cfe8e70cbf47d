"""The `register_model` stage's config and declaration: light (no mlflow), so that a pipeline config loads and
validates fast; `components.eval.register_model` is the code."""

from __future__ import annotations

from pydantic import Field

from components.core.config import StageConfig
from components.core.stage import stage_spec

# Lineage inputs: stage input -> mlflow.data context.
DATASETS = {"sft": "training", "preferences": "training", "prompts": "training", "report": "evaluation"}


class RegisterConfig(StageConfig):
    """Where the model goes in the registry and which number decides whether it becomes the champion."""

    model_name: str | None = Field(
        None, description="Registered model name; None = gptrecipe-<pipeline name> (gptrecipe-tiny)."
    )
    gold_metric: str = Field(
        "ppo.accuracy",
        description="<model>.<metric> in evaluate's evaluation.json that ranks versions: the default is "
        "the PPO policy's verifier (gold) accuracy on held-out prompts. Higher is better.",
    )
    max_output_tokens: int = Field(
        256, ge=1, description="The served agent's reply length when a request gives no max_output_tokens."
    )
    temperature: float = Field(
        0.0, ge=0, description="The agent's sampling temperature by default (0 = greedy)."
    )


SPEC = stage_spec(
    "register_model",
    impl="components.eval.register_model:register_model",
    config=RegisterConfig,
    inputs=("model",),
    optional_inputs=("hf_model", "report", *(d for d in DATASETS if d != "report")),
    outputs=("registration",),
    cpus=1,
    data_files=("components/model/responses_agent_model.py",),
)
