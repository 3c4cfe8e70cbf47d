"""Multiple choice by log-likelihood, the way lm-evaluation-harness scores HellaSwag, ARC or MMLU.

Each choice is a continuation of the item's prompt; the model scores it by the summed log-probability of
the continuation's tokens given the prompt (one forward pass per choice, no sampling):

    score(choice) = sum_t log p(continuation_t | prompt, continuation_<t)

- ``acc``: the item is right when the true choice has the highest score.
- ``acc_norm``: the same after dividing each score by the length of its continuation in characters, so
  that a long choice is not penalised for having more tokens to pay for. The characters of the text that
  was scored count, the leading space included (as lm-evaluation-harness does); measured in characters
  rather than tokens, the normalisation does not depend on the tokenizer.

Prompt and continuation are encoded separately and concatenated, so the continuation's tokens are the same
whatever the prompt ends with (byte-level BPE keeps a leading space with the word that follows it, so
" Paris" is encoded as it would be in running text). Every sequence starts with ``prefix_ids`` -- the
end-of-text token for our models, because every pretraining document follows one. A sequence longer than
the model's context loses prompt tokens from the front; the continuation is always scored whole.

The tiny world's benchmark (``world.knowledge``'s ``benchmark.jsonl``) is asked as
``"Question: {question}\\nAnswer:"`` with continuations ``" {choice}"``: the same plain-text format for every
model, base or chat, so that the numbers compare. Its items that leaked into the crawl were removed by
decontamination, so it measures knowledge of the facts, not memorised quiz pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from components.model.gpt import evaluating
from components.tokenizer.bpe import encode_batch

BENCHMARK_PROMPT = "Question: {question}\nAnswer:"
BENCHMARK_CONTINUATION = " {choice}"


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One question: the prompt text, the continuations to score, and the index of the right one."""

    id: str
    prompt: str
    continuations: tuple[str, ...]
    answer_index: int
    group: str = ""  # what per-group accuracy is broken down by (the benchmark's relation)


@dataclass
class MultipleChoiceResult:
    """Accuracies over the items, and what the model thought of each item."""

    acc: float
    acc_norm: float
    items: int
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> {acc, acc_norm, items}
    details: list[dict[str, Any]] = field(default_factory=list)  # per item: id, scores, picks, correct

    def metrics(self) -> dict[str, float]:
        return {"acc": self.acc, "acc_norm": self.acc_norm, "items": float(self.items)}


def benchmark_items(records: Sequence[dict[str, Any]]) -> list[MultipleChoiceItem]:
    """Benchmark records ``{id, question, choices, answer_index}`` as multiple-choice items in the fixed
    ``Question: ...\\nAnswer:`` format. The group is the relation, the part of the id after its first
    dot ("country-03.capital" -> "capital")."""
    items = []
    for r in records:
        item_id = str(r["id"])
        items.append(
            MultipleChoiceItem(
                id=item_id,
                prompt=BENCHMARK_PROMPT.format(question=r["question"]),
                continuations=tuple(BENCHMARK_CONTINUATION.format(choice=c) for c in r["choices"]),
                answer_index=int(r["answer_index"]),
                group=item_id.split(".", 1)[1] if "." in item_id else "",
            )
        )
    return items


@torch.no_grad()
def continuation_logprobs(
    model: nn.Module,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    batch_size: int = 64,
    context_length: int | None = None,
    pad_token_id: int = 0,
) -> list[float]:
    """Summed log-prob (nats) of each continuation given its context, for any causal LM whose
    ``forward(idx)`` returns ``(logits (B, T, V), _)``.

    Rows are RIGHT-padded: with causal attention, padding after a sequence cannot change the logits of
    the tokens before it, so no attention mask is needed. Sequences are batched by length to waste
    little on padding. ``context_length`` (default: ``model.config.context_length``) caps a sequence;
    longer ones lose context tokens from the front."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if context_length is None:
        context_length = model.config.context_length
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    sequences, starts = [], []
    for ctx, cont in zip(contexts, continuations, strict=True):
        if not cont:
            raise ValueError("a continuation encodes to no tokens; nothing to score")
        if len(cont) >= context_length:
            raise ValueError(
                f"a continuation of {len(cont)} tokens does not fit the context_length {context_length} "
                "with at least one context token"
            )
        if not ctx:
            raise ValueError("a context encodes to no tokens; give prefix_ids (the end-of-text token)")
        seq = [*ctx, *cont][-context_length:]
        sequences.append(seq)
        starts.append(len(seq) - len(cont))  # index of the first continuation token

    with evaluating(model):
        out = [0.0] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            width = max(len(sequences[i]) for i in rows)
            idx = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            for r, i in enumerate(rows):
                idx[r, : len(sequences[i])] = torch.as_tensor(sequences[i])
            idx = idx.to(device)
            logits, _ = model(idx)
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for r, i in enumerate(rows):
                start, end = starts[i], len(sequences[i])
                # The logits at position t predict token t + 1.
                targets = idx[r, start:end]
                out[i] = float(logprobs[r, start - 1 : end - 1].gather(-1, targets[:, None]).sum())
    return out


def pick(scores: Sequence[float]) -> int:
    """Index of the highest score (the first of equal ones)."""
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


def score_items(
    model: nn.Module,
    tok: Tokenizer,
    items: Sequence[MultipleChoiceItem],
    *,
    prefix_ids: Sequence[int] = (),
    batch_size: int = 64,
) -> MultipleChoiceResult:
    """``acc`` and ``acc_norm`` of ``model`` on ``items`` (see the module docstring)."""
    if not items:
        raise ValueError("no multiple-choice items to score")
    for item in items:
        if not 0 <= item.answer_index < len(item.continuations):
            raise ValueError(
                f"item {item.id}: answer_index {item.answer_index} is not one of its "
                f"{len(item.continuations)} choices"
            )
    prompts = encode_batch(tok, [it.prompt for it in items], append_eot=False)
    flat = [c for it in items for c in it.continuations]
    conts = encode_batch(tok, flat, append_eot=False)
    contexts = [[*prefix_ids, *prompts[i]] for i, it in enumerate(items) for _ in it.continuations]
    logprobs = continuation_logprobs(model, contexts, conts, batch_size=batch_size)

    details, at = [], 0
    for item in items:
        n = len(item.continuations)
        scores = logprobs[at : at + n]
        at += n
        normed = [s / len(c) for s, c in zip(scores, item.continuations, strict=True)]
        chosen, chosen_norm = pick(scores), pick(normed)
        details.append(
            {
                "id": item.id,
                "group": item.group,
                "answer_index": item.answer_index,
                "logprobs": scores,
                "pick": chosen,
                "pick_norm": chosen_norm,
                "correct": chosen == item.answer_index,
                "correct_norm": chosen_norm == item.answer_index,
            }
        )
    by_group: dict[str, dict[str, float]] = {}
    for group in sorted({d["group"] for d in details}):
        rows = [d for d in details if d["group"] == group]
        by_group[group] = {
            "acc": sum(d["correct"] for d in rows) / len(rows),
            "acc_norm": sum(d["correct_norm"] for d in rows) / len(rows),
            "items": float(len(rows)),
        }
    return MultipleChoiceResult(
        acc=sum(d["correct"] for d in details) / len(details),
        acc_norm=sum(d["correct_norm"] for d in details) / len(details),
        items=len(details),
        by_group=by_group,
        details=details,
    )


__all__ = [
    "BENCHMARK_CONTINUATION",
    "BENCHMARK_PROMPT",
    "MultipleChoiceItem",
    "MultipleChoiceResult",
    "benchmark_items",
    "continuation_logprobs",
    "pick",
    "score_items",
]
