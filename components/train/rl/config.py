"""Every knob of the RL stages, in one place: where the roles run, rollouts, the policy update,
evaluation, health alarms, checkpoints (`RLConfig`, shared), and what PPO and GRPO add (`PPOConfig`,
`GRPOConfig`). The roles take these models as they are, so a knob reaches the code that reads it
without being copied; the algorithms that read them are in `components.train.ppo` and `.grpo`.

Only settings live here. Nothing in this module is logged as a metric: settings reach MLflow as
params (the stage logs its whole config as params before it runs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.core.config import StageConfig, StrictModel
from components.train.trainer_config import DTYPE_HELP, DTypeSetting

# --------------------------------------------------------------------------------------------------------
# Where the roles run (the classes are in `placement`)
# --------------------------------------------------------------------------------------------------------

Placement = Literal["colocate", "separate", "inline"]


class RoleResources(StrictModel):
    """What one role's Ray actor reserves (``separate``) or the one actor of all roles (``colocate``)."""

    num_cpus: float = Field(1.0, ge=0, description="CPU cores reserved; torch uses this many threads.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved; > 0 puts the role's models on a GPU.")


class RoleSettings(StrictModel):
    """Where the RL roles run and with what. See the module docstring of `components.train.rl.placement`."""

    placement: Placement = Field(
        "colocate",
        description="colocate: all roles in one actor (small models, one device); separate: one actor "
        "per role with the resources below (large models, a cluster); inline: in the stage's own "
        "process without Ray (tests, debugging).",
    )
    colocated: RoleResources = Field(
        default_factory=RoleResources, description="Resources of the one actor under colocate."
    )
    policy: RoleResources = Field(default_factory=RoleResources, description="Policy actor (separate).")
    critic: RoleResources = Field(default_factory=RoleResources, description="Critic actor (separate).")
    reference: RoleResources = Field(default_factory=RoleResources, description="Reference actor (separate).")
    reward: RoleResources = Field(default_factory=RoleResources, description="Reward scorer (separate).")
    dtype: DTypeSetting = Field("auto", description=DTYPE_HELP)
    torch_threads: int | None = Field(
        None, ge=1, description="Torch threads per role process; None = the CPUs it reserves."
    )

    def resources(self, role: str) -> RoleResources:
        return self.colocated if self.placement == "colocate" else getattr(self, role)

    def threads(self, role: str) -> int:
        return self.torch_threads or max(1, int(self.resources(role).num_cpus))


# --------------------------------------------------------------------------------------------------------
# Health alarms and samples (read by `monitor`)
# --------------------------------------------------------------------------------------------------------


class MonitorConfig(StrictModel):
    """Alarm thresholds, their smoothing, and the sample tables."""

    alarms: bool = Field(True, description="Check the alarms (the metrics are logged either way).")
    window: int = Field(
        8, ge=1, description="Alarms compare moving averages over this many iterations (noise control)."
    )
    baseline_iterations: int = Field(
        3, ge=1, description="The first iterations' mean entropy and length are the baselines."
    )
    kl_budget: float = Field(
        8.0,
        gt=0,
        description="kl_blowup: the mean KL to the reference (k1, nats per reply) above this budget.",
    )
    entropy_collapse_fraction: float = Field(
        0.3, gt=0, lt=1, description="entropy_collapse: entropy below this fraction of its baseline."
    )
    length_spike_factor: float = Field(
        2.0, gt=1, description="length_spike: mean reply length above this multiple of its baseline."
    )
    hacking_rm_rise: float = Field(
        0.5,
        gt=0,
        description="reward_hacking: the RM score (in RM standard deviations) rose at least this much since "
        "the gold score's best moving average ...",
    )
    hacking_gold_drop: float = Field(
        0.1, gt=0, description="... while the gold score fell at least this much (absolute) from that best."
    )
    sample_every: int = Field(
        10, ge=0, description="Log a sample table every N iterations; 0 = only the last."
    )
    samples_per_table: int = Field(16, ge=1, description="Rows of each sample table.")


# --------------------------------------------------------------------------------------------------------
# Fields PPO and GRPO share
# --------------------------------------------------------------------------------------------------------


class RLConfig(StageConfig):
    """Rollouts, the policy update, evaluation, monitoring, checkpoints and placement (PPO and GRPO).

    Defaults are the `tiny` demo: a few million parameters on one CPU core per stage, about a minute."""

    # -- length of training and rollouts --
    iterations: int = Field(16, ge=1, description="Rollout + update cycles (one 'step' in the metrics).")
    rollout_batch_size: int = Field(32, ge=1, description="Prompts per iteration.")
    max_prompt_tokens: int = Field(
        128, ge=1, description="Longer rendered prompts are dropped (counted) when the data is loaded."
    )
    max_new_tokens: int = Field(48, ge=1, description="Longest reply sampled; longer replies are cut off.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature; log-probs are taken at the same temperature."
    )
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely tokens; None = all.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling; None = off.")
    generation_batch_size: int = Field(64, ge=1, description="Rows generated together (KV-cache batch).")
    tools: bool = Field(
        True,
        description="Run the tool when a reply closes a tool call, in rollouts and in evaluation (if the "
        "tokenizer has the tool tokens); its result tokens are context, never trained on.",
    )
    missing_eos_penalty: float | None = Field(
        None,
        ge=0,
        description="Subtracted from the reward of a reply that never closes its turn within "
        "max_new_tokens (TRL's missing_eos_penalty); None = no penalty.",
    )

    # -- the policy update --
    lr: float = Field(1e-5, gt=0, description="Peak learning rate of the policy.")
    warmup_iterations: int = Field(0, ge=0, description="Linear learning-rate warm-up, in iterations.")
    min_lr_ratio: float = Field(
        1.0, ge=0, le=1, description="Cosine decay to this fraction of lr at the end; 1 = constant."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (matrices and embeddings).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 = off.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout (OpenRLHF 1, TRL 4).")
    mini_batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    micro_batch_size: int = Field(16, ge=1, description="Sequences per forward/backward (memory bound).")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="Policy ratio clip range (1 +- eps).")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight in the policy loss.")
    target_kl: float | None = Field(
        None,
        gt=0,
        description="Early stop: skip the rest of an iteration's updates once a mini-batch's approximate KL "
        "to the rollout policy exceeds 1.5 x target_kl; None = never.",
    )
    normalize_reward: bool = Field(
        True,
        description="Divide RM scores into z-scores with the reward model's reward_stats (its train "
        "pairs' mean and std), so reward scales and thresholds mean the same for any RM.",
    )

    # -- evaluation --
    eval_limit: int | None = Field(None, ge=1, description="Held-out prompts evaluated; None = all.")
    eval_max_new_tokens: int = Field(64, ge=1, description="Longest reply in evaluation (greedy).")
    eval_batch_size: int = Field(64, ge=1, description="Prompts generated together in evaluation.")
    eval_every: int = Field(
        0, ge=0, description="Also evaluate every N iterations (eval/* curves); 0 = before and after only."
    )

    # -- monitoring, checkpoints, failures, placement --
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="Health alarms, samples.")
    checkpoint_every: int = Field(8, ge=1, description="Checkpoint every N iterations (and at the last).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the newest).")
    max_failures: int = Field(
        2, ge=0, description="Restarts of the roles (from the latest checkpoint) after a role process dies."
    )
    roles: RoleSettings = Field(default_factory=RoleSettings, description="Where the roles run, on what.")
    seed: int | None = Field(None, description="Seed of sampling and mini-batch order; None = pipeline seed.")

    @model_validator(mode="after")
    def _check_batches(self) -> RLConfig:
        if self.micro_batch_size > self.mini_batch_size:
            raise ValueError(
                f"micro_batch_size {self.micro_batch_size} > mini_batch_size {self.mini_batch_size}: a "
                "mini-batch is accumulated from micro-batches"
            )
        return self

    @property
    def seed_value(self) -> int:
        return self.seed or 0

    @property
    def loss_kl_coef(self) -> float:
        """Weight of a k3 KL-to-reference term in the policy loss (GRPO's; PPO puts the KL in the reward)."""
        return 0.0

    @property
    def rows_per_iteration(self) -> int:
        return self.rollout_batch_size


# --------------------------------------------------------------------------------------------------------
# PPO
# --------------------------------------------------------------------------------------------------------


class PPOConfig(RLConfig):
    """PPO against a learned reward model (`components.train.ppo`); shared fields in `RLConfig`."""

    # -- the KL penalty --
    init_kl_coef: float = Field(
        0.05, ge=0, description="beta, the weight of the per-token KL penalty (TRL 0.05, OpenRLHF 0.01)."
    )
    kl_target: float | None = Field(
        None,
        gt=0,
        description="Adaptive KL (Ziegler et al.): steer beta so the KL to the reference (k1, nats per "
        "reply) stays near this; None = fixed beta.",
    )
    kl_horizon: float = Field(
        10_000, gt=0, description="Adaptive KL: beta changes by at most 20% per this many replies."
    )

    # -- rewards and advantages --
    reward_clip: float | None = Field(
        10.0, gt=0, description="Clip the RM score to +-this before shaping (OpenRLHF 10); None = off."
    )
    sft_likelihood_coef: float = Field(
        0.0,
        ge=0,
        description="Add this times the reply's mean log-probability per token under the reference (the "
        "SFT model) to the RM's score (see `rl.formulas.sft_likelihood_bonus`); 0 = the RM alone "
        "(InstructGPT). tests/bench/likelihood_reward.py measures what a value does to pair accuracy.",
    )
    gamma: float = Field(1.0, ge=0, le=1, description="Discount over reply tokens.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    whiten_advantages: bool = Field(True, description="Normalise advantages over the batch's reply tokens.")

    # -- the critic --
    critic_init: Literal["reward_model", "policy"] = Field(
        "reward_model",
        description="Initialise the critic from the reward model (OpenRLHF, TRL) or from the SFT policy "
        "with a zero value head. An optional `critic_init` input (a model directory) overrides both.",
    )
    critic_lr: float = Field(5e-5, gt=0, description="Peak learning rate of the critic.")
    value_clip: float | None = Field(
        0.2, gt=0, description="Clip range of the value loss around the rollout's values; None = off."
    )

    @model_validator(mode="after")
    def _check_kl(self) -> PPOConfig:
        if self.kl_target is not None and self.init_kl_coef <= 0:
            raise ValueError("an adaptive KL coefficient (kl_target) needs init_kl_coef > 0 to adapt from")
        return self

    @property
    def adaptive_kl(self) -> bool:
        """Whether beta moves during the run (then it is a measurement; otherwise it is init_kl_coef)."""
        return self.kl_target is not None


# --------------------------------------------------------------------------------------------------------
# GRPO
# --------------------------------------------------------------------------------------------------------

Advantage = Literal["grpo", "dr_grpo", "rloo"]


class GRPOConfig(RLConfig):
    """GRPO / Dr. GRPO / RLOO (`components.train.grpo`); shared fields in `RLConfig`.

    ``rollout_batch_size`` counts prompts: an iteration has rollout_batch_size x group_size replies."""

    rollout_batch_size: int = Field(
        8, ge=1, description="Prompts per iteration (each sampled group_size times)."
    )
    group_size: int = Field(8, ge=2, description="Replies sampled per prompt: the group of the baseline.")
    advantage: Advantage = Field("grpo", description="grpo | dr_grpo | rloo (see components.train.grpo).")
    advantage_eps: float = Field(1e-6, gt=0, description="grpo: added to the group's std (0 / 0 guard).")
    kl_coef: float = Field(
        0.0, ge=0, description="Weight of the k3 KL-to-reference loss term (DeepSeekMath 0.04); 0 = off."
    )
    reward: str = Field(
        "verifier",
        description="Reward function: 'verifier' (the task's verifier, 1/0), 'verifier_and_format' (minus "
        "0.5 for a reply that does not close its turn), 'reward_model' (the RM input's z-score), another "
        "registered name, or 'package.module:function'.",
    )

    @property
    def loss_kl_coef(self) -> float:
        return self.kl_coef

    @property
    def rows_per_iteration(self) -> int:
        return self.rollout_batch_size * self.group_size


__all__ = [
    "Advantage",
    "GRPOConfig",
    "MonitorConfig",
    "PPOConfig",
    "Placement",
    "RLConfig",
    "RoleResources",
    "RoleSettings",
]
