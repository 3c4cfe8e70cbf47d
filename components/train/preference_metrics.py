"""How well a score ranks preference pairs: the figures the reward model and DPO both report.

A "score" is whatever ranks the two replies of a pair: the reward model's reward, DPO's implicit reward
beta * (log pi(y|x) - log pi_ref(y|x)), or a language model's log-likelihood. Accuracy counts a tie as
half a pair, so a score that says nothing (all equal) gets 0.5. Per-group accuracies use the pair's
`kind` (fact, arithmetic, ...) or its tier pair ("helpful_vs_wrong", the tiny world's ranked tiers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from components.train.chat_batches import PairExample


def pair_accuracy(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Fraction of pairs ranked right; a tie counts half (an untrained, constant model scores 0.5)."""
    return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean()


def pair_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, float | None]:
    """Accuracy, margin and reward statistics of scored pairs (float tensors of the same length); no
    pairs, no figures (None)."""
    rewards = torch.cat([chosen, rejected])
    if len(chosen) == 0:
        return dict.fromkeys(
            ("accuracy", "margin", "reward_mean", "reward_std", "chosen_mean", "rejected_mean")
        )
    return {
        "accuracy": float(pair_accuracy(chosen, rejected)),
        "margin": float((chosen - rejected).mean()),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),  # two or more rewards: a pair has two
        "chosen_mean": float(chosen.mean()),
        "rejected_mean": float(rejected.mean()),
    }


def grouped_accuracy(keys: Sequence[str], chosen: Tensor, rejected: Tensor, prefix: str) -> dict[str, float]:
    """`pair_accuracy` per key ("<prefix>.<key>"); pairs with an empty key are left out."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return {
        f"{prefix}.{key}": float(pair_accuracy(chosen[idx], rejected[idx]))
        for key, idx in sorted(groups.items())
        if key
    }


def tier_pair(pair: PairExample) -> str:
    """ "helpful_vs_wrong" for a pair with tiers (the tiny world's data), "" otherwise."""
    chosen, rejected = pair.info.get("chosen_tier"), pair.info.get("rejected_tier")
    return f"{chosen}_vs_{rejected}" if chosen and rejected else ""


def kind_and_tier_accuracy(
    pairs: Sequence[PairExample], chosen: Tensor, rejected: Tensor, prefix: str
) -> dict[str, float]:
    """Accuracy per kind ("<prefix>_kind.fact") and per tier pair ("<prefix>_tier.helpful_vs_wrong")."""
    return {
        **grouped_accuracy([p.kind for p in pairs], chosen, rejected, f"{prefix}_kind"),
        **grouped_accuracy([tier_pair(p) for p in pairs], chosen, rejected, f"{prefix}_tier"),
    }


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share: a pair's prompt and whatever opening its replies share.
    Those tokens score the same under any causal model in both sequences, so a comparison of the two
    replies' log-likelihoods may leave them out."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


__all__ = [
    "grouped_accuracy",
    "kind_and_tier_accuracy",
    "pair_accuracy",
    "pair_metrics",
    "shared_prefix_length",
    "tier_pair",
]
