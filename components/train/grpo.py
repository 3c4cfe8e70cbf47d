"""GRPO / RLOO: the SFT policy trained on verifiable rewards, with advantages from groups of samples.

No critic. Each iteration samples ``group_size`` replies to each of ``rollout_batch_size`` prompts and
scores them with a reward function -- by default the tiny world's verifiers (1 for a correct answer,
0 otherwise), or any function registered with `rl.rewards.register_reward` or named as
``"package.module:function"``. Each reply's advantage comes from its own group (`rl.formulas`):

- ``grpo``:    (r - mean_group) / (std_group + eps)          (DeepSeekMath)
- ``dr_grpo``:  r - mean_group                                (Dr. GRPO: no std scaling, no length bias)
- ``rloo``:     r - mean of the other k - 1 rewards           (RLOO: leave-one-out baseline)

spread over the reply's tokens, then the clipped policy loss (`PolicyActor.train`) with, optionally, the
k3 KL to the frozen reference as a loss term (``kl_coef``; 0 = off, as Dr. GRPO and many RLVR recipes).
The reference is scored every iteration anyway: the KL to it is one of the health metrics. A reward
model, if given, is only watched (its score beside the gold score), never optimised.

A group whose replies all scored the same has advantage 0 everywhere: it teaches nothing
(``rollout/zero_signal_groups`` counts them; too many means the prompts are too easy or too hard).
The knobs are `rl.config.GRPOConfig`; the loop, monitoring and checkpoints are `rl.driver.RLRun`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.eval.chat_eval import is_verifiable
from components.eval.verifiers import verifier_names
from components.train.grpo_config import SPEC
from components.train.rl.algorithm import (
    IterationResult,
    RLAlgorithm,
    RLPaths,
    phase_timer,
    policy_update_metrics,
)
from components.train.rl.batch import Experience, PolicyStats, Rollout, apply_missing_eos_penalty
from components.train.rl.config import Advantage, GRPOConfig
from components.train.rl.driver import RLRun
from components.train.rl.formulas import broadcast_to_tokens, group_advantages, rloo_advantages
from components.train.rl.monitor import rollout_metrics
from components.train.rl.placement import RoleGroup, RoleSpec
from components.train.rl.prompts import PromptSet
from components.train.rl.rewards import RewardScorer
from components.train.rl.roles import PolicyActor, Reference

VERIFIER_REWARDS = ("verifier", "verifier_and_format")


def grpo_advantages(rewards: Tensor, group_size: int, kind: Advantage, eps: float = 1e-6) -> Tensor:
    """(N,) per-reply advantages from (N,) rewards, each prompt's group_size replies adjacent."""
    if kind == "rloo":
        return rloo_advantages(rewards, group_size)
    return group_advantages(rewards, group_size, scale=kind == "grpo", eps=eps)


def grpo_experience(
    rollout: Rollout,
    rewards: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    *,
    group_size: int,
    kind: Advantage,
    eps: float = 1e-6,
) -> tuple[Experience, Tensor]:
    """The experience of a scored rollout of groups, and the per-reply advantages: the advantage of a
    reply on each of its tokens, 0 on padding (prompt positions are not in the (B, N) tensors)."""
    mask = rollout.response_mask.bool()
    advantages = grpo_advantages(rewards, group_size, kind, eps)
    experience = Experience(
        rollout=rollout,
        mask=mask,
        advantages=broadcast_to_tokens(advantages, mask),
        old_logp=old_logp,
        ref_logp=ref_logp,
    )
    return experience, advantages


class GRPO(RLAlgorithm):
    name = "grpo"
    trainable_roles = ("policy",)
    config: GRPOConfig

    def __init__(self, config: GRPOConfig) -> None:
        super().__init__(config)

    def keep_record(self, record: Mapping[str, Any]) -> str | None:
        if self.config.reward not in VERIFIER_REWARDS:
            return None
        if not is_verifiable(record):
            return "not_verifiable"
        if record["task"] not in verifier_names():
            return f"no_verifier_{record['task']}"
        return None

    def role_specs(self, paths: RLPaths) -> dict[str, RoleSpec]:
        cfg = self.config
        return {
            "policy": RoleSpec(
                PolicyActor,
                (cfg, paths.policy, paths.tokenizer),
                {"eval_reward_model_dir": paths.reward_model},
            ),
            "reference": RoleSpec(Reference, (cfg, paths.policy)),
            "reward": RoleSpec(
                RewardScorer,
                (cfg, paths.tokenizer),
                {"reward": cfg.reward, "reward_model_dir": paths.reward_model},
            ),
        }

    def iteration(self, roles: RoleGroup, prompts: PromptSet, batch: list[int], step: int) -> IterationResult:
        cfg = self.config
        G = cfg.group_size
        # Each prompt's group_size rows adjacent: the layout group_advantages expects.
        rows = [i for i in batch for _ in range(G)]
        records = [prompts.records[i] for i in rows]

        elapsed = phase_timer()
        rollout: Rollout = roles.get(roles.call("policy", "generate", [prompts.ids[i] for i in rows]))
        generation_s = elapsed()

        elapsed = phase_timer()
        (old_logp, entropy), ref_logp, scores = roles.get(
            [
                roles.call("policy", "logprobs", rollout),
                roles.call("reference", "logprobs", rollout),
                roles.call("reward", "score", rollout, records),
            ]
        )
        rewards = apply_missing_eos_penalty(scores.reward, rollout.finished, cfg.missing_eos_penalty)
        experience, advantages = grpo_experience(
            rollout, rewards, old_logp, ref_logp, group_size=G, kind=cfg.advantage, eps=cfg.advantage_eps
        )
        scoring_s = elapsed()

        elapsed = phase_timer()
        stats: PolicyStats = roles.get(roles.call("policy", "train", experience, step - 1))
        training_s = elapsed()

        grouped = rewards.view(-1, G)
        metrics = rollout_metrics(
            rollout.response_mask, rollout.finished, scores, old_logp, ref_logp, entropy
        )
        metrics |= {
            "rollout/zero_signal_groups": float(
                (grouped.max(dim=1).values == grouped.min(dim=1).values).float().mean()
            ),
            "rollout/reward_std_in_group": float(grouped.std(dim=1).mean()),
            "rollout/advantage_abs_mean": float(advantages.abs().mean()),
            **policy_update_metrics(stats),
        }
        return IterationResult.of(
            rollout,
            metrics,
            records,
            scores,
            generation_s=generation_s,
            scoring_s=scoring_s,
            training_s=training_s,
        )


@stage(SPEC)
def grpo(ctx: StageContext, config: GRPOConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """GRPO / RLOO of the SFT policy on verifiable rewards (policy, reference, scorer as Ray actors)."""
    if config.seed is None:
        config = config.model_copy(update={"seed": ctx.seed})
    return RLRun(ctx, config, inputs, GRPO(config)).run()


__all__ = ["GRPO", "GRPOConfig", "grpo", "grpo_advantages", "grpo_experience"]  # GRPOConfig: rl.config
