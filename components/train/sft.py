"""Supervised fine-tuning: the pretrained GPT learns to answer in the chat template, with Ray Train.

The stage (`sft`) runs in a Ray task that holds no CPU. It reads the pretrained model directory (its
config and tokenizer), renders the SFT conversations once to check them and to size the run (epochs ->
optimizer steps), then launches `train_worker` on `scaling.num_workers` Ray Train workers and, when they
finish, writes the `model` directory in pretraining's format (config.json, model.safetensors,
tokenizer.json), so every later stage loads it with `load_model_dir`.

The objective is pretraining's next-token loss, on the assistant's tokens only (`chat_batches`: the
loss mask is the template's `assistant_mask` shifted to the targets; prompt, system and user tokens
are IGNORE_INDEX). Batches are right-padded and run without an attention mask, which under causal
attention gives the same logits as the model's left-padded convention (see `chat_batches`).

The worker (`train_worker`) starts from the latest checkpoint or the pretrained weights; at a fresh
start the BASE model is evaluated first (step 0): validation loss on the held-out SFT conversations'
assistant tokens and `chat_eval` on the held-out prompts, the same template, the same greedy decoding.
Then `TrainLoop` (`components.train.loop`) runs its step -- accumulated micro-batches, one clipped
update -- with the schedule, the `log_every` training metrics and the `checkpoint_every` checkpoints
(weights, AdamW, data position, RNG, and the base model's figures, so a resumed run still reports them);
the stage adds the validation loss every `eval_every` steps and, every `chat_eval_every` (and at the
end), `chat_eval` of the SFT model, whose sample conversations are logged as MLflow text artifacts.

Headline (`ctx.report`): `accuracy` and `format_compliance` of the SFT model beside `base_accuracy` and
`base_format_compliance` of the pretrained model on the same prompts, `val_loss` beside `base_val_loss`,
and the per-task accuracies in MLflow (`eval/accuracy.<task>`, `base/accuracy.<task>`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from components.core.config import ConfigError, validate
from components.core.stage import StageContext, stage
from components.eval.chat_eval import ChatEval, chat_eval, format_samples, summarize
from components.io.trl import DatasetError, load_prompts, load_sft
from components.model.checkpoint import TOKENIZER_FILE, read_model_config, save_model_dir
from components.model.gpt import GPT, GPTConfig, evaluating
from components.tokenizer.bpe import eot_id, load_tokenizer
from components.tokenizer.chat import ChatTokens
from components.train.chat_batches import (
    IGNORE_INDEX,
    ChatExample,
    EpochBatches,
    RenderStats,
    collate_sft,
    pack_rows,
    render_sft,
)
from components.train.loop import Periodic, StepResult, TrainLoop
from components.train.sft_config import SPEC, SFTConfig
from components.train.trainer import (
    Runtime,
    gathered,
    load_checkpoint_weights,
    mean_over_workers,
    optimizer_step,
    sum_over_workers,
    train_on_workers,
)

TRAIN_FILE = "train.jsonl"
TEST_FILE = "test.jsonl"


# --- what the stage works out before starting workers ------------------------------------------------


@dataclass
class SFTPlan:
    """Everything the workers need besides the config, checked and derived once by the stage."""

    model: GPTConfig
    base_model_dir: str
    tokenizer_file: str
    train_file: str
    val_file: str
    prompts_file: str
    max_length: int
    max_steps: int
    rows_per_epoch: int
    rows_per_step: int
    pad_id: int
    seed: int
    render: dict[str, float]


def plan_sft(
    config: SFTConfig, model_dir: Path, sft_dir: Path, prompts_dir: Path, *, seed: int
) -> tuple[SFTPlan, RenderStats]:
    """Check the inputs against the config and derive the plan; errors say what is wrong and where."""
    model_config = read_model_config(model_dir)
    gpt = validate(GPTConfig, model_config["model"], f"{model_dir / 'config.json'} (section 'model')")
    tokenizer_file = model_dir / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise FileNotFoundError(
            f"{tokenizer_file} is missing: SFT renders conversations with the model's own tokenizer"
        )
    tok = load_tokenizer(tokenizer_file)
    ChatTokens.of(tok)  # the chat template's special tokens must exist
    if tok.get_vocab_size() > gpt.vocab_size:
        raise ConfigError(
            f"the tokenizer in {model_dir} has {tok.get_vocab_size()} ids but the model only "
            f"{gpt.vocab_size}: they do not belong together"
        )
    max_length = min(config.max_length or gpt.context_length, gpt.context_length)
    if config.max_new_tokens >= gpt.context_length:
        raise ConfigError(
            f"sft.max_new_tokens {config.max_new_tokens} leaves no room for a prompt in the model's "
            f"context_length {gpt.context_length}"
        )
    files = {
        "train": sft_dir / TRAIN_FILE,
        "val": sft_dir / TEST_FILE,
        "prompts": prompts_dir / TEST_FILE,
    }
    for name, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the {name} data of SFT)")
    load_prompts(str(files["prompts"]))  # validated now, not after training
    examples, stats = render_sft(tok, load_sft(str(files["train"])), max_tokens=max_length)
    if not examples:
        raise DatasetError(
            f"{files['train']}: none of the {stats.records} conversations fits max_length {max_length} "
            f"({stats.too_long} too long, {stats.nothing_to_learn} without an assistant token left)"
        )
    val, _ = render_sft(tok, load_sft(str(files["val"])), max_tokens=max_length)
    if not val:
        raise DatasetError(f"{files['val']}: no conversation fits max_length {max_length}")

    pack = functools.partial(pack_rows, max_length=max_length) if config.packing else None
    world = config.scaling.num_workers
    order = EpochBatches(
        examples, batch_size=config.batch_size, grad_accum=config.grad_accum, world_size=world, pack=pack
    )
    rows_per_epoch = order.rows_in_epoch(0)  # with packing the later epochs differ by a row or two
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * rows_per_epoch / order.rows_per_step))
    plan = SFTPlan(
        model=gpt,
        base_model_dir=str(model_dir),
        tokenizer_file=str(tokenizer_file),
        train_file=str(files["train"]),
        val_file=str(files["val"]),
        prompts_file=str(files["prompts"]),
        max_length=max_length,
        max_steps=max_steps,
        rows_per_epoch=rows_per_epoch,
        rows_per_step=order.rows_per_step,
        pad_id=eot_id(tok),
        seed=seed,
        render=stats.as_metrics("render"),
    )
    return plan, stats


# --- the stage ----------------------------------------------------------------------------------------


@stage(SPEC)
def sft(ctx: StageContext, config: SFTConfig, inputs: dict) -> dict:
    """Fine-tunes the pretrained GPT on chat conversations (assistant-only loss) with Ray Train."""
    model_dir = ctx.local_input(inputs["model"])
    seed = ctx.seed if config.seed is None else config.seed
    plan, stats = plan_sft(
        config, model_dir, ctx.local_input(inputs["sft"]), ctx.local_input(inputs["prompts"]), seed=seed
    )
    ctx.log.info(
        "%d conversations (%d skipped as too long, %d truncated), %d rows per epoch, %d steps of %d rows",
        stats.kept,
        stats.too_long,
        stats.truncated,
        plan.rows_per_epoch,
        plan.max_steps,
        plan.rows_per_step,
    )
    ctx.tracker.log_params(
        {"derived.max_steps": plan.max_steps, "derived.max_length": plan.max_length, "derived.seed": seed}
        | {"derived.rows_per_epoch": plan.rows_per_epoch, "derived.rows_per_step": plan.rows_per_step}
    )
    ctx.log_metrics(plan.render, 0)

    model, progress = train_on_workers(ctx, train_worker, config, plan, lambda: GPT(plan.model), name="sft")
    summary = {**progress["summary"], "steps": plan.max_steps, "seed": seed, **plan.render}
    with ctx.output_dir("model") as out:
        save_model_dir(
            model,
            out,
            tokenizer_path=plan.tokenizer_file,
            extra={"stage": "sft", "training": summary},
            overwrite=True,
        )
    final_eval, base_eval = summary.get("eval", {}), summary.get("base", {})
    ctx.report(
        accuracy=final_eval.get("accuracy"),
        base_accuracy=base_eval.get("accuracy"),
        format_compliance=final_eval.get("format_compliance"),
        base_format_compliance=base_eval.get("format_compliance"),
        val_loss=summary.get("val_loss"),
        base_val_loss=summary.get("base_val_loss"),
        train_loss=summary.get("train_loss"),
        skipped_too_long=stats.too_long,
    )
    return {"model": ctx.artifact("model", kind="model", stage="sft", **plan.model.model_dump(mode="json"))}


# --- the worker: the step and the evaluations (the loop is `TrainLoop`) --------------------------------


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker's SFT (every rank runs it; rank 0 logs and writes)."""
    cfg = SFTConfig.model_validate(loop_config["config"])
    plan: SFTPlan = loop_config["plan"]
    tok = load_tokenizer(plan.tokenizer_file)

    def build_model(checkpoint: Path | None) -> GPT:
        model = GPT(plan.model)
        load_checkpoint_weights(checkpoint or plan.base_model_dir, model)
        return model

    loop = TrainLoop("sft", cfg, plan, loop_config, build_model, flops_per_token=plan.model.flops_per_token())
    runtime, model, summary = loop.runtime, loop.model, loop.summary
    train_examples, _ = render_sft(tok, load_sft(plan.train_file), max_tokens=plan.max_length)
    data = EpochBatches(
        train_examples,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        rank=runtime.rank,
        world_size=runtime.world_size,
        seed=plan.seed,
        pack=functools.partial(pack_rows, max_length=plan.max_length) if cfg.packing else None,
        position=loop.data_position,
    )
    val_examples, _ = render_sft(tok, load_sft(plan.val_file), max_tokens=plan.max_length)
    val_examples = val_examples[: cfg.val_limit]
    prompts = load_prompts(plan.prompts_file)[: cfg.eval_limit]

    def evaluate_chat(tag: str) -> ChatEval:
        result = distributed_chat_eval(model, tok, prompts, cfg, runtime, seed=plan.seed)
        loop.logger.log_text(
            format_samples(result.samples, title=f"{tag}, greedy", limit=cfg.log_samples),
            f"samples/{tag.replace(' ', '_')}.txt",
        )
        return result

    if not loop.resumed:  # step 0: the base model, on the same data and prompts
        base_val = val_loss(model, val_examples, runtime, cfg.eval_batch_size, plan.pad_id)
        summary["base_val_loss"] = base_val
        loop.logger.log({"val/loss": base_val}, 0)
        if cfg.eval_base:
            base = evaluate_chat("step_00000 base model")
            summary["base"] = base.metrics
            loop.logger.log({f"eval/{k}": v for k, v in base.metrics.items()}, 0)
            loop.logger.log({f"base/{k}": v for k, v in base.metrics.items()}, 0)

    def train_step() -> StepResult:
        batches = [collate_sft(rows, pad_id=plan.pad_id) for rows in data.next_step()]
        # Right-padded and causal: no attention mask needed (see chat_batches).
        loss, grad_norm = optimizer_step(
            loop.train_model,
            loop.optimizer,
            [(b.input_ids, b.targets) for b in batches],
            runtime,
            grad_clip=cfg.grad_clip,
        )
        return StepResult(
            # this worker's real tokens times the workers: all workers' up to their padding differences
            work=sum(int(b.attention_mask.sum()) for b in batches) * runtime.world_size,
            metrics=lambda: {
                "train/loss": mean_over_workers(loss, runtime),
                "train/grad_norm": float(grad_norm),
                "train/epoch": data.epoch_progress(),
            },
        )

    def validate(step: int) -> None:
        summary["val_loss"] = val_loss(model, val_examples, runtime, cfg.eval_batch_size, plan.pad_id)
        loop.logger.log({"val/loss": summary["val_loss"]}, step)

    def chat(step: int) -> None:
        result = evaluate_chat(f"step_{step:05d}")
        summary["eval"] = result.metrics
        loop.logger.log({f"eval/{k}": v for k, v in result.metrics.items()}, step)
        loop.info(
            "step %d: chat accuracy %s, format compliance %s",
            step,
            _fmt(result.metrics.get("accuracy")),
            _fmt(result.metrics.get("format_compliance")),
        )

    loop.run(data, train_step, [Periodic(cfg.eval_every, validate), Periodic(cfg.chat_eval_every, chat)])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@torch.no_grad()
def val_loss(
    model: nn.Module, examples: list[ChatExample], runtime: Runtime, batch_size: int, pad_id: int
) -> float | None:
    """Mean NLL per assistant token over every worker's share of `examples` (rank r takes examples r,
    r + world_size, ...; every rank runs the same number of batches, as FSDP's collectives need)."""
    with evaluating(model):
        mine = examples[runtime.rank :: runtime.world_size]
        per_rank = -(-len(examples) // runtime.world_size)
        sums = torch.zeros(2, dtype=torch.float64, device=runtime.device)  # nll, tokens
        for lo in range(0, per_rank, batch_size):
            rows = mine[lo : lo + batch_size] or examples[:1]  # a rank out of rows still joins, weight 0
            weight = 1.0 if mine[lo : lo + batch_size] else 0.0
            batch = collate_sft(rows, pad_id=pad_id)
            x, y = batch.input_ids.to(runtime.device), batch.targets.to(runtime.device)
            with runtime.autocast():
                logits, _ = model(x)
            nll = F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            sums += weight * torch.stack([nll.double(), (y != IGNORE_INDEX).sum().double()])
        sums = sum_over_workers(sums, runtime)
    nll, tokens = sums.tolist()
    return nll / tokens if tokens else None  # no assistant token to score: no loss, not a number


def distributed_chat_eval(
    model: GPT, tok: Tokenizer, records: list[dict], cfg: SFTConfig, runtime: Runtime, *, seed: int
) -> ChatEval:
    """`chat_eval` from inside a Ray Train worker group; every rank must call it.

    With DDP each rank evaluates every world_size-th record and rank 0 gathers the samples. Under FSDP2
    every forward is a collective that all ranks must join with the same number of steps, so every rank
    evaluates all records (the same greedy replies) and rank 0's samples are used."""
    sharded = cfg.strategy != "fsdp" and runtime.world_size > 1
    mine = records[runtime.rank :: runtime.world_size] if sharded else records
    kwargs = {"max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.eval_batch_size, "seed": seed}
    with gathered(model), runtime.autocast():
        result = chat_eval(model, tok, mine, **kwargs)
    if not sharded:
        return result
    gathered_samples: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(gathered_samples, (result.samples, result.metrics["skipped_too_long"]))
    samples = [s for part, _ in gathered_samples for s in part]
    metrics = summarize(samples)
    metrics["skipped_too_long"] = float(sum(skipped for _, skipped in gathered_samples))
    return ChatEval(metrics, samples)
