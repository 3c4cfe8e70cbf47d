"""Chat evaluation: generate replies to held-out prompts and score them exactly.

Used by SFT (the SFT model beside the base model), PPO/GRPO (during training) and the evaluate stage.
For each RL-format record (`prompt` messages, `answer`, `task`, plus extra info such as `competitors`):

1. render the prompt with the generation prompt (`<|im_start|>assistant<|im_sep|>` appended);
2. generate in batches with the KV cache until `<|im_end|>` (greedy at temperature 0: deterministic),
   with the tool on (`tools=True`, when the tokenizer has the tool tokens): a call the model closes
   is run and its result put into the context before the model continues (`components.model.tools`);
3. read the reply with `assistant_reply` (text up to the first special token other than a tool token,
   whether it ended with `<|im_end|>`, whether it leaked a role) and score it with the task's verifier:
   the final answer, after any tool call, is what counts.

`tools=False` runs the same model with the tool switched off: a call it writes is not run, and the
model goes on to write a result of its own -- what the model knows without the tool.

Metrics (`summarize`, computed from the samples alone, so several workers' samples can be merged):

- `accuracy`: mean verifier score over records that have a task and an answer; `accuracy.<task>` per
  task. Absent when no record is verifiable.
- `format_compliance`: the reply ended with `<|im_end|>` AND leaked no role (no `<|im_start|>`/`<|im_sep|>`
  before its end, no "User:"-style header written as text); `ended_rate`, `leaked_role_rate` separately.
- `mean_response_tokens`: generated tokens per reply, the closing `<|im_end|>` and tool results included.
- `tool_call_rate`: share of replies that opened at least one tool call (run or not).
- `rm_score_mean` (with a reward model): the reward model's score of prompt + reply, read at the last
  generated token (the `<|im_end|>` of a finished reply), as RL reads it.
- `n`: records evaluated; `skipped_too_long`: records whose prompt + `max_new_tokens` do not fit the
  model's context (not generated, counted in no rate).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer

from components.eval.verifiers import verifier_names, verify
from components.model.generate import generate
from components.model.gpt import GPT, evaluating
from components.model.heads import ScalarHeadModel
from components.model.tools import ToolRunner
from components.tokenizer.bpe import eot_id
from components.tokenizer.chat import ChatTokens, ChatTooLong, assistant_reply, render

# Record fields that are not verifier info.
_NOT_INFO = frozenset({"prompt", "answer", "task"})


@dataclass
class ChatEval:
    metrics: dict[str, float]
    samples: list[dict]


def verifier_info(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's extra fields (`competitors`, `id`, ...), passed to the verifier as keyword args."""
    return {k: v for k, v in record.items() if k not in _NOT_INFO}


def is_verifiable(record: Mapping[str, Any]) -> bool:
    return bool(record.get("task")) and record.get("answer") is not None


@torch.no_grad()
def chat_eval(
    model: GPT,
    tok: Tokenizer,
    records: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    reward_model: ScalarHeadModel | None = None,
    limit: int | None = None,
    tools: bool = True,
) -> ChatEval:
    """Generate a reply to each record's prompt and score it; see the module docstring.

    The model is put in eval mode for the generation and given back in the mode it came in. The
    samples follow the records' order: {prompt (messages), reply, answer, task, correct (1.0/0.0, None
    when not verifiable), ended, leaked_role, response_tokens, tool_calls, rm_score (with a reward
    model), id}. `tools` runs the tool when the tokenizer has the tool tokens (module docstring).
    Raises ValueError before generating anything if a record names a task without a verifier."""
    records = list(records[:limit] if limit is not None else records)
    unknown = sorted({r["task"] for r in records if is_verifiable(r)} - set(verifier_names()))
    if unknown:
        raise ValueError(f"no verifier for task(s) {unknown}; register one with register_verifier")
    special = ChatTokens.of(tok)
    runner = ToolRunner(tok) if tools and special.has_tools else None
    pad = eot_id(tok)
    device = next(model.parameters()).device
    budget = model.config.context_length - max_new_tokens
    if budget < 1:
        raise ValueError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in context_length "
            f"{model.config.context_length}"
        )

    prompts: list[tuple[int, list[int]]] = []  # (record index, prompt ids)
    skipped = 0
    for i, record in enumerate(records):
        try:
            ids = render(tok, record["prompt"], add_generation_prompt=True, max_tokens=budget).ids
        except ChatTooLong:
            skipped += 1
            continue
        prompts.append((i, ids))
    # Similar lengths together: less padding per batch. The samples are put back in record order.
    prompts.sort(key=lambda p: len(p[1]))

    generator = torch.Generator(device=device).manual_seed(seed)
    samples: dict[int, dict[str, Any]] = {}
    with evaluating(model, reward_model):
        for lo in range(0, len(prompts), batch_size):
            chunk = prompts[lo : lo + batch_size]
            out = generate(
                model,
                [ids for _, ids in chunk],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop_tokens=[special.im_end],
                pad_token_id=pad,
                generator=generator,
                tools=runner,
            )
            scores = None
            if reward_model is not None:
                rm_device = next(reward_model.parameters()).device
                scores = reward_model.score(
                    out.sequences.to(rm_device), out.attention_mask.to(rm_device)
                ).float()
            for row, ((index, _), response) in enumerate(zip(chunk, out.response_lists(), strict=True)):
                samples[index] = _sample(tok, records[index], response, special)
                if scores is not None:
                    samples[index]["rm_score"] = float(scores[row])

    ordered = [samples[i] for i in sorted(samples)]
    metrics = summarize(ordered)
    metrics["skipped_too_long"] = float(skipped)
    return ChatEval(metrics, ordered)


def without_tools(
    model: GPT, tok: Tokenizer, records: Sequence[Mapping[str, Any]], **kwargs: Any
) -> dict[str, float]:
    """The same model's accuracy with its tool switched off, beside the tool-assisted `accuracy`:
    `no_tools_accuracy` and `no_tools_accuracy.<task>` (`chat_eval`'s keyword arguments apply). Empty when
    the tokenizer has no tool tokens: the model cannot call a tool, so both runs would be the same."""
    if not ChatTokens.of(tok).has_tools:
        return {}
    result = chat_eval(model, tok, records, tools=False, **kwargs)
    return {f"no_tools_{k}": v for k, v in result.metrics.items() if k.startswith("accuracy")}


def _sample(
    tok: Tokenizer, record: Mapping[str, Any], response: list[int], special: ChatTokens
) -> dict[str, Any]:
    reply = assistant_reply(tok, response)
    correct = None
    if is_verifiable(record):
        correct = verify(record["task"], reply.text, record["answer"], **verifier_info(record))
    return {
        "id": record.get("id"),
        "prompt": list(record["prompt"]),
        "reply": reply.text,
        "answer": record.get("answer"),
        "task": record.get("task"),
        "correct": correct,
        "ended": reply.ended,
        "leaked_role": reply.leaked_role,
        "response_tokens": len(response),
        "tool_calls": sum(1 for t in response if t == special.tool_call) if special.has_tools else 0,
    }


def summarize(samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The metrics of the module docstring from samples (as `chat_eval` returns them)."""
    n = len(samples)
    metrics: dict[str, float] = {"n": float(n)}
    if n == 0:
        return metrics
    ended = [bool(s["ended"]) for s in samples]
    leaked = [bool(s["leaked_role"]) for s in samples]
    metrics["format_compliance"] = sum(e and not k for e, k in zip(ended, leaked, strict=True)) / n
    metrics["ended_rate"] = sum(ended) / n
    metrics["leaked_role_rate"] = sum(leaked) / n
    metrics["mean_response_tokens"] = sum(s["response_tokens"] for s in samples) / n
    metrics["tool_call_rate"] = sum(1 for s in samples if s.get("tool_calls")) / n
    scored = [s for s in samples if s.get("correct") is not None]
    if scored:
        metrics["accuracy"] = sum(s["correct"] for s in scored) / len(scored)
        by_task: dict[str, list[float]] = defaultdict(list)
        for s in scored:
            by_task[s["task"]].append(s["correct"])
        for task, values in sorted(by_task.items()):
            metrics[f"accuracy.{task}"] = sum(values) / len(values)
    rm = [s["rm_score"] for s in samples if s.get("rm_score") is not None]
    if rm:
        metrics["rm_score_mean"] = sum(rm) / len(rm)
    return metrics


def format_samples(samples: Sequence[Mapping[str, Any]], *, title: str = "", limit: int | None = None) -> str:
    """Samples as readable text for an MLflow text artifact: the prompt's messages, the reply, and the
    verdict (correct / ended / leaked role / RM score)."""
    lines = [f"# {title}\n\n"] if title else []
    for s in list(samples)[:limit]:
        for m in s["prompt"]:
            lines.append(f"[{m['role']}] {m['content']}\n")
        verdict = [f"task={s.get('task')}", f"answer={s.get('answer')!r}"]
        if s.get("correct") is not None:
            verdict.append("correct" if s["correct"] else "WRONG")
        verdict.append("ended" if s["ended"] else "NOT ENDED")
        if s["leaked_role"]:
            verdict.append("LEAKED ROLE")
        if s.get("rm_score") is not None:
            verdict.append(f"rm={s['rm_score']:.3f}")
        lines.append(f"[assistant] {s['reply']}\n  -> {', '.join(verdict)}\n\n")
    return "".join(lines)


__all__ = [
    "ChatEval",
    "chat_eval",
    "format_samples",
    "is_verifiable",
    "summarize",
    "verifier_info",
    "without_tools",
]
