"""Many sampled replies per prompt, for the recipe's claims (`recipe_claims`): entropy, distinct-n,
pass@k and maj@k of one model.

Each of the first `prompts` verifiable records gets `samples` replies at `temperature`, drawn in
batches of about `batch_size` rows (the prompt repeated, so one prefill serves its replies; generation
uses the KV cache). One more forward pass over each finished batch gives the logits every sampled
token was drawn from, for the entropy (the sampler does not return its distributions); tool results
fed into a reply are not the model's samples and are left out of it (`response_mask`). Replies are
sampled with the tool on and read and verified as `chat_eval` does (`assistant_reply`, `verify`).
Deterministic for a seed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import Tokenizer

from components.eval.chat_eval import is_verifiable, verifier_info
from components.eval.recipe_claims import answer_key, mean_of, prompt_claims, token_entropy_sum
from components.eval.verifiers import verify
from components.model.generate import generate
from components.model.gpt import GPT, evaluating
from components.model.tools import ToolRunner
from components.tokenizer.bpe import eot_id
from components.tokenizer.chat import ChatTokens, ChatTooLong, assistant_reply, render


@torch.no_grad()
def sample_claims(
    model: GPT,
    tok: Tokenizer,
    records: Sequence[Mapping[str, Any]],
    *,
    prompts: int,
    samples: int,
    ks: Sequence[int],
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> dict[str, float | None]:
    """The model's claims metrics over the first `prompts` verifiable records: entropy, distinct_1,
    distinct_2, pass_at_<k>, maj_at_<k> (means over prompts), claims_prompts, claims_samples and
    claims_seconds. Records whose prompt does not fit with `max_new_tokens` are left out."""
    started = time.perf_counter()
    special = ChatTokens.of(tok)
    runner = ToolRunner(tok) if special.has_tools else None  # as chat_eval samples, the tool on
    budget = model.config.context_length - max_new_tokens
    chosen: list[tuple[Mapping[str, Any], list[int]]] = []
    for record in records:
        if len(chosen) == prompts:
            break
        if not is_verifiable(record):
            continue
        try:
            chosen.append(
                (record, render(tok, record["prompt"], add_generation_prompt=True, max_tokens=budget).ids)
            )
        except ChatTooLong:
            continue

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    per_batch = max(1, batch_size // samples)
    entropy_sum, tokens = 0.0, 0
    per_prompt: list[dict[str, float | None]] = []
    with evaluating(model):
        for lo in range(0, len(chosen), per_batch):
            chunk = chosen[lo : lo + per_batch]
            out = generate(
                model,
                [ids for _, ids in chunk for _ in range(samples)],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop_tokens=[special.im_end],
                pad_token_id=eot_id(tok),
                generator=generator,
                tools=runner,
            )
            # The logits at position t drew the token at t + 1: the response's come from P - 1 on (the
            # LM head only there: the prompt's logits would be most of the memory).
            hidden = model.hidden_states(out.sequences, attention_mask=out.attention_mask)
            logits = model.lm_head(hidden[:, out.prompt_length - 1 : -1])
            s, n = token_entropy_sum(logits, out.response_mask, temperature)
            entropy_sum, tokens = entropy_sum + s, tokens + n
            responses = out.response_lists()
            for i, (record, _) in enumerate(chunk):
                texts, verdicts, keys = [], [], []
                for response in responses[i * samples : (i + 1) * samples]:
                    text = assistant_reply(tok, response).text
                    texts.append(text)
                    verdicts.append(verify(record["task"], text, record["answer"], **verifier_info(record)))
                    keys.append(answer_key(record["task"], text, record))
                per_prompt.append(prompt_claims(texts, verdicts, keys, ks))

    metrics: dict[str, float | None] = {"entropy": entropy_sum / tokens if tokens else None}
    for key in per_prompt[0] if per_prompt else ():
        metrics[key] = mean_of([p[key] for p in per_prompt])
    metrics |= {
        "claims_prompts": float(len(chosen)),
        "claims_samples": float(samples),
        "claims_seconds": time.perf_counter() - started,
    }
    return metrics


__all__ = ["sample_claims"]
