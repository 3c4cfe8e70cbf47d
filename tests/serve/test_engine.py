"""The continuous-batching engine: batched sequences give what they give alone, slots are freed."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from serve_world import make_model_dir

from components.model.checkpoint import load_model_dir
from components.model.generate import generate
from components.serve.engine import Engine, Event, SamplingParams

PROMPTS = [[5, 17, 3, 88, 41, 9, 2], [60], [7, 7, 30, 12], list(range(1, 20)), [99, 98], [3] * 11]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    paths = make_model_dir(tmp_path_factory.mktemp("engine"), context_length=48)
    return load_model_dir(paths["model"])[0]


class Collector:
    """Gathers one sequence's events; `wait` blocks until the last one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.finish_reason:
            self.done.set()

    def tokens(self) -> list[int]:
        assert self.done.wait(30), "sequence did not finish"
        return [e.token for e in self.events if e.token is not None]


def run(engine: Engine, prompts, params_for, stagger: float = 0.0) -> list[list[int]]:
    sinks = []
    for i, prompt in enumerate(prompts):
        sinks.append(Collector())
        engine.submit(prompt, params_for(i), sinks[-1])
        time.sleep(stagger)
    return [s.tokens() for s in sinks]


def test_batched_greedy_equals_generate_alone_and_queues_past_the_slots(model):
    engine = Engine(model, max_batch_size=4).start()  # 6 prompts, 4 slots: two wait for a free slot
    try:
        got = run(engine, PROMPTS, lambda i: SamplingParams(max_tokens=12 + i, temperature=0.0))
        assert engine.max_rows_seen == 4
    finally:
        engine.stop()
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], max_new_tokens=12 + i, temperature=0.0).response_lists()[0]
        assert got[i] == alone


def test_seeded_sampling_is_the_same_alone_and_batched_even_after_compaction(model):
    # Prompts + 40 tokens exceed the context of 48 together with the staggered arrivals, so the cache
    # is shifted (compacted) several times while sequences are in flight.
    def params(i):
        return SamplingParams(max_tokens=48 - len(PROMPTS[i]), temperature=1.0, top_p=0.9, seed=100 + i)

    engine = Engine(model, max_batch_size=6).start()
    try:
        batched = run(engine, PROMPTS, params, stagger=0.02)
        assert engine.compactions > 0 and engine.max_rows_seen > 1
        alone = [run(engine, [p], lambda _, i=i: params(i))[0] for i, p in enumerate(PROMPTS)]
    finally:
        engine.stop()
    assert batched == alone
    assert [len(t) for t in alone] == [48 - len(p) for p in PROMPTS]  # no stop tokens: full length
    assert len({tuple(t) for t in batched}) == len(PROMPTS)  # different seeds, different samples


def test_stop_token_ends_a_sequence_and_cancel_frees_its_slot(model):
    engine = Engine(model, max_batch_size=2).start()
    try:
        greedy = generate(model, [PROMPTS[0]], max_new_tokens=5, temperature=0.0).response_lists()[0]
        stopped = Collector()
        engine.submit(
            PROMPTS[0],
            SamplingParams(max_tokens=20, temperature=0, stop_tokens=frozenset({greedy[2]})),
            stopped,
        )
        assert stopped.tokens() == greedy[: greedy.index(greedy[2]) + 1]
        assert stopped.events[-1].finish_reason == "stop"

        long = Collector()
        ticket = engine.submit(PROMPTS[1], SamplingParams(max_tokens=45, temperature=1.0, seed=1), long)
        while not long.events:
            time.sleep(0.001)
        ticket.cancel()
        assert long.done.wait(10) and long.events[-1].finish_reason == "cancelled"
        deadline = time.time() + 5
        while engine.active and time.time() < deadline:
            time.sleep(0.01)
        assert engine.active == 0
    finally:
        engine.stop()


def test_echo_scores_the_prompt_like_a_forward_pass(model):
    engine = Engine(model, max_batch_size=2).start()
    try:
        sink = Collector()
        params = SamplingParams(max_tokens=0, prompt_logprobs=True, top_logprobs=2)
        engine.submit(PROMPTS[3], params, sink)
        assert sink.tokens() == []
    finally:
        engine.stop()
    values = sink.events[-1].prompt_logprobs
    with torch.no_grad():
        logp = model(torch.tensor([PROMPTS[3]]))[0][0].log_softmax(-1)
    expected = [float(logp[i - 1, t]) for i, t in enumerate(PROMPTS[3]) if i > 0]
    assert values[0] == (None, [])
    assert [v for v, _ in values[1:]] == pytest.approx(expected, abs=1e-5)
    assert all(len(top) == 2 and top[0][1] >= top[1][1] for _, top in values[1:])


def test_a_step_attends_only_over_the_window_its_rows_use(model, monkeypatch):
    # A relay: each sequence submits the next when it has generated half its tokens, so the engine never
    # idles and the cache's write position travels past the context (compaction), while no step has
    # more than two sequences, whose keys lie within the last len(prompt) + max_tokens positions.
    max_tokens, relay = 16, 6
    attended = []
    forward = model.hidden_states

    def recording(idx, *args, kv_cache=None, **kw):
        attended.append(kv_cache.length + idx.shape[1])  # the keys this forward's attention reads
        return forward(idx, *args, kv_cache=kv_cache, **kw)

    monkeypatch.setattr(model, "hidden_states", recording)
    engine = Engine(model, max_batch_size=2).start()
    sinks = [Collector() for _ in range(relay)]

    def submit(i: int) -> None:
        def sink(event: Event) -> None:
            sinks[i](event)
            if event.token is not None and len(sinks[i].events) == max_tokens // 2 and i + 1 < relay:
                submit(i + 1)

        engine.submit(PROMPTS[i], SamplingParams(max_tokens=max_tokens, temperature=0.0), sink)

    try:
        submit(0)
        got = [s.tokens() for s in sinks]
        assert engine.compactions > 0 and engine.max_rows_seen == 2
    finally:
        engine.stop()
    monkeypatch.undo()
    assert max(attended) <= max(len(p) for p in PROMPTS) + max_tokens < model.config.context_length
    for i, tokens in enumerate(got):
        alone = generate(model, [PROMPTS[i]], max_new_tokens=max_tokens, temperature=0.0).response_lists()[0]
        assert tokens == alone


class ResultAfter:
    """A ToolRunner stand-in: `call_end` closes a call and its result is `result`."""

    def __init__(self, call_end: int, result: list[int]):
        self.call_end, self.result = call_end, result

    def after_token(self, tokens):
        return list(self.result) if tokens and tokens[-1] == self.call_end else None


def test_a_tool_call_pauses_a_sequence_and_its_result_is_fed_in_as_generate_does(model):
    free = generate(model, [PROMPTS[0]], max_new_tokens=10, temperature=0.0).response_lists()[0]
    tool = ResultAfter(call_end=free[1], result=[90, 91, 92])  # the greedy reply "closes a call" early
    expected = generate(model, PROMPTS[:3], max_new_tokens=10, temperature=0.0, tools=tool).response_lists()
    engine = Engine(model, max_batch_size=4, tools=tool).start()
    try:
        with_tools = run(
            engine, PROMPTS[:3], lambda i: SamplingParams(max_tokens=10, temperature=0, tools=True)
        )
        # The result's tokens are reported like sampled ones (the chat shows them), never as a stop.
        stop_at_90 = SamplingParams(max_tokens=10, temperature=0, tools=True, stop_tokens=frozenset({90}))
        assert run(engine, PROMPTS[:1], lambda i: stop_at_90)[0] == expected[0]
        # A sequence that does not ask for tools (a completion) is not touched.
        plain = run(engine, PROMPTS[:1], lambda i: SamplingParams(max_tokens=10, temperature=0))[0]
    finally:
        engine.stop()
    assert with_tools == expected
    first = expected[0].index(tool.call_end)
    assert expected[0][first + 1 : first + 4] == [90, 91, 92]
    assert plain == free
