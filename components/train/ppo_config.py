"""The `ppo` stage's declaration (its config model, `PPOConfig`, is in `components.train.rl.config`):
light (no torch), so that a pipeline config loads and validates fast; `components.train.ppo` is the code."""

from __future__ import annotations

from collections.abc import Collection

from components.core.config import ConfigError
from components.core.stage import stage_spec
from components.train.rl.config import PPOConfig


def check_inputs(config: PPOConfig, inputs: Collection[str]) -> None:
    if "reward_model" not in inputs:
        raise ConfigError("ppo needs a reward_model input (the reward model stage's output)")


SPEC = stage_spec(
    "ppo",
    impl="components.train.ppo:ppo",
    config=PPOConfig,
    inputs=("policy", "reward_model", "prompts"),
    optional_inputs=("critic_init",),
    outputs=("policy",),
    cpus=0,  # only coordinates: the roles' actors reserve the CPUs / GPUs
    preflight=check_inputs,
)
