"""PPO: the SFT policy trained against the reward model, held near the SFT model by a KL penalty.

Four roles (`rl.roles`, `rl.rewards`): the policy (actor), the critic, the frozen reference and the frozen
reward model. Each iteration (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences";
InstructGPT, Ouyang et al. 2022; the formulas are `rl.formulas`'s):

1. generation: one sampled reply per prompt (batched, KV cache);
2. scoring, no gradients, once per batch: the RM's score of each reply (a z-score with the RM's
   ``reward_stats``; optionally plus ``sft_likelihood_coef`` times the reply's mean log-prob under the
   reference), the policy's "old" log-probs and entropies, the reference's log-probs, the critic's
   values;
3. experience: the per-token reward -beta * k1 on every reply token plus the (clipped) score on its last
   token; GAE advantages and returns; advantages whitened over the batch's reply tokens (`ppo_experience`);
4. training: ``ppo_epochs`` passes over shuffled mini-batches -- the clipped policy loss with an entropy
   bonus and gradient clipping, early-stopped past 1.5 x ``target_kl``; the clipped value loss for the
   critic (in parallel when the roles are separate actors);
5. the KL coefficient: fixed, or adapted towards ``kl_target`` (Ziegler et al.) from the rollout's KL.

Health metrics, alarms, sample tables, evaluation before/after and checkpoints are the driver's
(`rl.driver.RLRun`, `rl.monitor`); the knobs are `rl.config.PPOConfig`. The output is the trained policy
as a model directory.

Defaults: TRL's PPO where the knob has a published default (beta 0.05, clip 0.2, value clip 0.2,
gamma 1, lambda 0.95, whitened advantages), sized for the `tiny` demo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.train.ppo_config import SPEC
from components.train.rl.algorithm import (
    IterationResult,
    RLAlgorithm,
    RLPaths,
    phase_timer,
    policy_update_metrics,
    update_metrics,
)
from components.train.rl.batch import CriticStats, Experience, PolicyStats, Rollout, apply_missing_eos_penalty
from components.train.rl.config import PPOConfig
from components.train.rl.driver import RLRun
from components.train.rl.formulas import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    kl_estimates,
    masked_mean,
    masked_whiten,
    sft_likelihood_bonus,
    shaped_rewards,
)
from components.train.rl.monitor import rollout_metrics
from components.train.rl.placement import RoleGroup, RoleSpec
from components.train.rl.prompts import PromptSet
from components.train.rl.rewards import RewardScorer
from components.train.rl.roles import Critic, PolicyActor, Reference


def ppo_experience(
    rollout: Rollout,
    old_logp: Tensor,
    ref_logp: Tensor,
    values: Tensor,
    score: Tensor,
    *,
    beta: float,
    gamma: float,
    lam: float,
    reward_clip: float | None,
    whiten: bool,
) -> tuple[Experience, Tensor]:
    """The PPO experience of a scored rollout, and the per-token rewards it came from.

    The mask is the rollout's response mask: prompt positions are not in the (B, N) tensors at all and
    padding after a reply's stop token is masked, so neither gets a reward, an advantage or a gradient.
    Per token: r = -beta * k1 (+ clip(score) on the reply's last token); GAE over r and the critic's
    values; advantages whitened over all reply tokens of the batch."""
    mask = rollout.response_mask.bool()
    k1 = kl_estimates(old_logp, ref_logp).k1
    rewards = shaped_rewards(score, k1, mask, beta, clip=reward_clip)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, mask)
    experience = Experience(
        rollout=rollout,
        mask=mask,
        advantages=advantages,
        old_logp=old_logp,
        ref_logp=ref_logp,
        old_values=values,
        returns=returns,
    )
    return experience, rewards


def _defined(x: Tensor) -> float | None:
    """A 0-dim statistic as a float, None where it is undefined (NaN: nothing to measure it on)."""
    value = float(x)
    return None if math.isnan(value) else value


class PPO(RLAlgorithm):
    name = "ppo"
    trainable_roles = ("policy", "critic")
    config: PPOConfig
    kl: FixedKLController | AdaptiveKLController

    def __init__(self, config: PPOConfig) -> None:
        super().__init__(config)
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        if cfg.kl_target is None:
            self.kl = FixedKLController(cfg.init_kl_coef)
        else:
            self.kl = AdaptiveKLController(cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon)

    def state_dict(self) -> dict[str, Any]:
        return {"kl_controller": self.kl.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reset()
        self.kl.load_state_dict(state["kl_controller"])

    def summary(self) -> dict[str, float]:
        # A fixed beta is the setting init_kl_coef (a param already); only an adapted one is a result.
        return {"kl_coef_final": self.kl.value} if self.config.adaptive_kl else {}

    def role_specs(self, paths: RLPaths) -> dict[str, RoleSpec]:
        cfg = self.config
        critic_init = paths.critic_init or (
            paths.reward_model if cfg.critic_init == "reward_model" else paths.policy
        )
        return {
            "policy": RoleSpec(
                PolicyActor,
                (cfg, paths.policy, paths.tokenizer),
                {"eval_reward_model_dir": paths.reward_model},
            ),
            "critic": RoleSpec(Critic, (cfg, critic_init)),
            "reference": RoleSpec(Reference, (cfg, paths.policy)),
            "reward": RoleSpec(
                RewardScorer,
                (cfg, paths.tokenizer),
                {"reward": "reward_model", "reward_model_dir": paths.reward_model},
            ),
        }

    def iteration(self, roles: RoleGroup, prompts: PromptSet, batch: list[int], step: int) -> IterationResult:
        cfg = self.config
        records = [prompts.records[i] for i in batch]

        elapsed = phase_timer()
        rollout: Rollout = roles.get(roles.call("policy", "generate", [prompts.ids[i] for i in batch]))
        generation_s = elapsed()

        elapsed = phase_timer()
        (old_logp, entropy), ref_logp, values, scores = roles.get(
            [
                roles.call("policy", "logprobs", rollout),
                roles.call("reference", "logprobs", rollout),
                roles.call("critic", "values", rollout),
                roles.call("reward", "score", rollout, records),
            ]
        )
        beta = self.kl.value
        score = sft_likelihood_bonus(scores.reward, ref_logp, rollout.response_mask, cfg.sft_likelihood_coef)
        score = apply_missing_eos_penalty(score, rollout.finished, cfg.missing_eos_penalty)
        experience, rewards = ppo_experience(
            rollout,
            old_logp,
            ref_logp,
            values,
            score,
            beta=beta,
            gamma=cfg.gamma,
            lam=cfg.lam,
            reward_clip=cfg.reward_clip,
            whiten=cfg.whiten_advantages,
        )
        scoring_s = elapsed()

        elapsed = phase_timer()
        policy_stats: PolicyStats
        critic_stats: CriticStats
        policy_stats, critic_stats = roles.get(
            [
                roles.call("policy", "train", experience, step - 1),
                roles.call("critic", "train", experience, step - 1),
            ]
        )
        training_s = elapsed()

        mask, returns = experience.mask, experience.returns
        assert returns is not None  # ppo_experience always sets them
        metrics = rollout_metrics(
            rollout.response_mask, rollout.finished, scores, old_logp, ref_logp, entropy
        )
        self.kl.update(metrics["rollout/kl_k1"], n_steps=rollout.size)
        zero = torch.zeros(())
        metrics |= {
            "rollout/shaped_reward_sum": float(torch.where(mask, rewards, zero).sum(dim=1).mean()),
            "rollout/value_mean": float(masked_mean(values, mask)),
            # None when the returns do not vary: there is no variance to explain.
            "train/explained_variance": _defined(explained_variance(values, returns, mask)),
            **policy_update_metrics(policy_stats),
            **update_metrics(critic_stats, "critic"),
            # beta is a measurement only while it adapts; a fixed one is the param init_kl_coef.
            "kl/beta": beta if cfg.adaptive_kl else None,
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
def ppo(ctx: StageContext, config: PPOConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """PPO of the SFT policy against the reward model (policy, critic, reference, RM as Ray actors)."""
    if config.seed is None:
        config = config.model_copy(update={"seed": ctx.seed})
    return RLRun(ctx, config, inputs, PPO(config)).run()


__all__ = ["PPO", "PPOConfig", "ppo", "ppo_experience"]  # PPOConfig lives in rl.config
