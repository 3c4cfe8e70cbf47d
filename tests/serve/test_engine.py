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
