"""Load benchmark of the serving deployment (prints figures, asserts nothing).

Starts a local Ray Serve deployment of a tiny model (a random-init GPT and a quickly trained BPE
tokenizer, unless --model gives a model directory) and runs 1, 4, 16 and 64 concurrent streaming chat
clients, each for --seconds. Per level: requests/s, output tokens/s, p50/p99 time to first token and
total latency, errors. Then the same 16 clients against a deployment that decodes one sequence at a time
(max_batch_size 1): batching's throughput gain.

    .venv/bin/python tests/bench/serve_load.py [--model DIR] [--seconds 10] [--max-tokens 32]
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


async def one_client(http: httpx2.AsyncClient, url: str, model: str, k: int, deadline: float, out: dict):
    i = 0
    while time.perf_counter() < deadline:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPTS[(k + i) % len(PROMPTS)]}],
            "max_tokens": out["max_tokens"],
            "temperature": 0.8,
            "seed": k * 1000 + i,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
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
        end = time.perf_counter()
        out["ttft"].append((first or end) - start)
        out["latency"].append(end - start)
        out["tokens"] += tokens
        out["requests"] += 1


async def run_level(base: str, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    out = {"requests": 0, "tokens": 0, "errors": 0, "ttft": [], "latency": [], "max_tokens": max_tokens}
    limits = httpx2.Limits(max_connections=clients + 4)
    async with httpx2.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        deadline = start + seconds
        url = f"{base}/v1/chat/completions"
        await asyncio.gather(*(one_client(http, url, model, k, deadline, out) for k in range(clients)))
        out["elapsed"] = time.perf_counter() - start  # includes finishing the requests in flight
    return out


def report(label: str, r: dict) -> str:
    el = r["elapsed"]
    return (
        f"{label:<22} {r['requests'] / el:8.2f} {r['tokens'] / el:10.1f} "
        f"{percentile(r['ttft'], 0.5) * 1000:9.0f} {percentile(r['ttft'], 0.99) * 1000:9.0f} "
        f"{percentile(r['latency'], 0.5) * 1000:9.0f} {percentile(r['latency'], 0.99) * 1000:9.0f} "
        f"{r['errors']:6d}"
    )


def deploy(config: ServeConfig) -> None:
    from ray import serve

    from components.serve.app import deployment

    serve.run(deployment(config), name="gptrecipe", route_prefix="/")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: a random tiny GPT made here)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,16,64")
    args = parser.parse_args()

    import ray
    from ray import serve

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else tiny_model(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        ray.init(include_dashboard=False, logging_level="ERROR")
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            levels = [int(x) for x in args.levels.split(",")]
            common = {"model_dir": str(model_dir), "max_ongoing_requests": 128, "num_cpus": 1}
            deploy(ServeConfig(**common, max_batch_size=max(levels)))
            name = model_dir.name
            print(f"model {model_dir} ({torch.get_num_threads()} torch threads here, {os.cpu_count()} CPUs)")
            print(f"{args.seconds:g}s per level, max_tokens {args.max_tokens}, streaming chat clients")
            print(f"{'clients':<22} {'req/s':>8} {'out tok/s':>10} {'ttft p50':>9} {'ttft p99':>9} "
                  f"{'lat p50':>9} {'lat p99':>9} {'errors':>6}   (ms)")  # fmt: skip
            asyncio.run(run_level(base, name, 2, 2.0, args.max_tokens))  # warm-up
            results = {}
            for clients in levels:
                results[clients] = asyncio.run(run_level(base, name, clients, args.seconds, args.max_tokens))
                print(report(f"{clients} (batching)", results[clients]), flush=True)

            deploy(ServeConfig(**common, max_batch_size=1))
            asyncio.run(run_level(base, name, 2, 2.0, args.max_tokens))  # warm-up
            single = asyncio.run(run_level(base, name, 16, args.seconds, args.max_tokens))
            print(report("16 (one at a time)", single), flush=True)
            batched = results.get(16)
            if batched:
                gain = (batched["tokens"] / batched["elapsed"]) / max(
                    single["tokens"] / single["elapsed"], 1e-9
                )
                print(f"batching's output-token throughput gain at 16 clients: {gain:.1f}x (target >= 4x)")
        finally:
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
