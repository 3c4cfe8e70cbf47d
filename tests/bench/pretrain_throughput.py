"""Pretraining throughput on CPU: our Ray Train loop against a plain single-process PyTorch loop.

    .venv/bin/python tests/bench/pretrain_throughput.py                  # tiny model, 2 threads
    .venv/bin/python tests/bench/pretrain_throughput.py --threads 1 --steps 20
    .venv/bin/python tests/bench/pretrain_throughput.py --corpus DIR     # DIR/tokens, DIR/tokenizer.json

Both loops train the same model (the `tiny` shape unless told otherwise) on the same B x T rows of the
tiny world's English text with the same AdamW groups and gradient clipping, with the same number of
torch threads. "ours" is the pretrain stage's worker (`train_worker`) on one Ray Train worker holding
`--threads` CPUs, its tokens/s as it measures it (optimizer steps only: evaluation, samples and the
checkpoint are timed separately, and step 1 is warm-up); "plain" is the shortest loop that does the same
work, timed the same way. The target is ours >= 0.9x plain. Ray Train's start-up (seconds, once per
run) is printed apart. Prints figures, asserts nothing; on a shared machine the figures are noisy, so
each path runs `--repeats` times, interleaved, and the fastest run of each is compared. Both loops use
the same compute dtype (`--dtype`; auto = bf16 on a CPU with native bf16). The run is 150 steps long
because Ray starts idle worker processes in its first seconds, which take CPU from a short run: in bf16
(0.4 s a step) 30 steps gave 0.79x and 150 steps 0.94x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

import numpy as np
import torch

from components.io.token_shards import ShardWriter
from components.io.token_stream import TokenStream
from components.model.gpt import GPT
from components.tokenizer.bpe import TokenizerConfig, encode_batch, eot_id, train_tokenizer
from components.train.pretrain import PretrainConfig, PretrainPlan, plan_pretraining, train_worker
from components.train.trainer import (
    DTypeSetting,
    ScalingSettings,
    launch,
    read_progress,
    resolve_dtype,
)
from components.train.trainer_config import DTYPE_HELP


def build_corpus(root: Path) -> Path:
    """The tiny world's good English pages -> a 4096 BPE -> train/val shards under root."""
    from components.world.crawl import CrawlConfig, generate_crawl

    generate_crawl(CrawlConfig(), root / "crawl")
    texts = []
    with open(root / "crawl" / "labels.jsonl") as f:
        for line in f:
            page = json.loads(line)
            if page["category"] == "good" and page["language"] == "en" and page.get("main_text"):
                texts.append(page["main_text"])
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=4096))
    tok.save(str(root / "tokenizer.json"))
    random.Random(0).shuffle(texts)
    n_val = max(1, len(texts) // 20)
    for split, docs in (("val", texts[:n_val]), ("train", texts[n_val:])):
        (root / "tokens" / split).mkdir(parents=True)
        with ShardWriter(root / "tokens" / split / "part-00000.bin", tok.get_vocab_size(), eot_id(tok)) as w:
            for ids in encode_batch(tok, docs):
                w.write(ids)
    return root


def plain_loop(config: PretrainConfig, plan: PretrainPlan, steps: int) -> float:
    """tokens/s of the shortest loop doing the same work: random windows, forward, backward, clip, AdamW."""
    tokens = TokenStream(plan.train_shards).read(0, plan.train_tokens)
    rng = np.random.default_rng(0)
    B, T = config.batch_size, plan.seq_len
    torch.manual_seed(plan.seed)
    model = GPT(plan.model)
    groups = model.optimizer_groups(config.weight_decay)
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    dtype = resolve_dtype(config.dtype, torch.device("cpu"))  # the same compute dtype as ours
    started = None
    for step in range(steps):
        if step == 1:  # step 0 is warm-up, as in ours
            started = time.perf_counter()
        starts = rng.integers(0, len(tokens) - T - 1, size=B * config.grad_accum)
        rows = torch.from_numpy(np.stack([tokens[s : s + T + 1] for s in starts]))
        for micro in rows.split(B):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                _, loss = model(micro[:, :-1], micro[:, 1:])
            (loss / config.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return (steps - 1) * B * config.grad_accum * T / seconds


def ours(config: PretrainConfig, plan: PretrainPlan, storage: str) -> tuple[float, float]:
    """(tokens/s as the worker measured it, wall seconds of the whole Ray Train run)."""
    loop_config = {"config": config.model_dump(mode="json"), "plan": plan, "tracker": None}
    started = time.perf_counter()
    result = launch(
        train_worker,
        loop_config,
        config.scaling,
        name=f"bench-{time.time_ns()}",
        storage_path=storage,
        keep_checkpoints=1,
    )
    wall = time.perf_counter() - started
    with result.checkpoint.as_directory() as d:
        return read_progress(d)["summary"]["tokens_per_s"], wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, help="directory with tokens/{train,val} and tokenizer.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--dtype",
        choices=get_args(DTypeSetting),
        default="auto",
        help=f"{DTYPE_HELP} Both loops use it.",
    )
    parser.add_argument(
        "--ray-niceness",
        type=int,
        default=0,
        help="niceness of Ray's worker processes (Ray's own default is 15, which on a machine shared with "
        "other work hands them less CPU than the plain loop gets; 0 compares like with like)",
    )
    args = parser.parse_args()
    os.environ["RAY_worker_niceness"] = str(args.ray_niceness)  # noqa: SIM112 (Ray spells it so)

    import ray

    with tempfile.TemporaryDirectory(prefix="gptrecipe-bench-") as tmp:
        corpus = args.corpus or build_corpus(Path(tmp, "corpus"))
        config = PretrainConfig(
            depth=args.depth,
            context_length=args.context,
            batch_size=args.batch_size,
            max_steps=args.steps,
            log_every=10,
            eval_every=0,  # evaluation and samples only after the last step, outside the timing
            sample_prompts=[],
            checkpoint_every=args.steps,
            scaling=ScalingSettings(num_workers=1, cpus_per_worker=args.threads, max_failures=0),
            torch_threads=args.threads,
            dtype=args.dtype,
        )
        plan = plan_pretraining(config, corpus / "tokens", corpus / "tokenizer.json", seed=0)
        print(
            f"model: {plan.model.num_params() / 1e6:.2f}M params (depth {args.depth}), "
            f"rows {args.batch_size} x {plan.seq_len}, {args.steps} steps, {args.threads} torch threads, "
            f"{resolve_dtype(config.dtype, torch.device('cpu'))}"
        )
        # The dashboard serves the state API that Ray Train's placement-group cleaner polls.
        ray.init(num_cpus=args.threads, include_dashboard=True, logging_level="WARNING")
        torch.set_num_threads(args.threads)
        plain_runs, our_runs, walls = [], [], []
        for _ in range(args.repeats):
            plain_runs.append(plain_loop(config, plan, args.steps))
            print(f"  plain loop: {plain_runs[-1]:,.0f} tokens/s", flush=True)
            tps, wall = ours(config, plan, str(Path(tmp, "ray_train")))
            our_runs.append(tps)
            walls.append(wall)
            print(f"  ours (Ray Train, 1 worker): {tps:,.0f} tokens/s; run took {wall:.1f}s", flush=True)
        ray.shutdown()
    plain, mine = max(plain_runs), max(our_runs)
    train_s = args.steps * plan.tokens_per_step / mine
    print(f"plain {plain:,.0f} tokens/s, ours {mine:,.0f} tokens/s: ratio {mine / plain:.2f}x (goal >= 0.9x)")
    print(f"Ray Train overhead per run (start-up, eval, checkpoint): about {min(walls) - train_s:.0f}s")


if __name__ == "__main__":
    main()
