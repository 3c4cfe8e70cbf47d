"""The contract between the driver (`RLRun`) and an algorithm (`components.train.ppo.PPO`,
`components.train.grpo.GRPO`): the driver owns the loop, the data, checkpoints, monitoring and
evaluation; the algorithm says which roles it needs and runs the middle of one iteration:

    generation -> scoring (RM / verifier, old log-probs, reference log-probs, values: no gradients,
    once per batch) -> experience (rewards, advantages) -> training
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from components.train.rl.batch import CriticStats, PolicyStats, Rollout, Scores
from components.train.rl.config import RLConfig
from components.train.rl.placement import RoleGroup, RoleSpec
from components.train.rl.prompts import PromptRecord, PromptSet


@dataclass
class RLPaths:
    """Local paths of the stage's inputs, as the roles open them."""

    policy: str
    tokenizer: str
    reward_model: str | None = None
    critic_init: str | None = None


@dataclass
class IterationResult:
    """What an algorithm's iteration hands back to the driver."""

    metrics: dict[str, float | None]  # logged at this step (rollout/*, train/*, time/*); None = n/a
    records: list[PromptRecord]  # the prompt record of each rollout row (sample tables)
    scores: Scores
    lengths: Tensor  # (B,) reply lengths in tokens
    tokens: int  # real tokens in the rollout (prompt + reply), for tokens/s

    @classmethod
    def of(
        cls,
        rollout: Rollout,
        metrics: dict[str, float | None],
        records: list[PromptRecord],
        scores: Scores,
        *,
        generation_s: float,
        scoring_s: float,
        training_s: float,
    ) -> IterationResult:
        """The result of an iteration that generated `rollout`: its `metrics`, then the phases' times
        and the generation throughput."""
        metrics = metrics | {
            "time/generation_s": generation_s,
            "time/scoring_s": scoring_s,
            "time/training_s": training_s,
            "throughput/generated_tokens_per_s": float(rollout.response_mask.sum()) / generation_s,
        }
        lengths = rollout.response_mask.sum(dim=1)
        return cls(
            metrics=metrics, records=records, scores=scores, lengths=lengths, tokens=rollout.real_tokens()
        )


def update_metrics(stats: CriticStats, prefix: str) -> dict[str, float | None]:
    """A role's update as metrics under `prefix`: the mean of each mini-batch statistic (the epoch is not
    one) and the learning rate."""
    return {
        **{f"{prefix}/{k}": v for k, v in stats["mean"].items() if k != "epoch"},
        f"{prefix}/lr": stats["lr"],
    }


def policy_update_metrics(stats: PolicyStats) -> dict[str, float | None]:
    """The policy's update as train/* metrics: `update_metrics`, whether it stopped early, its steps."""
    return update_metrics(stats, "train") | {
        "train/early_stopped": float(stats["early_stopped"]),
        "train/updates": float(stats["updates"]),
    }


class RLAlgorithm:
    """What `RLRun` needs from PPO or GRPO (subclassed in `components.train.ppo` and `.grpo`)."""

    name = "rl"
    trainable_roles: tuple[str, ...] = ("policy",)

    def __init__(self, config: RLConfig) -> None:
        self.config = config

    def keep_record(self, record: Mapping[str, Any]) -> str | None:
        """None to train on a prompt record, or the reason it is left out."""
        return None

    def check_inputs(self, paths: RLPaths, context_length: int) -> None:
        """Refuse inputs that cannot work, before any actor starts."""

    def role_specs(self, paths: RLPaths) -> dict[str, RoleSpec]:
        raise NotImplementedError

    def iteration(self, roles: RoleGroup, prompts: PromptSet, batch: list[int], step: int) -> IterationResult:
        raise NotImplementedError

    def reset(self) -> None:
        """Back to the state before the first iteration (a fresh KL controller)."""

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's state for a checkpoint (JSON)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, float]:
        """Extra headline measurements of the algorithm (e.g. PPO's adapted KL coefficient); never a
        setting, which MLflow already has as a param."""
        return {}


def phase_timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


__all__ = ["IterationResult", "RLAlgorithm", "RLPaths", "phase_timer"]
