"""Continuous batching: many requests share one forward per generated token.

One engine owns one model and a background thread. Requests arrive at any time (`submit`); between two
decoding steps the thread admits waiting requests into free slots, prefills their prompts (together,
left-padded, as `generate` does), and from then on every active sequence advances by one token per
step in a single batched forward. A sequence that stops (a stop token, max_tokens, or its client went
away) frees its slot at once, so a long answer never holds short ones back and a newcomer never waits
for a whole batch to finish: the difference from `@serve.batch`, which batches whole requests.

The KV cache is the model's own `KVCache`, used as a pool of rows:

- rows 0..n-1 are the active sequences (a finished one's row is refilled by moving the last row in);
  each step runs the model on a view of those n rows only, so one request alone costs a batch of 1,
  and of the positions from the oldest active sequence's first key on, so attention reads what the
  active sequences span, not the whole context the write position has travelled;
- all rows share one write position (`length`); a row's keys are right-aligned below it, and its
  `key_mask` marks which cached positions are its own tokens. Position ids come from each row's own
  count (`next_position`), so where the keys sit in the cache changes nothing in the attention: keys
  carry their positions (rotary or learned) from when they were computed;
- a newcomer's prompt keys are copied from its prefill into [length - p, length) of its row (the rows
  are shifted right first if its prompt is longer than `length`);
- when the write position reaches the end, every row is shifted left by the smallest unused prefix
  (compaction), which always makes room: a sequence never needs more than context_length positions.

Each sequence draws its randomness from its own `random.Random` (seeded by the request or at random):
one uniform per sampled token, turned into a token by inverse CDF over that row's (temperature-scaled,
nucleus-filtered) distribution. All rows are sampled by the same few tensor ops at once, yet a request's
tokens do not depend on who else is in the batch: the same seed gives the same text alone or batched
(up to float rounding of the batched matmuls, which the tests check stays below sampling's resolution).

Tool calls (chat sequences, `SamplingParams.tools`): after each token the engine asks its `ToolRunner`
whether the sequence just closed a call; if so, the result's tokens are fed in, one per step like sampled
ones (reported, so the reply shows the call and its result, but never taken as a stop), and sampling
resumes after them -- the same protocol `components.model.generate` follows for evaluation and RL.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from components.model.gpt import GPT, KVCache
from components.model.tools import ToolRunner

log = logging.getLogger(__name__)

# (log-prob of a prompt token given those before it, or None for the first; top alternatives (id, log-prob))
PromptLogprob = tuple[float | None, list[tuple[int, float]]]


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is generated."""

    max_tokens: int  # tokens to generate at most; 0 = only score the prompt (echo)
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None  # None = a fresh random seed
    stop_tokens: frozenset[int] = frozenset()  # generation ends after one of these (it is reported)
    top_logprobs: int = 0  # alternatives reported with each token's log-prob (0 = only the token's)
    want_logprobs: bool = False  # report the log-prob of every generated token
    prompt_logprobs: bool = False  # report the log-prob of every prompt token (echo)
    tools: bool = False  # run the engine's tool on each call this sequence makes (chat requests)


@dataclass
class Event:
    """What the engine reports for one sequence: one generated token, and/or the end of the sequence."""

    token: int | None = None
    logprob: float | None = None  # the model's own log-prob of `token` (temperature 1, unfiltered)
    top_logprobs: list[tuple[int, float]] | None = None
    prompt_logprobs: list[PromptLogprob] | None = None  # echo
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None


@dataclass
class Ticket:
    """A submitted sequence; `cancel` frees its slot at the next step."""

    prompt: list[int]
    params: SamplingParams
    sink: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: int = 0
    pending: int | None = None  # the last sampled token, fed to the model at the next step
    rng: random.Random | None = None  # the sequence's own source of sampling randomness
    start: int = 0  # cache index of the sequence's first key
    done: bool = False  # its last event (with a finish_reason) was sent
    tokens: list[int] = field(default_factory=list)  # generated so far (what a tool call is read from)
    forced: list[int] = field(default_factory=list)  # a tool's result, fed in before sampling resumes

    def cancel(self) -> None:
        self.cancelled.set()


class Engine:
    """A background thread that runs every submitted sequence through `model` (in eval mode)."""

    def __init__(self, model: GPT, *, max_batch_size: int = 16, tools: ToolRunner | None = None) -> None:
        self.model = model.eval()
        self.tools = tools  # runs the calls of sequences with `params.tools`
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        self.capacity = model.config.context_length
        self._inbox: queue.Queue[Ticket | None] = queue.Queue()
        self._waiting: list[Ticket] = []
        self._active: list[Ticket] = []  # row i of the cache belongs to _active[i]
        self._cache = self._new_cache()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoding steps run (for tests and the benchmark)
        self.prefills = 0  # prefill forwards run (each for one or more newcomers)
        self.max_rows_seen = 0  # the largest batch one step decoded
        self.compactions = 0  # left shifts of the cache to make room
        self.cancelled = 0  # sequences dropped before they finished (their client went away)

    # -- the public side -----------------------------------------------------------------------------

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gptrecipe-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, prompt: Sequence[int], params: SamplingParams, sink: Callable[[Event], None]) -> Ticket:
        """Queue a sequence; `sink` is called from the engine thread with each `Event`, the last one
        carrying a finish_reason. The caller checked that prompt + max_tokens fits the context."""
        if len(prompt) + params.max_tokens > self.capacity or not prompt:
            raise ValueError(
                f"prompt of {len(prompt)} tokens + max_tokens {params.max_tokens} does not fit the "
                f"context of {self.capacity} tokens"
            )
        ticket = Ticket(list(prompt), params, sink)
        self._inbox.put(ticket)
        return ticket

    @property
    def active(self) -> int:
        """Sequences holding a slot right now."""
        return len(self._active)

    # -- the engine thread ---------------------------------------------------------------------------

    def _new_cache(self) -> KVCache:
        cfg = self.model.config
        dtype = next(self.model.parameters()).dtype
        cache = KVCache(self.capacity)
        shape = (self.max_batch_size, cfg.n_head, self.capacity, cfg.head_dim)
        for layer in range(cfg.n_layer):
            cache.keys[layer] = torch.zeros(shape, dtype=dtype, device=self.device)
            cache.values[layer] = torch.zeros(shape, dtype=dtype, device=self.device)
        cache.key_mask = torch.zeros(self.max_batch_size, self.capacity, dtype=torch.bool, device=self.device)
        cache.next_position = torch.zeros(self.max_batch_size, 1, dtype=torch.long, device=self.device)
        return cache

    def _run(self) -> None:
        while True:
            idle = not self._active and not self._waiting
            try:
                # Block only when there is nothing to do; otherwise just drain what has arrived.
                item = self._inbox.get(timeout=1.0) if idle else self._inbox.get_nowait()
            except queue.Empty:
                item = ...
            while item is not ...:
                if item is None:
                    self._fail_all("cancelled", "the engine stopped")
                    return
                self._waiting.append(item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = ...
            try:
                with torch.inference_mode():
                    self._drop_cancelled()
                    self._admit()
                    if self._active:
                        self._decode_step()
            except Exception as e:  # a bug or an out-of-memory must not leave clients waiting forever
                log.exception("engine step failed")
                self._fail_all("error", f"{type(e).__name__}: {e}")

    def _fail_all(self, reason: str, message: str) -> None:
        for ticket in self._active + self._waiting:
            if not ticket.done:
                ticket.sink(Event(finish_reason=reason, error=message))
        self._active, self._waiting = [], []
        self._cache = self._new_cache()

    def _drop_cancelled(self) -> None:
        for t in self._waiting:
            if t.cancelled.is_set():
                t.sink(Event(finish_reason="cancelled"))
        self._waiting = [t for t in self._waiting if not t.cancelled.is_set()]
        for row in reversed(range(len(self._active))):
            t = self._active[row]
            if t.cancelled.is_set():
                if not t.done:
                    t.sink(Event(finish_reason="cancelled"))
                    self.cancelled += 1
                self._release(row)

    def _release(self, row: int) -> None:
        """Free a row: the last active row moves into it, so rows 0..n-1 stay the active ones."""
        last = len(self._active) - 1
        c = self._cache
        if row != last:
            for layer in c.keys:
                c.keys[layer][row, :, : c.length] = c.keys[layer][last, :, : c.length]
                c.values[layer][row, :, : c.length] = c.values[layer][last, :, : c.length]
            c.key_mask[row] = c.key_mask[last]
            c.next_position[row] = c.next_position[last]
            self._active[row] = self._active[last]
        self._active.pop()
        c.key_mask[last] = False
        if not self._active:
            c.length = 0

    def _shift(self, by: int) -> None:
        """Move every active row's keys `by` positions (right if positive, left if negative)."""
        c, n, L = self._cache, len(self._active), self._cache.length
        if by == 0 or n == 0:  # nothing to move
            c.length = L + by
            return
        src, dst = (slice(0, L), slice(by, L + by)) if by > 0 else (slice(-by, L), slice(0, L + by))
        for layer in c.keys:
            c.keys[layer][:n, :, dst] = c.keys[layer][:n, :, src].clone()
            c.values[layer][:n, :, dst] = c.values[layer][:n, :, src].clone()
        mask = c.key_mask[:n, src].clone()
        c.key_mask[:n] = False
        c.key_mask[:n, dst] = mask
        c.length = L + by
        for ticket in self._active:
            ticket.start += by

    def _admit(self) -> None:
        free = self.max_batch_size - len(self._active)
        batch, rest = [], []
        for t in self._waiting:
            # Echo-only requests (max_tokens 0) need no slot: the prefill scores them and they are done.
            if t.params.max_tokens == 0 or free > 0:
                free -= t.params.max_tokens > 0
                batch.append(t)
            else:
                rest.append(t)
        self._waiting = rest
        if batch:
            self._prefill(batch)

    def _prefill(self, batch: list[Ticket]) -> None:
        B, P = len(batch), max(len(t.prompt) for t in batch)
        ids = torch.zeros((B, P), dtype=torch.long)
        mask = torch.zeros((B, P), dtype=torch.long)
        for j, t in enumerate(batch):
            ids[j, P - len(t.prompt) :] = torch.as_tensor(t.prompt)
            mask[j, P - len(t.prompt) :] = 1
        prefill = KVCache(P)
        self.prefills += 1
        hidden = self.model.hidden_states(
            ids.to(self.device), attention_mask=mask.to(self.device), kv_cache=prefill
        )
        logits = self.model.lm_head(hidden[:, -1]).float()

        staying = [j for j, t in enumerate(batch) if t.params.max_tokens > 0]
        if staying:
            longest = max(len(batch[j].prompt) for j in staying)
            if longest > self._cache.length:
                self._shift(longest - self._cache.length)
        c, L = self._cache, self._cache.length
        rows, staying_logits, prompt_lps = [], [], []  # the new active rows, their logits and prompt scores
        for j, t in enumerate(batch):
            prompt_lp = None
            if t.params.prompt_logprobs:
                prompt_lp = self._prompt_logprobs(t, hidden[j, P - len(t.prompt) :])
            if t.params.max_tokens == 0:
                t.sink(Event(prompt_logprobs=prompt_lp, finish_reason="length"))
                continue
            row, p = len(self._active), len(t.prompt)
            for layer in c.keys:
                c.keys[layer][row, :, L - p : L] = prefill.keys[layer][j, :, P - p :]
                c.values[layer][row, :, L - p : L] = prefill.values[layer][j, :, P - p :]
            c.key_mask[row] = False
            c.key_mask[row, L - p : L] = True
            c.next_position[row] = p
            t.start = L - p
            t.rng = random.Random(t.params.seed if t.params.seed is not None else random.getrandbits(63))
            self._active.append(t)
            rows.append(len(self._active) - 1)
            staying_logits.append(j)
            prompt_lps.append(prompt_lp)
        if rows:
            self._emit(rows, logits[staying_logits], prompt_lps)

    def _prompt_logprobs(self, t: Ticket, hidden: Tensor) -> list[PromptLogprob]:
        """(log-prob of each prompt token given the ones before, top alternatives); None for the first."""
        logp = self.model.lm_head(hidden).float().log_softmax(dim=-1)  # (p, V): row i predicts token i+1
        out: list[PromptLogprob] = [(None, [])]
        for i in range(1, len(t.prompt)):
            out.append((float(logp[i - 1, t.prompt[i]]), self._top(logp[i - 1], t.params.top_logprobs)))
        return out

    @staticmethod
    def _top(logp: Tensor, k: int) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        values, ids = torch.topk(logp, k)
        return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]

    def _sample(self, tickets: list[Ticket], logits: Tensor) -> list[int]:
        """The next token of each ticket from its row of logits (n, V), all rows at once.

        One batched pass instead of a multinomial per row: the per-row torch calls cost more than the
        tiny model's forward at 16 rows. Greedy rows take the argmax; the others sort their
        temperature-scaled distribution, drop what lies outside the nucleus (the tokens ranked above
        reach top_p; kept tokens are a prefix of the sorted order) and pick the first token whose
        cumulative weight exceeds a uniform drawn from the row's own generator.
        """
        tokens = logits.argmax(dim=-1).tolist()
        sampled = [r for r, t in enumerate(tickets) if t.params.temperature > 0]
        if not sampled:
            return tokens
        params = [tickets[r].params for r in sampled]
        temperature = torch.tensor([p.temperature for p in params], device=logits.device)
        # top_p >= 1 keeps everything (rounding could otherwise push the tail's cumsum - p over 1).
        top_p = torch.tensor([p.top_p if p.top_p < 1 else float("inf") for p in params], device=logits.device)
        rows = logits if len(sampled) == len(tickets) else logits[sampled]
        # stable: ties keep one order, whatever the batch, so a seed picks the same token alone or batched.
        ordered, order = torch.sort(rows / temperature[:, None], dim=-1, descending=True, stable=True)
        probs = ordered.softmax(dim=-1)
        cum = probs.cumsum(dim=-1)
        keep = cum - probs < top_p[:, None]
        cdf = (probs * keep).double().cumsum(dim=-1)  # float64: the uniform's resolution, no drift
        draws = [tickets[r].rng.random() for r in sampled]
        u = torch.tensor(draws, dtype=torch.float64, device=logits.device)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
        # u * total can round up to total: stay on the last kept token.
        pick = torch.minimum(pick, keep.sum(dim=-1, keepdim=True) - 1)
        for r, token in zip(sampled, order.gather(-1, pick)[:, 0].tolist(), strict=True):
            tokens[r] = token
        return tokens

    def _emit(self, rows: list[int], logits: Tensor, prompt_lps: list | None = None) -> None:
        """Sample the next token of each of `rows` (active rows; logits (len(rows), V) in that order),
        report them, and note which rows are done."""
        tickets = [self._active[row] for row in rows]
        tokens = self._sample(tickets, logits)
        for k, (t, token) in enumerate(zip(tickets, tokens, strict=True)):
            forced = bool(t.forced)
            if forced:  # a tool result's token: fed to the model like a sampled one, never a stop
                token = t.forced.pop(0)
            event = Event(token=token, prompt_logprobs=prompt_lps[k] if prompt_lps else None)
            if t.params.want_logprobs and not forced:
                logp = logits[k].log_softmax(dim=-1)
                event.logprob = float(logp[token])
                event.top_logprobs = self._top(logp, t.params.top_logprobs)
            t.generated += 1
            t.pending = token
            if t.params.tools and self.tools is not None:
                t.tokens.append(token)
                if not forced:
                    t.forced.extend(self.tools.after_token(t.tokens) or [])
            if token in t.params.stop_tokens and not forced:
                event.finish_reason = "stop"
            elif t.generated >= t.params.max_tokens:
                event.finish_reason = "length"
            t.done = event.finish_reason is not None
            t.sink(event)

    def _decode_step(self) -> None:
        # Sequences that finished when they sampled their last token leave before the forward.
        for row in reversed(range(len(self._active))):
            t = self._active[row]
            if t.done:
                self._release(row)
        n = len(self._active)
        if n == 0:
            return
        c = self._cache
        if c.length + 1 > self.capacity:
            self._shift(-min(t.start for t in self._active))
            self.compactions += 1
        # A view of rows 0..n-1 and of the positions from the oldest row's first key on: slices share
        # memory, so the model's writes land in the pool, and attention only reads the window the active
        # rows use. Left of it every row's keys are masked out anyway, and arrivals keep pushing the
        # write position right, so without the window a step would attend over most of the context.
        lo = min(t.start for t in self._active)
        view = KVCache(self.capacity - lo)
        view.length = c.length - lo
        view.keys = {layer: k[:n, :, lo:] for layer, k in c.keys.items()}
        view.values = {layer: v[:n, :, lo:] for layer, v in c.values.items()}
        view.key_mask = c.key_mask[:n, lo:]
        view.next_position = c.next_position[:n]
        tokens = torch.tensor([[t.pending] for t in self._active], dtype=torch.long, device=self.device)
        hidden = self.model.hidden_states(tokens, kv_cache=view)
        logits = self.model.lm_head(hidden[:, -1]).float()
        c.length = view.length + lo
        c.next_position[:n] = view.next_position
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, n)
        self._emit(list(range(n)), logits)
