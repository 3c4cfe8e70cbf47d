"""Load benchmark of the serving deployment (prints figures, asserts nothing).

Starts a local Ray Serve deployment of a tiny model (a random-init GPT and a quickly trained BPE
tokenizer, unless --model gives a model directory) and runs 1, 4, 16 and 64 concurrent streaming chat
clients, each for --seconds. Per level: requests/s, output tokens/s, p50/p99 time to first token and
total latency, errors. Then the same 16 clients against a deployment that decodes one sequence at a time
(max_batch_size 1): batching's throughput gain.

--in-process skips Ray and HTTP: the clients consume `Service.chat_stream` (engine, chat template, SSE
text) in this process, with one torch thread as a one-CPU replica gets. The gap between the two runs is
what Serve's proxy, the HTTP streams and the client cost on the same CPUs.

    .venv/bin/python tests/bench/serve_load.py [--model DIR] [--seconds 10] [--max-tokens 32] [--in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import httpx2
import torch

from components.model.checkpoint import save_model_dir
from components.model.gpt import GPT
from components.serve.config import ServeConfig
from components.tokenizer.bpe import TokenizerConfig, train_tokenizer
from components.train.pretrain import PretrainConfig

PROMPTS = [
    "What is the capital of Ejon?",
    "Tell me about the rivers of Kuviro.",
    "What is 7 + 5?",
    "Grüße! Wie heißt die Hauptstadt von Desath?",
]


def tiny_model(root: Path) -> Path:
    texts = [f"{p} The answer is somewhere in the tiny world, {i}." for i, p in enumerate(PROMPTS * 20)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = train_tokenizer(texts, TokenizerConfig(vocab_size=512))
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    # The tiny demo's shape (its pretraining config's defaults: 4 layers of width 256), random weights.
    config = PretrainConfig().gpt_config(tok.get_vocab_size())
    return save_model_dir(GPT(config), root / "bench-tiny", tokenizer_path=root / "tokenizer.json")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def request_body(model: str, k: int, i: int, max_tokens: int) -> dict:
    """Client k's i-th request."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[(k + i) % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": k * 1000 + i,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def record(out: dict, start: float, first: float | None, tokens: int) -> None:
    end = time.perf_counter()
    out["ttft"].append((first or end) - start)
    out["latency"].append(end - start)
    out["tokens"] += tokens
    out["requests"] += 1


async def one_client(http: httpx2.AsyncClient, url: str, model: str, k: int, deadline: float, out: dict):
    i = 0
    while time.perf_counter() < deadline:
        body = request_body(model, k, i, out["max_tokens"])
        i += 1
        start, first, tokens = time.perf_counter(), None, 0
        try:
            async with http.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    out["errors"] += 1
                    await response.aread()
                    continue
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        out["errors"] += 1
                        break
                    if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                        first = time.perf_counter()
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
        except httpx2.HTTPError:
            out["errors"] += 1
            continue
        record(out, start, first, tokens)


async def in_process_client(service, k: int, deadline: float, out: dict) -> None:
    """`one_client` without HTTP: the same requests straight into `Service.chat_stream`."""
    from components.serve.protocol import ChatCompletionRequest

    i = 0
    while time.perf_counter() < deadline:
        req = ChatCompletionRequest.model_validate(request_body(service.name, k, i, out["max_tokens"]))
        i += 1
        start, first, tokens = time.perf_counter(), None, 0
        async for text in service.chat_stream(req):
            for line in text.split("\n"):
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    out["errors"] += 1
                if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        record(out, start, first, tokens)


async def run_level(target, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` clients for `seconds` against `target`: a base URL, or a `Service` (--in-process)."""
    out = {"requests": 0, "tokens": 0, "errors": 0, "ttft": [], "latency": [], "max_tokens": max_tokens}
    cpu, start = time.process_time(), time.perf_counter()
    deadline = start + seconds
    if not isinstance(target, str):
        await asyncio.gather(*(in_process_client(target, k, deadline, out) for k in range(clients)))
    else:
        limits = httpx2.Limits(max_connections=clients + 4)
        async with httpx2.AsyncClient(timeout=120, limits=limits) as http:
            url = f"{target}/v1/chat/completions"
            await asyncio.gather(*(one_client(http, url, model, k, deadline, out) for k in range(clients)))
    out["elapsed"] = time.perf_counter() - start  # includes finishing the requests in flight
    out["cpu"] = time.process_time() - cpu  # this process's CPU seconds, engine threads included
    return out


def report(label: str, r: dict) -> str:
    el = r["elapsed"]
    return (
        f"{label:<22} {r['requests'] / el:8.2f} {r['tokens'] / el:10.1f} "
        f"{percentile(r['ttft'], 0.5) * 1000:9.0f} {percentile(r['ttft'], 0.99) * 1000:9.0f} "
        f"{percentile(r['latency'], 0.5) * 1000:9.0f} {percentile(r['latency'], 0.99) * 1000:9.0f} "
        f"{r['errors']:6d}"
    )


class RayTarget:
    """A local Serve deployment; `deploy` replaces the application, the clients talk HTTP to it."""

    def __enter__(self) -> RayTarget:
        import ray
        from ray import serve

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ray.init(include_dashboard=False, logging_level="ERROR")
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        self.base = f"http://127.0.0.1:{port}"
        return self

    def deploy(self, config: ServeConfig) -> str:
        from ray import serve

        from components.serve.app import deployment

        serve.run(deployment(config), name="gptrecipe", route_prefix="/")
        return self.base

    def __exit__(self, *exc) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


class InProcessTarget:
    """A `Service` in this process, with one torch thread (what Ray gives a replica of num_cpus 1)."""

    service = None

    def __enter__(self) -> InProcessTarget:
        torch.set_num_threads(1)
        return self

    def deploy(self, config: ServeConfig):
        from components.serve.service import Service

        self.__exit__()
        self.service = Service(config)
        return self.service

    def engine_counts(self) -> tuple[int, int]:
        """(decoding steps, prefill forwards) so far: the engine is in this process to ask."""
        return self.service.engine.steps, self.service.engine.prefills

    def __exit__(self, *exc) -> None:
        if self.service is not None:
            self.service.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: a random tiny GPT made here)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--in-process", action="store_true", help="no Ray, no HTTP: Service in this process")
    parser.add_argument(
        "--stream-interval", type=float, help="ServeConfig.stream_interval (default: the config's default)"
    )
    args = parser.parse_args()

    serving = InProcessTarget() if args.in_process else RayTarget()
    with tempfile.TemporaryDirectory() as tmp, serving as where:
        model_dir = Path(args.model) if args.model else tiny_model(Path(tmp))
        levels = [int(x) for x in args.levels.split(",")]
        common = {"model_dir": str(model_dir), "max_ongoing_requests": 128, "num_cpus": 1}
        if args.stream_interval is not None:
            common["stream_interval"] = args.stream_interval
        target = where.deploy(ServeConfig(**common, max_batch_size=max(levels)))
        name = model_dir.name
        print(f"model {model_dir} ({torch.get_num_threads()} torch threads here, {os.cpu_count()} CPUs)")
        print(f"{args.seconds:g}s per level, max_tokens {args.max_tokens}, streaming chat clients, "
              f"stream_interval {ServeConfig(**common).stream_interval:g}s"
              f"{', in process (no Ray, no HTTP)' if args.in_process else ''}")  # fmt: skip
        print(f"{'clients':<22} {'req/s':>8} {'out tok/s':>10} {'ttft p50':>9} {'ttft p99':>9} "
              f"{'lat p50':>9} {'lat p99':>9} {'errors':>6}   (ms)")  # fmt: skip
        asyncio.run(run_level(target, name, 2, 2.0, args.max_tokens))  # warm-up
        results = {}
        for clients in levels:
            before = where.engine_counts() if args.in_process else None
            r = asyncio.run(run_level(target, name, clients, args.seconds, args.max_tokens))
            results[clients] = r
            print(report(f"{clients} (batching)", r), flush=True)
            if before:
                steps, prefills = (b - a for a, b in zip(before, where.engine_counts(), strict=True))
                # CPU per token is what the machine's other load does not change (much).
                print(f"{'':<22} engine: {steps / r['elapsed']:.0f} steps/s, {prefills / r['elapsed']:.0f} "
                      f"prefills/s, {r['tokens'] / max(steps, 1):.1f} tokens/step, "
                      f"{r['cpu'] / max(r['tokens'], 1) * 1000:.2f} CPU ms/token")  # fmt: skip

        target = where.deploy(ServeConfig(**common, max_batch_size=1))
        asyncio.run(run_level(target, name, 2, 2.0, args.max_tokens))  # warm-up
        single = asyncio.run(run_level(target, name, 16, args.seconds, args.max_tokens))
        print(report("16 (one at a time)", single), flush=True)
        if args.in_process:
            print(f"{'':<22} {single['cpu'] / max(single['tokens'], 1) * 1000:.2f} CPU ms/token")
        batched = results.get(16)
        if batched:
            gain = (batched["tokens"] / batched["elapsed"]) / max(single["tokens"] / single["elapsed"], 1e-9)
            print(f"batching's output-token throughput gain at 16 clients: {gain:.1f}x (target >= 4x)")


if __name__ == "__main__":
    main()
