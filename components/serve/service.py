"""The OpenAI-style API over one model: requests in, responses or SSE streams out. No Ray here.

`Service` checks a request (unknown model, bad role, a prompt longer than the context, max_tokens over
the limit: each an `ApiError` naming the field), turns it into token ids with the chat template
(`components.tokenizer.chat.render` plus the assistant header), hands one sequence per choice to the
batching `Engine`, and turns the engine's token events back into text through an `IncrementalDecoder`
(never half a character) and a `StopMatcher` (the `stop` strings). The FastAPI app (`app.py`) is a thin
layer of routes over it, and the Ray Serve deployment a thin layer over the app.

Every sequence started for a request is cancelled when the request ends for any reason, a client
that disconnects included (its generator is closed), so a slot never outlives its client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from components.io.chat import ChatFormatError, validate_messages
from components.model.checkpoint import TOKENIZER_FILE, load_model_dir
from components.model.heads import load_scalar_model_dir
from components.model.tools import ToolRunner
from components.serve import sse
from components.serve.config import ServeConfig
from components.serve.engine import Engine, Event, SamplingParams, Ticket
from components.serve.protocol import ApiError, ChatCompletionRequest, CompletionRequest, ScoreRequest
from components.serve.text import IncrementalDecoder, StopMatcher, token_bytes_table
from components.tokenizer.bpe import encode_batch, eot_id, load_tokenizer
from components.tokenizer.chat import ChatTokens, render


def _content_text(content: Any) -> Any:
    """OpenAI clients may send content as a list of parts; only text parts exist for this model."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content


@dataclass
class ChoiceText:
    """The text of one choice as its tokens arrive."""

    decoder: IncrementalDecoder
    matcher: StopMatcher
    stop_tokens: frozenset[int]
    table: Sequence[bytes]
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    # Completions' logprobs: token strings, their log-probs, top alternatives and character offsets.
    lp_tokens: list[str] = field(default_factory=list)
    lp_values: list[float | None] = field(default_factory=list)
    lp_top: list[dict[str, float] | None] = field(default_factory=list)
    lp_offsets: list[int] = field(default_factory=list)
    error: str | None = None

    def token_text(self, token: int) -> str:
        return self.table[token].decode("utf-8", errors="replace")

    def add_logprob(self, token: int, value: float | None, top: list[tuple[int, float]] | None) -> None:
        self.lp_tokens.append(self.token_text(token))
        self.lp_values.append(value)
        self.lp_top.append({self.token_text(t): v for t, v in top} if top is not None else None)
        self.lp_offsets.append(len(self.text))

    def add(self, event: Event) -> str:
        """Take one engine event; return the new text it makes safe to show."""
        if self.finish_reason is not None:
            # A stop string ended it before the engine saw the cancel: tokens decoded after it count
            # nowhere (usage included), however many arrived in the same batch.
            return ""
        new = ""
        if event.token is not None:
            self.tokens += 1
            if event.logprob is not None:
                self.add_logprob(event.token, event.logprob, event.top_logprobs)
            if event.token not in self.stop_tokens:
                new = self.matcher.feed(self.decoder.feed([event.token]))
                if self.matcher.stopped:
                    self.finish_reason = "stop"
        if event.finish_reason and self.finish_reason is None:
            self.finish_reason = event.finish_reason
            self.error = event.error
        if self.finish_reason is not None:
            # The end: flush a broken trailing byte sequence and text held for a stop string.
            new += self.matcher.feed(self.decoder.finish()) + self.matcher.finish()
        self.text += new
        return new


Job = tuple[list[int], SamplingParams]  # a prompt's token ids and how to continue it


class _Mailbox:
    """Engine events on their way to one event loop's queues.

    The engine thread reports every active sequence's token at each step; waking the loop once per
    event (`call_soon_threadsafe` each time) made those wake-ups the replica's largest single cost under
    load. The engine thread drops events here instead, and the loop is woken once for all that arrived
    before it ran: usually once per step."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[asyncio.Queue, Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, queue: asyncio.Queue, item: Any) -> None:
        """From any thread."""
        self._items.append((queue, item))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            self._scheduled = False  # from here on an event put is a new wake-up; none is lost
        while self._items:
            queue, item = self._items.popleft()
            queue.put_nowait(item)


class _Run:
    """The engine sequences of one request, their events merged into one asyncio queue."""

    def __init__(self, engine: Engine, jobs: list[Job], box: _Mailbox) -> None:
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.open = set(range(len(jobs)))

        def sink_for(index: int):
            return lambda event: box.put(self.queue, (index, event))

        self.tickets: list[Ticket] = [
            engine.submit(p, params, sink_for(i)) for i, (p, params) in enumerate(jobs)
        ]

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        try:
            while self.open:
                index, event = await self.queue.get()
                if event.finish_reason is not None:
                    self.open.discard(index)
                yield index, event
        finally:  # also when the consumer stops early: a disconnected client, an error
            self.close()

    async def batches(self, interval: float = 0.0) -> AsyncIterator[list[tuple[int, Event]]]:
        """Like `events`, but everything already queued at once: a stream then writes the tokens that
        arrived together as one HTTP chunk (under load, a chunk per token costs more than decoding it).

        With an `interval` (seconds), a batch that follows another waits until that long after the
        previous one, gathering the tokens decoded meanwhile; the first batch (the first token) and
        one that ends the last sequence go out at once."""
        loop = asyncio.get_running_loop()
        last: float | None = None
        try:
            while self.open:
                batch = [await self.queue.get()]
                ending = self.open == {batch[0][0]} and batch[0][1].finish_reason is not None
                if last is not None and not ending and (wait := last + interval - loop.time()) > 0:
                    await asyncio.sleep(wait)
                while not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                for index, event in batch:
                    if event.finish_reason is not None:
                        self.open.discard(index)
                yield batch
                last = loop.time()
        finally:
            self.close()

    def cancel(self, index: int) -> None:
        self.tickets[index].cancel()

    def close(self) -> None:
        for ticket in self.tickets:
            ticket.cancel()


class Service:
    """One chat model (and optionally a reward model) behind the OpenAI-style API."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        model_dir = Path(config.model_dir)
        self.name = config.model_name or model_dir.name
        model, _ = load_model_dir(model_dir, device=config.device)
        self.context_length = model.config.context_length
        self.tok = load_tokenizer(model_dir / TOKENIZER_FILE)
        self.chat_tokens = ChatTokens.of(self.tok)
        self.eot = eot_id(self.tok)
        self.table = token_bytes_table(self.tok)
        tools = ToolRunner(self.tok) if config.tools and self.chat_tokens.has_tools else None
        self.engine = Engine(model, max_batch_size=config.max_batch_size, tools=tools).start()
        self.created = int(time.time())
        self.reward_model = self.reward_tok = None
        self.reward_name: str | None = None
        if config.reward_model_dir:
            rm_dir = Path(config.reward_model_dir)
            self.reward_model, _ = load_scalar_model_dir(rm_dir, device=config.device)
            self.reward_tok = load_tokenizer(rm_dir / TOKENIZER_FILE)
            self.reward_name = rm_dir.name
        self._reward_lock = asyncio.Lock()
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

    def close(self) -> None:
        self.engine.stop()

    def _run(self, jobs: list[Job]) -> _Run:
        """Start `jobs` on the engine, their events delivered to the running loop (a replica serves from
        one; tests may use several)."""
        loop = asyncio.get_running_loop()
        box = self._mailboxes.get(loop)
        if box is None:
            for closed in [lp for lp in self._mailboxes if lp.is_closed()]:
                del self._mailboxes[closed]
            box = self._mailboxes[loop] = _Mailbox(loop)
        return _Run(self.engine, jobs, box)

    # -- models and health ---------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        names = [self.name] + ([self.reward_name] if self.reward_name else [])
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": self.created, "owned_by": "gptrecipe"} for n in names
            ],
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.name, "active_sequences": self.engine.active}

    def _check_model(self, name: str) -> None:
        if name != self.name:
            raise ApiError(
                f"model {name!r} is not served here; this server serves {self.name!r}",
                status=404,
                param="model",
                code="model_not_found",
            )

    # -- turning requests into engine jobs -----------------------------------------------------------

    def _max_tokens(self, prompt_len: int, requested: int | None, where: str) -> int:
        room = self.context_length - prompt_len
        if room < 0 or (room == 0 and requested != 0):
            raise ApiError(
                f"{where} is {prompt_len} tokens, which leaves no room for a reply in the model's context of "
                f"{self.context_length} tokens",
                param=where.split("[")[0],
                code="context_length_exceeded",
            )
        if requested is None:
            return min(self.config.max_tokens_default, room)
        if requested > self.config.max_tokens_limit:
            raise ApiError(
                f"max_tokens {requested} is over this server's limit of {self.config.max_tokens_limit}",
                param="max_tokens",
                code="invalid_value",
            )
        if requested > room:
            raise ApiError(
                f"max_tokens {requested} + {where} of {prompt_len} tokens = {prompt_len + requested} is more "
                f"than the model's context of {self.context_length} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested

    def _check_n(self, n: int) -> None:
        if n > self.config.max_n:
            raise ApiError(f"n {n} is over this server's limit of {self.config.max_n}", param="n")

    def _params(self, req: Any, max_tokens: int, stop_tokens: frozenset[int], i: int, **extra: Any):
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=None if req.seed is None else req.seed + i,
            stop_tokens=stop_tokens,
            **extra,
        )

    def _choice(self, stop: list[str], stop_tokens: frozenset[int]) -> ChoiceText:
        return ChoiceText(IncrementalDecoder(self.table), StopMatcher(stop), stop_tokens, self.table)

    def _chat_jobs(self, req: ChatCompletionRequest) -> tuple[list[int], list[Job]]:
        self._check_model(req.model)
        self._check_n(req.n)
        raw = [
            {**m, "content": _content_text(m["content"])} if isinstance(m, dict) and "content" in m else m
            for m in req.messages
        ]
        try:
            messages = validate_messages(raw)
            prompt = render(self.tok, messages, add_generation_prompt=True).ids
        except ChatFormatError as e:
            raise ApiError(str(e), param="messages", code="invalid_value") from None
        max_tokens = self._max_tokens(len(prompt), req.requested_max_tokens, "messages")
        stops = frozenset({self.chat_tokens.im_end, self.eot})
        jobs = [(prompt, self._params(req, max_tokens, stops, i, tools=True)) for i in range(req.n)]
        return prompt, jobs

    # -- /v1/chat/completions ------------------------------------------------------------------------

    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any]:
        prompt, jobs = self._chat_jobs(req)
        stops = jobs[0][1].stop_tokens
        choices = [self._choice(req.stop, stops) for _ in jobs]
        run = self._run(jobs)
        async for index, event in run.events():
            choices[index].add(event)
            if choices[index].matcher.stopped:
                run.cancel(index)
        _raise_engine_error(choices)
        return {
            "id": sse.new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
            "usage": sse.usage(len(prompt), sum(c.tokens for c in choices)),
        }

    def chat_stream(self, req: ChatCompletionRequest) -> AsyncIterator[str]:
        """Checked now (so a bad request is an HTTP error, not a broken stream); generated when iterated."""
        prompt, jobs = self._chat_jobs(req)
        writer = sse.ChunkWriter(model=self.name, chat=True, include_usage=req.include_usage)
        return self._stream(writer, jobs, [len(prompt)], req.stop)

    async def _stream(
        self,
        writer: sse.ChunkWriter,
        jobs: list[Job],
        prompt_lengths: list[int],
        stop: list[str],
    ) -> AsyncIterator[str]:
        choices = [self._choice(stop, params.stop_tokens) for _, params in jobs]
        # The role chunks go out with the first tokens, and the usage with [DONE]: every HTTP chunk costs
        # the replica, the proxy and the client, whatever it carries.
        out = [writer.role(i) for i in range(len(jobs))] if writer.chat else []
        run = self._run(jobs)
        async for batch in run.batches(self.config.stream_interval):
            for index, event in batch:
                choice = choices[index]
                was_done = choice.finish_reason is not None
                text = choice.add(event)
                if text:
                    out.append(writer.delta(index, text))
                if choice.error:
                    yield "".join(out) + sse.event(
                        ApiError(choice.error, status=500, type="server_error").body()
                    )
                    run.close()
                    return
                if choice.finish_reason is not None and not was_done:
                    run.cancel(index)  # a stop string ends it before the engine knows
                    out.append(writer.finish(index, choice.finish_reason))
            if out and run.open:  # the last batch waits for the usage and [DONE]
                yield "".join(out)
                out = []
        if writer.include_usage:
            out.append(writer.usage(sum(prompt_lengths), sum(c.tokens for c in choices)))
        yield "".join([*out, sse.DONE])

    # -- /v1/completions -----------------------------------------------------------------------------

    def _completion_jobs(self, req: CompletionRequest) -> tuple[list[list[int]], list[Job]]:
        self._check_model(req.model)
        self._check_n(req.n)
        if req.echo and req.stream:
            raise ApiError("echo is only supported without stream", param="echo")
        if req.max_tokens == 0 and not req.echo:
            raise ApiError("max_tokens 0 is only useful with echo (to score the prompt)", param="max_tokens")
        raw = req.prompts()
        if not raw:
            raise ApiError("prompt is empty", param="prompt")
        texts = [p for p in raw if isinstance(p, str)]
        encoded = iter(encode_batch(self.tok, texts, append_eot=False)) if texts else iter(())
        prompts = [next(encoded) if isinstance(p, str) else list(p) for p in raw]
        vocab = self.tok.get_vocab_size()
        jobs = []
        for k, prompt in enumerate(prompts):
            where = "prompt" if len(prompts) == 1 else f"prompt[{k}]"
            if not prompt:
                raise ApiError(f"{where} is empty: it needs at least one token", param="prompt")
            if min(prompt) < 0 or max(prompt) >= vocab:
                raise ApiError(f"{where} has token ids outside [0, {vocab})", param="prompt")
            max_tokens = self._max_tokens(len(prompt), req.max_tokens, where)
            for i in range(req.n):
                params = self._params(
                    req,
                    max_tokens,
                    frozenset({self.eot}),
                    i,
                    want_logprobs=req.logprobs is not None,
                    top_logprobs=req.logprobs or 0,
                    prompt_logprobs=req.echo and req.logprobs is not None,
                )
                jobs.append((prompt, params))
        return prompts, jobs

    async def completions(self, req: CompletionRequest) -> dict[str, Any]:
        prompts, jobs = self._completion_jobs(req)
        choices = [self._choice(req.stop, params.stop_tokens) for _, params in jobs]
        for (prompt, _), choice in zip(jobs, choices, strict=True):
            if req.echo:
                # The prompt comes first: its text, and with logprobs its tokens (filled in by the
                # engine's prompt_logprobs event below; the first token has no log-prob).
                choice.text = IncrementalDecoder(self.table).feed(prompt)
        run = self._run(jobs)
        async for index, event in run.events():
            choice = choices[index]
            if event.prompt_logprobs is not None:
                self._add_prompt_logprobs(choice, jobs[index][0], event.prompt_logprobs)
            choice.add(event)
            if choice.matcher.stopped:
                run.cancel(index)
        _raise_engine_error(choices)
        return {
            "id": sse.new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": i,
                    "text": c.text,
                    "logprobs": None
                    if req.logprobs is None
                    else {
                        "tokens": c.lp_tokens,
                        "token_logprobs": c.lp_values,
                        "top_logprobs": c.lp_top,
                        "text_offset": c.lp_offsets,
                    },
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
            "usage": sse.usage(sum(len(p) for p in prompts), sum(c.tokens for c in choices)),
        }

    def _add_prompt_logprobs(self, choice: ChoiceText, prompt: list[int], values: list) -> None:
        """The echoed prompt's tokens go before the generated ones, with offsets into the echoed text."""
        decoder, offset = IncrementalDecoder(self.table), 0
        for token, (value, top) in zip(prompt, values, strict=True):
            choice.lp_tokens.append(choice.token_text(token))
            choice.lp_values.append(value)
            choice.lp_top.append({choice.token_text(t): v for t, v in top} if value is not None else None)
            choice.lp_offsets.append(offset)
            offset += len(decoder.feed([token]))

    def completions_stream(self, req: CompletionRequest) -> AsyncIterator[str]:
        prompts, jobs = self._completion_jobs(req)
        writer = sse.ChunkWriter(model=self.name, chat=False, include_usage=req.include_usage)
        return self._stream(writer, jobs, [len(p) for p in prompts], req.stop)

    # -- /v1/score -----------------------------------------------------------------------------------

    async def score(self, req: ScoreRequest) -> dict[str, Any]:
        if self.reward_model is None:
            raise ApiError(
                "no reward model is served here", status=404, param="model", code="model_not_found"
            )
        if req.model is not None and req.model != self.reward_name:
            raise ApiError(
                f"model {req.model!r} is not served here; the reward model is {self.reward_name!r}",
                status=404,
                param="model",
                code="model_not_found",
            )
        rows = []
        limit = self.reward_model.config.context_length
        for k, pair in enumerate(req.pairs):
            convo = (
                [{"role": "user", "content": pair.prompt}] if isinstance(pair.prompt, str) else pair.prompt
            )
            try:
                messages = validate_messages([*convo, {"role": "assistant", "content": pair.reply}])
                ids = render(self.reward_tok, messages).ids
            except ChatFormatError as e:
                raise ApiError(f"pairs[{k}]: {e}", param=f"pairs[{k}].prompt") from None
            if len(ids) > limit:
                raise ApiError(
                    f"pairs[{k}] renders to {len(ids)} tokens, more than the reward model's context "
                    f"of {limit}",
                    param=f"pairs[{k}]",
                    code="context_length_exceeded",
                )
            rows.append(ids)
        async with self._reward_lock:  # one batch at a time on the reward model
            scores = await asyncio.to_thread(self._score_rows, rows)
        return {
            "object": "list",
            "model": self.reward_name,
            "data": [{"object": "score", "index": i, "score": s} for i, s in enumerate(scores)],
        }

    @torch.no_grad()
    def _score_rows(self, rows: list[list[int]]) -> list[float]:
        width = max(map(len, rows))
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.as_tensor(row)
            mask[i, width - len(row) :] = 1
        device = next(self.reward_model.parameters()).device
        return self.reward_model.score(ids.to(device), mask.to(device)).float().cpu().tolist()


def _raise_engine_error(choices: list[ChoiceText]) -> None:
    for c in choices:
        if c.error:
            raise ApiError(c.error, status=500, type="server_error", code="engine_error")
