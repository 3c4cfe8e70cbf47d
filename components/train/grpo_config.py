"""The `grpo` stage's declaration (its config model, `GRPOConfig`, is in `components.train.rl.config`):
light (no torch), so that a pipeline config loads and validates fast; `components.train.grpo` is the code."""

from __future__ import annotations

from collections.abc import Collection

from components.core.config import ConfigError
from components.core.stage import stage_spec
from components.train.rl.config import GRPOConfig


def check_inputs(config: GRPOConfig, inputs: Collection[str]) -> None:
    if config.reward == "reward_model" and "reward_model" not in inputs:
        raise ConfigError("grpo.reward is 'reward_model' but the stage gets no reward_model input")


SPEC = stage_spec(
    "grpo",
    impl="components.train.grpo:grpo",
    config=GRPOConfig,
    inputs=("policy", "prompts"),
    optional_inputs=("reward_model",),
    outputs=("policy",),
    cpus=0,  # only coordinates: the roles' actors reserve the CPUs / GPUs
    preflight=check_inputs,
)
