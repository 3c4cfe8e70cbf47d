"""The data that crosses role boundaries: rollouts, their scores, the experience an update trains on,
and the statistics an update hands back.

A leaf of the RL package: it imports no other RL module, so every layer can use these types (the
roles return them, the driver and the algorithms pass them on). Tensors in these types live on the
CPU whenever they travel; a role moves them to its device and back (`components.train.rl.roles`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TypedDict

import torch
from torch import Tensor

from components.model.generate import Generation


def _pad_right(x: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _pad_left(x: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)


@dataclass
class Rollout:
    """Sampled replies in generation's layout: left-padded prompts (width P), then responses (width N)
    right-padded after each row's stop token. See `components.model.generate.Generation`.

    `response_mask` marks the policy's actions, the tokens it sampled: everything trained on (losses,
    advantages, KL) is masked with it. Tokens a tool injected are real context (`attention_mask` 1)
    but not actions (`response_mask` 0), so the policy is never trained to produce a tool's result."""

    sequences: Tensor  # (B, P + N) long
    attention_mask: Tensor  # (B, P + N) long: 1 on real prompt and response tokens (tool results too)
    prompt_length: int  # P
    response_mask: Tensor  # (B, N) long: 1 on sampled tokens up to and including the stop token
    finished: Tensor  # (B,) bool: the row produced its stop token

    @classmethod
    def from_generation(cls, out: Generation) -> Rollout:
        return cls(out.sequences, out.attention_mask, out.prompt_length, out.response_mask, out.finished)

    @property
    def size(self) -> int:
        return self.sequences.shape[0]

    @property
    def num_response_tokens(self) -> int:
        return self.response_mask.shape[1]

    @property
    def responses(self) -> Tensor:
        return self.sequences[:, self.prompt_length :]

    def response_lists(self) -> list[list[int]]:
        """Each row's whole reply: sampled tokens and tool results, without padding."""
        real = self.attention_mask[:, self.prompt_length :]
        return [row[m.bool()].tolist() for row, m in zip(self.responses, real, strict=True)]

    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def select(self, rows: slice | Tensor) -> Rollout:
        return Rollout(
            self.sequences[rows],
            self.attention_mask[rows],
            self.prompt_length,
            self.response_mask[rows],
            self.finished[rows],
        )

    def to(self, device: torch.device | str) -> Rollout:
        return Rollout(
            self.sequences.to(device),
            self.attention_mask.to(device),
            self.prompt_length,
            self.response_mask.to(device),
            self.finished.to(device),
        )

    @classmethod
    def concat(cls, parts: Sequence[Rollout], *, pad_token_id: int) -> Rollout:
        """Rows of several rollouts in one: prompts re-padded on the left to the widest P, responses on
        the right to the longest N, so the layout (and every row's real tokens) stays the same."""
        if len(parts) == 1:
            return parts[0]
        P = max(p.prompt_length for p in parts)
        N = max(p.num_response_tokens for p in parts)

        def widen(p: Rollout) -> tuple[Tensor, Tensor]:
            prompt = _pad_left(p.sequences[:, : p.prompt_length], P, pad_token_id)
            prompt_mask = _pad_left(p.attention_mask[:, : p.prompt_length], P, 0)
            response = _pad_right(p.responses, N, pad_token_id)
            real = _pad_right(p.attention_mask[:, p.prompt_length :], N, 0)
            return torch.cat([prompt, response], 1), torch.cat([prompt_mask, real], 1)

        widened = [widen(p) for p in parts]
        return cls(
            torch.cat([w[0] for w in widened]),
            torch.cat([w[1] for w in widened]),
            P,
            torch.cat([_pad_right(p.response_mask, N, 0) for p in parts]),
            torch.cat([p.finished for p in parts]),
        )


@dataclass
class Scores:
    """What the reward scorer says about each reply of a rollout (CPU tensors, (B,))."""

    reward: Tensor  # the reward the update optimises (before the KL penalty and EOS penalty)
    rm: Tensor | None  # raw reward-model score (None without an RM)
    rm_normalized: Tensor | None  # the same as a z-score with the RM's reward_stats
    gold: Tensor  # verifier score, NaN where the prompt has no verifiable answer
    replies: list[str]  # reply texts (for sample tables)
    ended: Tensor  # bool: closed with <|im_end|>
    leaked_role: Tensor  # bool: wrote another role's turn


@dataclass
class Experience:
    """A scored rollout ready for the update: per-token tensors over response positions (B, N)."""

    rollout: Rollout
    mask: Tensor  # bool, response tokens only: prompt and padding are never trained on
    advantages: Tensor
    old_logp: Tensor  # the sampling policy's log-probs (the ratio's denominator)
    ref_logp: Tensor | None = None  # the reference's (GRPO's KL loss term)
    old_values: Tensor | None = None  # the critic's values at rollout time (PPO)
    returns: Tensor | None = None  # GAE returns, the critic's targets (PPO)

    @property
    def size(self) -> int:
        return self.rollout.size

    def _map(self, fn: Callable[[Tensor], Tensor], rollout: Rollout) -> Experience:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if f.name != "rollout" and getattr(self, f.name) is not None
        }
        return replace(self, rollout=rollout, **changes)

    def select(self, rows: slice | Tensor) -> Experience:
        return self._map(lambda t: t[rows], self.rollout.select(rows))

    def to(self, device: torch.device | str) -> Experience:
        return self._map(lambda t: t.to(device), self.rollout.to(device))


def apply_missing_eos_penalty(reward: Tensor, finished: Tensor, penalty: float | None) -> Tensor:
    """reward - penalty for every reply that did not produce its stop token."""
    if not penalty:
        return reward
    return reward - penalty * (~finished.bool()).to(reward.dtype)


# --------------------------------------------------------------------------------------------------------
# What an update hands back
# --------------------------------------------------------------------------------------------------------

# One mini-batch's statistics (token-weighted over its micro-batches). A value is None where there was
# nothing to measure: the gradient norm of a mini-batch that early stopping kept from stepping.
MinibatchStats = dict[str, float | None]


class CriticStats(TypedDict):
    minibatches: list[MinibatchStats]
    mean: MinibatchStats  # per statistic, the mean over the mini-batches that measured it
    lr: float


class PolicyStats(CriticStats):
    early_stopped: bool  # a mini-batch passed 1.5 x target_kl: it and the rest took no step
    updates: int  # optimizer steps taken
    epochs: float  # epochs begun


__all__ = [
    "CriticStats",
    "Experience",
    "MinibatchStats",
    "PolicyStats",
    "Rollout",
    "Scores",
    "apply_missing_eos_penalty",
]
