"""RL prompts: the records rendered for generation, and the seeded, resumable stream over them."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer

from components.tokenizer.chat import render

# A prompt record as the conversations stage writes it (JSON: prompt messages, answer, task, extras).
PromptRecord = dict[str, Any]


@dataclass
class PromptSet:
    """RL prompt records and their rendered ids (``<|im_start|>assistant<|im_sep|>`` appended)."""

    records: list[PromptRecord]
    ids: list[list[int]]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> records left out

    def __len__(self) -> int:
        return len(self.records)


def encode_prompts(
    tok: Tokenizer,
    records: Sequence[PromptRecord],
    *,
    max_prompt_tokens: int,
    keep: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> PromptSet:
    """Render each record's prompt for generation; leave out (and count) records whose prompt is longer
    than `max_prompt_tokens` and those `keep` rejects (it returns the reason, or None to keep)."""
    kept, ids, dropped = [], [], {}
    for record in records:
        reason = keep(record) if keep else None
        if reason is None:
            rendered = render(tok, record["prompt"], add_generation_prompt=True).ids
            if len(rendered) > max_prompt_tokens:
                reason = "too_long"
            else:
                kept.append(record)
                ids.append(rendered)
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
    return PromptSet(kept, ids, dropped)


class PromptStream:
    """An endless, seeded walk over ``n`` prompts: each epoch a fresh permutation, seeded by (seed, epoch).

    Its position (epoch, index) is all a checkpoint needs: the order is recomputed from the seed."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("no prompts to train on")
        self.n, self.seed = n, seed
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.index == self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            step = min(k - len(out), self.n - self.index)
            out += self._order[self.index : self.index + step]
            self.index += step
        return out

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.index / self.n

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if (state["n"], state["seed"]) != (self.n, self.seed):
            raise ValueError(
                f"checkpoint's prompt stream has n={state['n']}, seed={state['seed']}; this run has "
                f"n={self.n}, seed={self.seed}: the prompts changed under the same cache key"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)


__all__ = ["PromptRecord", "PromptSet", "PromptStream", "encode_prompts"]
