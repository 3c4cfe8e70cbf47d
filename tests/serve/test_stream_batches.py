"""How a stream groups the engine's events into chunks (`_Run.batches`), against a stand-in engine
whose events the test sends itself: no model, no timing races (the interval is long, the checks only
say which events travel together)."""

from __future__ import annotations

import asyncio
import threading

from components.serve.engine import Event, SamplingParams, Ticket
from components.serve.service import _Mailbox, _Run


class HandFedEngine:
    """Takes submissions like `Engine.submit`; the test calls the sinks."""

    def __init__(self) -> None:
        self.sinks = []

    def submit(self, prompt, params, sink) -> Ticket:
        self.sinks.append(sink)
        return Ticket(list(prompt), params, sink)


def tokens(batch) -> list[int | None]:
    return [event.token for _, event in batch]


def test_first_token_goes_at_once_then_tokens_gather_until_the_interval_and_the_end_does_not_wait():
    async def scenario():
        engine = HandFedEngine()
        run = _Run(engine, [([1, 2], SamplingParams(max_tokens=5))], _Mailbox(asyncio.get_running_loop()))
        batches = run.batches(interval=2.0)
        send = engine.sinks[0]
        loop = asyncio.get_running_loop()

        send(Event(token=10))
        start = loop.time()
        first = await asyncio.wait_for(batches.__anext__(), timeout=1.5)
        assert tokens(first) == [10] and loop.time() - start < 1.5  # not held back by the interval

        # Two tokens now and one shortly after: all three leave together, once the interval is over.
        send(Event(token=11))
        send(Event(token=12))
        loop.call_later(0.05, send, Event(token=13))
        second = await batches.__anext__()
        assert tokens(second) == [11, 12, 13]
        assert loop.time() - start >= 2.0 - 0.05  # it waited for the interval (the loop clock's slack)

        # The sequence's last event is sent as soon as it arrives.
        send(Event(token=14, finish_reason="length"))
        start = loop.time()
        last = await asyncio.wait_for(batches.__anext__(), timeout=1.5)
        assert tokens(last) == [14] and last[0][1].finish_reason == "length"
        assert not run.open
        await batches.aclose()
        assert all(t.cancelled.is_set() for t in run.tickets)  # closing the stream frees the slots

    asyncio.run(scenario())


def test_without_an_interval_every_wakeup_sends_what_has_arrived():
    async def scenario():
        engine = HandFedEngine()
        jobs = [([1], SamplingParams(max_tokens=3)), ([2], SamplingParams(max_tokens=3))]
        run = _Run(engine, jobs, _Mailbox(asyncio.get_running_loop()))
        batches = run.batches()
        engine.sinks[0](Event(token=1))
        engine.sinks[1](Event(token=2))
        assert tokens(await batches.__anext__()) == [1, 2]  # what arrived together goes together
        engine.sinks[0](Event(token=3, finish_reason="stop"))
        assert tokens(await batches.__anext__()) == [3]
        assert run.open == {1}  # the other choice is still running
        engine.sinks[1](Event(token=4, finish_reason="length"))
        assert tokens(await batches.__anext__()) == [4]
        assert not run.open

    asyncio.run(scenario())


def test_the_mailbox_delivers_every_event_in_order_with_one_wake_up_per_burst():
    """The engine thread reports a step's events back to back; the loop is woken once for them all."""

    async def scenario():
        loop = asyncio.get_running_loop()
        wakeups = []
        real = loop.call_soon_threadsafe

        def counting(callback, *args):
            wakeups.append(callback)
            return real(callback, *args)

        loop.call_soon_threadsafe = counting
        box, queue = _Mailbox(loop), asyncio.Queue()

        def engine_step(first: int) -> None:
            for k in range(first, first + 16):
                box.put(queue, k)

        for step in range(3):  # three steps, each a burst from another thread while the loop is busy
            thread = threading.Thread(target=engine_step, args=(step * 16,))
            thread.start()
            thread.join()  # blocks the loop, as its other work does while the engine decodes
            got = [await queue.get() for _ in range(16)]
            assert got == list(range(step * 16, step * 16 + 16))
        assert wakeups == [box._deliver] * 3
        assert queue.empty()

    asyncio.run(scenario())


def test_a_delta_chunk_is_the_same_bytes_as_the_generic_chunk():
    from components.serve.sse import ChunkWriter

    for chat in (True, False):
        writer = ChunkWriter(model="tiny", chat=chat, include_usage=chat)
        for index, text in [(0, "Hello"), (0, 'é "quoted"\n\\'), (1, ""), (0, "\0")]:
            generic = writer._chunk([writer._choice(index, {"content": text} if chat else text, None)])
            assert writer.delta(index, text) == generic
