"""Rewards: the functions that score a reply, and the scorer role that applies them to a rollout.

A reward function is ``fn(prompt record, reply) -> float``. Two come with the project -- the tiny
world's verifiers (``verifier``) and the same with a format penalty (``verifier_and_format``) -- and a
user adds one with `register_reward` or names it as ``"package.module:function"`` in the config.

`RewardScorer` is the fourth role: it reads each reply (`assistant_reply`), scores it with the frozen
reward model and/or a reward function, and always reports the gold (verifier) score beside the RM score,
so reward hacking shows.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from components.core.registry import registering
from components.eval.chat_eval import is_verifiable, verifier_info
from components.eval.verifiers import verify
from components.model.heads import ScalarHeadModel, load_scalar_model_dir
from components.tokenizer.bpe import load_tokenizer
from components.tokenizer.chat import AssistantReply, assistant_reply
from components.train.rl.batch import Rollout, Scores
from components.train.rl.config import RLConfig
from components.train.rl.roles import Role, micro_batches

RewardFunction = Callable[[Mapping[str, Any], AssistantReply], float]
"""reward(prompt record, reply) -> float. The record is the RL prompt record (`prompt`, `answer`, `task`
and any extra fields); the reply is `assistant_reply`'s reading (`text`, `ended`, `leaked_role`)."""

_REWARDS: dict[str, RewardFunction] = {}


def register_reward(name: str, *, overwrite: bool = False) -> Callable[[RewardFunction], RewardFunction]:
    """Decorator: make `fn(record, reply) -> float` available as ``grpo.reward: <name>``.

    The scorer runs in its own process: register in a module that it imports, i.e. name the reward
    ``"package.module:function"`` in the config (importing the module runs its decorators), or use
    ``"package.module:function"`` directly without registering."""
    return registering(_REWARDS, name, "reward function", overwrite=overwrite)


@register_reward("verifier")
def verifier_reward(record: Mapping[str, Any], reply: AssistantReply) -> float:
    """1.0 when the task's verifier accepts the reply's text, else 0.0 (RLVR's exact reward)."""
    return verify(record["task"], reply.text, record["answer"], **verifier_info(record))


@register_reward("verifier_and_format")
def verifier_and_format_reward(record: Mapping[str, Any], reply: AssistantReply) -> float:
    """The verifier's score, minus 0.5 when the reply does not close its turn or writes another role's
    turn: correctness first, well-formed turns second."""
    penalty = 0.0 if reply.ended and not reply.leaked_role else 0.5
    return verifier_reward(record, reply) - penalty


def resolve_reward(name: str) -> RewardFunction:
    """A registered name, or ``"package.module:function"`` (imported here, in the scorer's process)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward function {name!r}: cannot import it ({e})") from None
        if not callable(fn):
            raise ValueError(f"reward function {name!r} is not callable")
        return fn
    try:
        return _REWARDS[name]
    except KeyError:
        known = ", ".join(sorted(_REWARDS))
        raise ValueError(
            f"no reward function named {name!r} (registered: {known}; or module:function)"
        ) from None


def rm_z_score(scores: Tensor, reward_stats: Mapping[str, float]) -> Tensor:
    """Reward-model scores in standard deviations of the RM over its training pairs (its `reward_stats`)."""
    return (scores - float(reward_stats["mean"])) / max(float(reward_stats["std"]), 1e-6)


class RewardScorer(Role):
    """Scores a rollout: the reward the update optimises, the RM score and the gold score beside it.

    ``reward="reward_model"`` (PPO): the RM's score, normalised with the RM's ``reward_stats`` when
    ``normalize_reward`` (so one unit is one standard deviation of the RM over its training pairs).
    Otherwise (GRPO) the named reward function; an RM, if given, is still scored for monitoring.
    The gold score is the task's verifier on every verifiable record (NaN elsewhere)."""

    role = "reward"

    def __init__(
        self,
        config: RLConfig,
        tokenizer_file: str,
        *,
        reward: str,
        reward_model_dir: str | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(config, threads)
        self.tokenizer = load_tokenizer(tokenizer_file)
        self.reward_name = reward
        self.reward_fn = None if reward == "reward_model" else resolve_reward(reward)
        self.reward_model: ScalarHeadModel | None = None
        self.reward_stats: Mapping[str, float] | None = None
        if reward_model_dir is not None:
            self.reward_model, rm_config = load_scalar_model_dir(reward_model_dir, device=self.runtime.device)
            self.reward_model.requires_grad_(False)
            self.reward_stats = rm_config.get("reward_stats")
        if reward == "reward_model" and self.reward_model is None:
            raise ValueError("reward 'reward_model' needs a reward model directory")

    @torch.no_grad()
    def _rm_scores(self, reward_model: ScalarHeadModel, rollout: Rollout) -> Tensor:
        rollout = self._to_device(rollout)
        out = []
        for rows in micro_batches(rollout.size, self.config.micro_batch_size):
            part = rollout.select(rows)
            with self.runtime.autocast():
                out.append(reward_model.score(part.sequences, part.attention_mask).float())
        return torch.cat(out).cpu()

    def normalise(self, scores: Tensor) -> Tensor:
        if not self.config.normalize_reward or not self.reward_stats:
            return scores
        return rm_z_score(scores, self.reward_stats)

    def score(self, rollout: Rollout, records: list[Mapping[str, Any]]) -> Scores:
        if len(records) != rollout.size:
            raise ValueError(f"{len(records)} records for a rollout of {rollout.size} rows")
        replies = [assistant_reply(self.tokenizer, ids) for ids in rollout.response_lists()]
        gold = torch.tensor(
            [
                verifier_reward(r, reply) if is_verifiable(r) else math.nan
                for r, reply in zip(records, replies, strict=True)
            ],
            dtype=torch.float32,
        )
        rm = rm_z = None
        if self.reward_model is not None:
            rm = self._rm_scores(self.reward_model, rollout)
            rm_z = self.normalise(rm)
        if self.reward_fn is None:
            reward = rm_z
        else:
            reward = torch.tensor(
                [float(self.reward_fn(r, reply)) for r, reply in zip(records, replies, strict=True)],
                dtype=torch.float32,
            )
        return Scores(
            reward=reward,
            rm=rm,
            rm_normalized=rm_z,
            gold=gold,
            replies=[reply.text for reply in replies],
            ended=torch.tensor([reply.ended for reply in replies]),
            leaked_role=torch.tensor([reply.leaked_role for reply in replies]),
        )


__all__ = [
    "RewardFunction",
    "RewardScorer",
    "register_reward",
    "resolve_reward",
    "rm_z_score",
    "verifier_and_format_reward",
    "verifier_reward",
]
