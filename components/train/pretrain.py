"""Pretraining: a GPT trained on the token shards with Ray Train.

The stage (`pretrain`) runs in a Ray task that holds no CPU. It checks its inputs and config first --
a corpus too small for one batch, a sequence longer than the model's context, a tokenizer that does not
match the tokens, weights of another model shape -- so that a mistake is reported in seconds, before any
worker starts. Then it launches `train_worker` on `scaling.num_workers` Ray Train workers and, when they
finish, writes the `model` directory (config.json, model.safetensors, tokenizer.json).

The worker (`train_worker`) builds the model (fresh, from `init_from`, or from the latest checkpoint)
and hands `TrainLoop` its step -- accumulated micro-batches, one clipped update -- and its evaluations:
every `eval_every` steps the validation loss and bits per byte, every `sample_every` a few greedy
continuations of `sample_prompts` (an MLflow text artifact). The loop owns the schedule, the
`log_every` training metrics and progress lines, and the `checkpoint_every` checkpoints reported to Ray
Train. Rank 0 logs to the stage's MLflow run.

Resume. Ray Train keeps the checkpoints under the stage's scratch directory, which is stable for the
same cache key: a dead worker makes Ray Train restart the group from the latest checkpoint
(`scaling.max_failures`), and a rerun of the pipeline after a crash finds the same checkpoints. A
checkpoint holds everything the next step depends on (weights, AdamW state, step, data position, RNG),
so a resumed run computes the same losses as an uninterrupted one; see `MetricLogger` for how the MLflow
history stays free of duplicated steps, and `components.train.loop` for the loop itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from torch import Tensor, nn

from components.core.config import ConfigError
from components.core.stage import StageContext, stage
from components.eval.bits_per_byte import loss_and_bits_per_byte, token_byte_lengths
from components.eval.in_context_copy import copy_accuracy
from components.io.token_stream import (
    NotEnoughTokensError,
    PackedBatches,
    TokenStream,
    tokens_needed,
    val_rows,
)
from components.model.checkpoint import load_state_compatible, save_model_dir
from components.model.generate import generate
from components.model.gpt import GPT, GPTConfig, evaluating
from components.tokenizer.bpe import decode, encode_batch, eot_id, load_tokenizer, ordinary_token_count
from components.train.copy_rows import copy_batch
from components.train.loop import Periodic, StepResult, TrainLoop
from components.train.pretrain_config import SPEC, PretrainConfig
from components.train.trainer import (
    WEIGHTS_FILE,
    Runtime,
    gathered,
    lm_loss,
    load_checkpoint_weights,
    lr_at,
    make_optimizer,
    mean_over_workers,
    optimizer_step,
    set_lr,
    sum_over_workers,
    train_on_workers,
)

TOKENS_META = "tokens_meta.json"
TOKENIZER_FILE = "tokenizer.json"
UNIGRAM_SAMPLE_TOKENS = 1 << 27  # enough for a stable unigram entropy; bounds the scan of a huge corpus


# --- what the stage works out before starting workers ------------------------------------------------


@dataclass
class PretrainPlan:
    """Everything the workers need besides the config, checked and derived once by the stage."""

    model: GPTConfig
    seq_len: int
    max_steps: int
    tokens_per_step: int
    seed: int
    train_shards: list[str]
    val_shards: list[str]
    tokenizer_file: str
    eot_id: int
    token_bytes: list[int]  # UTF-8 bytes each token id stands for (0 for special tokens)
    unigram_entropy_nats: float
    train_tokens: int
    val_tokens: int
    init_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the token distribution `counts`: the loss of the best model that ignores
    context, the bar a language model must get far below."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def shard_paths(tokens_dir: Path, split: str) -> list[str]:
    return [str(p) for p in sorted((tokens_dir / split).glob("*.bin"))]


def plan_pretraining(
    config: PretrainConfig, tokens_dir: Path, tokenizer_file: Path, *, seed: int
) -> PretrainPlan:
    """Check the inputs against the config and derive the plan; raise ConfigError / CheckpointError /
    NotEnoughTokensError with what is wrong and what would fix it."""
    tok = load_tokenizer(tokenizer_file)
    vocab, eot = tok.get_vocab_size(), eot_id(tok)
    train, val = shard_paths(tokens_dir, "train"), shard_paths(tokens_dir, "val")
    if not train:
        raise NotEnoughTokensError(f"no training shards: {tokens_dir / 'train'} has no *.bin files")
    if not val:
        raise NotEnoughTokensError(f"no validation shards: {tokens_dir / 'val'} has no *.bin files")
    train_stream, val_stream = TokenStream(train), TokenStream(val)

    meta_file = tokens_dir / TOKENS_META
    meta = {}
    if meta_file.exists():
        import json

        meta = json.loads(meta_file.read_text())
    for where, (v, e) in {
        str(meta_file): (meta.get("vocab_size", vocab), meta.get("eot_id", eot)),
        str(tokens_dir / "train"): (train_stream.vocab_size, train_stream.eot_id),
        str(tokens_dir / "val"): (val_stream.vocab_size, val_stream.eot_id),
    }.items():
        if (v, e) != (vocab, eot):
            raise ConfigError(
                f"the tokens do not come from this tokenizer: {where} says vocab_size {v}, eot_id {e}; "
                f"{tokenizer_file} has vocab_size {vocab}, eot_id {eot}. Tokenize again with this tokenizer"
            )

    model = config.gpt_config(vocab)
    T = config.row_length
    if model.context_length < T:
        raise ConfigError(
            f"pretrain.seq_len {T} is longer than the model's context_length {model.context_length}: "
            "lower seq_len or raise context_length"
        )
    world = config.scaling.num_workers
    needed = tokens_needed(config.batch_size, T, config.grad_accum, world)
    if len(train_stream) < needed:
        what = "is empty" if len(train_stream) == 0 else f"has {len(train_stream):,} tokens"
        raise NotEnoughTokensError(
            f"the training split {what}, but one optimizer step needs {needed:,} tokens "
            f"(batch_size {config.batch_size} x grad_accum {config.grad_accum} x {world} worker(s) rows "
            f"of seq_len {T}, + 1): give more text, or lower batch_size / seq_len"
        )
    if len(val_stream) < T + 1:
        raise NotEnoughTokensError(
            f"the validation split has {len(val_stream):,} tokens; evaluation needs at least one row of "
            f"seq_len {T} + 1 = {T + 1} tokens: give more text or lower seq_len"
        )
    for prompt, ids in zip(
        config.sample_prompts, encode_batch(tok, config.sample_prompts, append_eot=False), strict=True
    ):
        if 1 + len(ids) + config.sample_tokens > model.context_length:
            raise ConfigError(
                f"sample prompt {prompt!r} ({len(ids)} tokens) + sample_tokens {config.sample_tokens} is "
                f"longer than the model's context_length {model.context_length}"
            )
    if config.init_from:
        check_weights_fit(Path(config.init_from), model)

    tokens_per_step = config.batch_size * config.grad_accum * world * T
    max_steps = config.max_steps or math.ceil(config.max_tokens / tokens_per_step)
    return PretrainPlan(
        model=model,
        seq_len=T,
        max_steps=max_steps,
        tokens_per_step=tokens_per_step,
        seed=seed,
        train_shards=train,
        val_shards=val,
        tokenizer_file=str(tokenizer_file),
        eot_id=eot,
        token_bytes=token_byte_lengths(tok, model.vocab_size),
        unigram_entropy_nats=unigram_entropy(train_stream.unigram_counts(UNIGRAM_SAMPLE_TOKENS)),
        train_tokens=len(train_stream),
        val_tokens=len(val_stream),
        init_from=config.init_from,
    )


def check_weights_fit(directory: Path, model: GPTConfig) -> None:
    """Refuse weights of another shape before any worker starts, naming each differing tensor. Only
    the shapes are read (a model on the meta device, nothing loaded)."""
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from: {path} does not exist (expected a model directory or checkpoint)"
        )
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        shapes = {name: torch.empty(f.get_slice(name).get_shape(), device="meta") for name in names}
    with torch.device("meta"):
        empty = GPT(model)
    load_state_compatible(empty, shapes, source=f"init_from weights {path}")


# --- the stage ----------------------------------------------------------------------------------------


@stage(SPEC)
def pretrain(ctx: StageContext, config: PretrainConfig, inputs: dict) -> dict:
    """Pretrains a GPT on the token shards with Ray Train (DDP/FSDP2), resumable from checkpoints."""
    tokens_dir = ctx.local_input(inputs["tokens"])
    tokenizer_file = ctx.local_input(inputs["tokenizer"]) / TOKENIZER_FILE
    seed = ctx.seed if config.seed is None else config.seed
    plan = plan_pretraining(config, tokens_dir, tokenizer_file, seed=seed)

    n_params = plan.model.num_params()
    ctx.log.info(
        "%s params, %d steps of %s tokens (%d train tokens, %.1f epochs)",
        f"{n_params:,}",
        plan.max_steps,
        f"{plan.tokens_per_step:,}",
        plan.train_tokens,
        plan.max_steps * plan.tokens_per_step / max(1, plan.train_tokens),
    )
    ctx.tracker.log_params(
        {f"gpt.{k}": v for k, v in plan.model.model_dump(mode="json").items()}
        | {"derived.max_steps": plan.max_steps, "derived.tokens_per_step": plan.tokens_per_step}
        | {"derived.params": n_params, "derived.seed": seed}
    )
    entropy = plan.unigram_entropy_nats
    ctx.log_metrics(
        {"data/unigram_entropy_nats": entropy, "data/unigram_entropy_bits": entropy / math.log(2)}, 0
    )

    model, progress = train_on_workers(
        ctx, train_worker, config, plan, lambda: GPT(plan.model), name="pretrain"
    )
    summary = {
        **progress["summary"],
        "steps": plan.max_steps,
        "params": n_params,
        "seq_len": plan.seq_len,
        "seed": seed,
        "unigram_entropy_nats": entropy,
        "train_tokens": plan.train_tokens,
    }
    with ctx.output_dir("model") as out:
        save_model_dir(
            model,
            out,
            tokenizer_path=tokenizer_file,
            extra={"stage": "pretrain", "training": summary},
            overwrite=True,
        )
    copying = {}
    if config.copy_warmup_steps or config.copy_rows:  # evaluate measures it for every model
        length = min(20, plan.model.context_length // 2)  # evaluate's 20 tokens, shown twice, if they fit
        copying = {"copy_accuracy": copy_accuracy(model, load_tokenizer(tokenizer_file), length=length)}
        if config.copy_warmup_steps:
            copying["copy_warmup_loss"] = summary["copy_warmup_loss"]
    ctx.report(
        val_loss=summary["val_loss"],
        val_bpb=summary["val_bpb"],
        unigram_entropy_nats=entropy,
        train_tokens_seen=summary["tokens_seen"],
        tokens_per_s=summary["tokens_per_s"],
        params=n_params,
        **copying,
    )
    return {
        "model": ctx.artifact("model", kind="model", params=n_params, **plan.model.model_dump(mode="json"))
    }


# --- the worker: the step and the evaluations (the loop is `TrainLoop`) --------------------------------


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker's pretraining (every rank runs it; rank 0 logs and writes)."""
    cfg = PretrainConfig.model_validate(loop_config["config"])
    plan: PretrainPlan = loop_config["plan"]

    def build_model(checkpoint: Path | None) -> GPT:
        model = GPT(plan.model)
        if checkpoint or plan.init_from:  # else the fresh initialisation
            load_checkpoint_weights(checkpoint or plan.init_from, model)
        return model

    loop = TrainLoop(
        "pretrain", cfg, plan, loop_config, build_model, flops_per_token=plan.model.flops_per_token()
    )
    runtime, model = loop.runtime, loop.model
    data = PackedBatches(
        TokenStream(plan.train_shards),
        batch_size=cfg.batch_size,
        seq_len=plan.seq_len,
        grad_accum=cfg.grad_accum,
        rank=runtime.rank,
        world_size=runtime.world_size,
        seed=plan.seed,
        position=loop.data_position,
    )
    val_ids, val_weights = val_rows(
        TokenStream(plan.val_shards),
        seq_len=plan.seq_len,
        n_rows=cfg.eval_batches * cfg.batch_size,
        rank=runtime.rank,
        world_size=runtime.world_size,
    )
    token_bytes = torch.tensor(plan.token_bytes, device=runtime.device)
    tokenizer = load_tokenizer(plan.tokenizer_file)
    ordinary = ordinary_token_count(tokenizer)
    if cfg.copy_warmup_steps and not loop.resumed:  # a checkpoint's weights have been through it
        copy_warmup(loop, cfg, plan.seed, ordinary)

    def train_step() -> StepResult:
        micro_batches = data.next_step()
        if not cfg.copy_rows:
            loss, grad_norm = optimizer_step(
                loop.train_model, loop.optimizer, micro_batches, runtime, grad_clip=cfg.grad_clip
            )
            extra: dict[str, float] = {}
        else:
            copy = copy_batch(
                cfg.copy_rows, cfg.copy_seq_len, ordinary, seed=plan.seed, step=loop.step, rank=runtime.rank
            )
            figures, grad_norm = mixed_copy_step(loop, micro_batches, copy, cfg.grad_clip)
            loss, extra = figures[0], {"train/copy_loss": mean_over_workers(figures[1], runtime)}
        return StepResult(
            work=plan.tokens_per_step,
            metrics=lambda: {
                "train/loss": mean_over_workers(loss, runtime),
                "train/grad_norm": float(grad_norm),
                "train/epoch": data.position.epoch
                + data.position.row / data.windows_in_epoch(data.position.epoch),
                **extra,
            },
        )

    def validate(step: int) -> None:
        val_loss, val_bpb = evaluate(model, val_ids, val_weights, token_bytes, runtime, cfg.batch_size)
        loop.summary |= {"val_loss": val_loss, "val_bpb": val_bpb}
        loop.logger.log({"val/loss": val_loss, "val/bpb": val_bpb}, step)
        loop.info("step %d: val loss %.4f, %s bits/byte", step, val_loss, _fmt(val_bpb))

    def samples(step: int) -> None:
        text = sample_text(model, tokenizer, cfg, plan, step, runtime)
        loop.logger.log_text(text, f"samples/step_{step:05d}.txt")

    periodic = [Periodic(cfg.eval_every, validate)]
    if cfg.sample_prompts:
        periodic.append(Periodic(cfg.sample_every, samples))
    loop.run(data, train_step, periodic)


def copy_warmup(loop: TrainLoop, cfg: PretrainConfig, seed: int, vocab: int) -> None:
    """`cfg.copy_warmup_steps` steps on copy rows (`components.train.copy_rows`) before the corpus, with
    their own AdamW, so the corpus's optimizer starts fresh. Not checkpointed: it is short and drawn from
    the seed, so a crash in it repeats the same steps. Its last loss goes into the stage's summary."""
    runtime = loop.runtime
    optimizer = make_optimizer(
        loop.model, lr=cfg.copy_lr, weight_decay=cfg.weight_decay, betas=cfg.betas, eps=cfg.eps,
        device=runtime.device,
    )  # fmt: skip
    steps, started = cfg.copy_warmup_steps, time.time()
    loop.info("copy warm-up: %d steps of %d x %d copy rows", steps, cfg.copy_batch_size, cfg.copy_seq_len)
    for step in range(steps):
        # Linear warm-up, then constant: the plateau ends late, and a decayed lr does not end it.
        set_lr(
            optimizer,
            lr_at(step, max_steps=steps, lr=cfg.copy_lr, warmup_steps=cfg.warmup_steps, min_lr_ratio=1),
        )
        batch = copy_batch(
            cfg.copy_batch_size, cfg.copy_seq_len, vocab, seed=seed, step=step, rank=runtime.rank, warmup=True
        )
        loss, _ = optimizer_step(loop.train_model, optimizer, [batch], runtime, grad_clip=cfg.grad_clip)
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            loss_value = mean_over_workers(loss, runtime)
            loop.info(
                "copy warm-up step %d/%d: loss %.3f (%.0fs)",
                step + 1,
                steps,
                loss_value,
                time.time() - started,
            )
    loop.summary["copy_warmup_loss"] = loss_value


def mixed_copy_step(
    loop: TrainLoop, micro_batches: list[tuple[Tensor, Tensor]], copy: tuple[Tensor, Tensor], grad_clip: float
) -> tuple[Tensor, Tensor]:
    """One update on the corpus micro-batches and one micro-batch of copy rows, every token weighted
    the same. Returns ([corpus loss, copy loss], gradient norm)."""
    corpus_tokens = micro_batches[0][0].numel()
    weights = [1.0] * len(micro_batches) + [copy[0].numel() / corpus_tokens]
    n, total = len(weights), sum(weights)

    def loss_fn(model: nn.Module, batch: tuple[int, tuple[Tensor, Tensor]], runtime: Runtime):
        i, rows = batch
        loss = lm_loss(model, rows, runtime)
        # optimizer_step divides by n; this makes the sum the token-weighted mean over all batches.
        figure = torch.zeros(2, device=runtime.device)
        figure[int(i == n - 1)] = loss.detach() * (n if i == n - 1 else n / (n - 1))
        return loss * weights[i] * n / total, figure

    batches = list(enumerate([*micro_batches, copy]))
    return optimizer_step(
        loop.train_model, loop.optimizer, batches, loop.runtime, grad_clip=grad_clip, loss_fn=loss_fn
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@torch.no_grad()
def evaluate(
    model: nn.Module, ids: Tensor, weights: Tensor, token_bytes: Tensor, runtime: Runtime, batch_size: int
) -> tuple[float, float | None]:
    """Validation loss (nats per token) and bits per byte over every worker's rows
    (`components.eval.bits_per_byte.loss_and_bits_per_byte`, summed over the workers)."""
    return loss_and_bits_per_byte(
        model,
        ids,
        weights,
        token_bytes,
        batch_size,
        autocast=runtime.autocast,
        reduce=lambda sums: sum_over_workers(sums, runtime),
    )


def sample_text(
    model: GPT, tokenizer: Tokenizer, cfg: PretrainConfig, plan: PretrainPlan, step: int, runtime: Runtime
) -> str:
    """Continuations of the sample prompts, each prompt starting a document (after end-of-text). Every
    worker generates (under FSDP2 the forward passes are collective); rank 0's text is logged."""
    prompts = [[plan.eot_id, *ids] for ids in encode_batch(tokenizer, cfg.sample_prompts, append_eot=False)]
    generator = torch.Generator(device=runtime.device).manual_seed(plan.seed * 100_003 + step)
    with evaluating(model), gathered(model), runtime.autocast():
        out = generate(
            model,
            prompts,
            max_new_tokens=cfg.sample_tokens,
            temperature=cfg.sample_temperature,
            stop_tokens=[plan.eot_id],
            pad_token_id=plan.eot_id,
            generator=generator,
        )
    lines = [f"# step {step}, temperature {cfg.sample_temperature}\n"]
    for prompt, response in zip(cfg.sample_prompts, out.response_lists(), strict=True):
        text = decode(tokenizer, [t for t in response if t != plan.eot_id])
        lines.append(f"[{prompt}]{text}\n")
    return "".join(lines)
