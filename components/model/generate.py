"""Batched sampling from a GPT with a KV cache.

Prompts of different lengths are LEFT-padded to one width P, so that every row's next token sits in
the last column and one forward of length 1 per step serves the whole batch. Rows stop at a stop token
(which is kept, and counted in the response) and are padded after it; the loop ends when every row has
stopped or after ``max_new_tokens`` steps.

With a tool (``tools=ToolRunner(...)``, `components.model.tools`) a row that samples the end of a tool
call pauses sampling: the tool's result tokens are fed to the model one per step, through the same KV
cache, as if sampled, and then sampling resumes. Those tokens are real tokens of the sequence (attention
mask 1) but not the model's actions: their ``response_mask`` is 0 and their log-prob 0, so RL never
trains on them. All rows still advance one token per step, so the batch stays rectangular.

The caller puts the model in eval mode (``model.eval()``): generation does not touch the mode, so that
a trainer that samples between updates keeps control of it. Dropout left on makes samples noisier and
the returned log-probs disagree with an eval-mode forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from components.model.gpt import GPT, KVCache
from components.model.tools import ToolRunner


@dataclass
class Generation:
    """The result of ``generate`` for B prompts, P = padded prompt width, N = steps run (<= max_new_tokens).

    sequences: (B, P + N) long. Left-padded prompt, then the generated tokens; ``pad_token_id`` after
        a row's stop token.
    attention_mask: (B, P + N) long, 1 for real tokens: the prompt's own tokens and the response up to
        and including the stop token (tool results included). Feed it with ``sequences`` to
        ``GPT.forward`` to score them.
    prompt_length: P, so ``sequences[:, P:]`` are the responses.
    response_mask: (B, N) long, aligned with ``sequences[:, P:]``: 1 for the tokens the model sampled
        (its actions) up to and including the stop token; 0 on padding and on tool-result tokens.
    finished: (B,) bool, True where the row produced a stop token.
    logprobs: (B, N) float32 or None. The log-prob of each sampled token under the MODEL itself,
        log_softmax(logits) at temperature 1 with no top-k / top-p filtering, whatever the sampling
        settings were: the "old log-prob" PPO's ratio needs. 0 where response_mask is 0.
    """

    sequences: Tensor
    attention_mask: Tensor
    prompt_length: int
    response_mask: Tensor
    finished: Tensor
    logprobs: Tensor | None = None

    @property
    def responses(self) -> Tensor:
        """(B, N) generated tokens, padded after the stop token."""
        return self.sequences[:, self.prompt_length :]

    def response_lists(self) -> list[list[int]]:
        """Each row's response without padding: sampled tokens and tool results, the stop token included
        when there was one."""
        real = self.attention_mask[:, self.prompt_length :]
        return [row[mask.bool()].tolist() for row, mask in zip(self.responses, real, strict=True)]


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the top k, then outside the nucleus: the smallest set of most
    likely tokens whose probability reaches top_p (the most likely token is always kept)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of logits (B, V): argmax at temperature 0, else a sample from
    softmax(logits / temperature) after top-k / top-p filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _check_arguments(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> None:
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    vocab = model.config.vocab_size
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt {i} has token ids outside [0, vocab_size {vocab})")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    width = max(len(p) for p in prompts) + max_new_tokens
    if width > model.config.context_length:
        raise ValueError(
            f"longest prompt ({max(len(p) for p in prompts)} tokens) + max_new_tokens ({max_new_tokens}) "
            f"= {width} is longer than the model's context_length {model.config.context_length}"
        )


class _Injections:
    """Per row, the tool-result tokens still to feed, one per step."""

    def __init__(self, rows: int, device: torch.device):
        self.queues: list[list[int]] = [[] for _ in range(rows)]
        self.device = device

    @property
    def pending(self) -> bool:
        return any(self.queues)

    def next(self, sampled: Tensor) -> tuple[Tensor, Tensor]:
        """The step's tokens with each pending row's next injected token in place of its sample, and
        which rows were forced."""
        rows = [i for i, q in enumerate(self.queues) if q]
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        values = torch.tensor([self.queues[i].pop(0) for i in rows], dtype=torch.long, device=self.device)
        forced = torch.zeros_like(sampled, dtype=torch.bool).index_fill(0, index, True)
        return sampled.index_copy(0, index, values), forced

    def after(self, tools: ToolRunner, tokens: list[Tensor], closed: Tensor) -> None:
        """Run the tool for every row whose last sampled token closed a call (a rare event: the check
        is one comparison per step, the row's tokens are gathered only then)."""
        if not bool(closed.any()):
            return
        for row in closed.nonzero().flatten().tolist():
            history = [int(t[row]) for t in tokens]
            self.queues[row].extend(tools.after_token(history) or [])


@torch.no_grad()
def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    pad_token_id: int = 0,
    generator: torch.Generator | None = None,
    return_logprobs: bool = False,
    tools: ToolRunner | None = None,
) -> Generation:
    """Continue each prompt (a list of token ids) by up to ``max_new_tokens`` tokens.

    temperature 0 is greedy (top_k / top_p then do nothing); top_k and top_p filter the tempered
    distribution before sampling. ``generator`` makes sampling reproducible; it must live on the
    model's device (``torch.Generator(device=...)``). With ``return_logprobs`` the result carries the
    model's own log-prob of each sampled token (see ``Generation.logprobs``). With ``tools`` a row
    that closes a tool call gets the call's result fed in before it samples again (module docstring).
    """
    _check_arguments(model, prompts, max_new_tokens, temperature, top_k, top_p)
    device = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)

    prompt_ids = torch.full((B, P), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((B, P), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        prompt_ids[i, P - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        prompt_mask[i, P - len(prompt) :] = 1
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    stop = torch.as_tensor(sorted(set(stop_tokens)), dtype=torch.long, device=device)

    # Prefill: the whole prompt in one forward; the LM head only on the last column, the only one used.
    cache = KVCache(P + max_new_tokens)
    hidden = model.hidden_states(prompt_ids, attention_mask=prompt_mask, kv_cache=cache)
    logits = model.lm_head(hidden[:, -1]).float()

    finished = torch.zeros(B, dtype=torch.bool, device=device)
    tokens: list[Tensor] = []
    masks: list[Tensor] = []
    actions: list[Tensor] = []
    logprobs: list[Tensor] = []
    injections = _Injections(B, device) if tools is not None else None
    for step in range(max_new_tokens):
        active = ~finished
        token = sample_next_token(logits, temperature, top_k, top_p, generator)
        sampled = active
        if injections is not None and injections.pending:
            token, forced = injections.next(token)
            sampled = active & ~forced
        token = torch.where(active, token, pad_token_id)
        tokens.append(token)
        masks.append(active)
        actions.append(sampled)
        if return_logprobs:
            logp = logits.log_softmax(dim=-1).gather(-1, token[:, None]).squeeze(-1)
            logprobs.append(torch.where(sampled, logp, 0.0))
        finished = finished | (sampled & torch.isin(token, stop))
        if injections is not None and tools is not None:
            injections.after(tools, tokens, sampled & (token == tools.call_end))
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        # A finished row still takes part (the batch stays rectangular), as a pad with mask 0.
        hidden = model.hidden_states(token[:, None], attention_mask=active[:, None].long(), kv_cache=cache)
        logits = model.lm_head(hidden[:, -1]).float()

    response = torch.stack(tokens, dim=1)
    real = torch.stack(masks, dim=1).long()
    response_mask = torch.stack(actions, dim=1).long()
    return Generation(
        sequences=torch.cat([prompt_ids, response], dim=1),
        attention_mask=torch.cat([prompt_mask, real], dim=1),
        prompt_length=P,
        response_mask=response_mask,
        finished=finished,
        logprobs=torch.stack(logprobs, dim=1) if return_logprobs else None,
    )
