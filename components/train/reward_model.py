"""Reward model: the SFT model with a scalar head, trained on ranked preference pairs with Ray Train.

The model is `ScalarHeadModel` (`components.model.heads`) with its trunk initialised from the SFT model
and a zero head. A conversation's reward is the head's output at its last real token -- the closing
`<|im_end|>` of the rendered reply -- which has read the whole prompt and reply. Each pair's chosen and
rejected conversations (the same prompt) go through the model in one batch, and the loss is the
Bradley-Terry negative log-likelihood that the chosen one wins (InstructGPT, TRL's RewardTrainer):

    loss = mean over pairs of -log sigmoid(r_chosen - r_rejected)
           (+ center_rewards_coef * mean((r_chosen + r_rejected)^2), off by default)

The optional centring term (TRL's `center_rewards_coefficient`, off by default) only pins the rewards'
offset near 0, which the pairwise loss leaves free.

Metrics: per logged step the training loss, pair accuracy, mean margin (r_c - r_r) and reward mean/std;
every `eval_every` steps and at the end the same on the held-out pairs, plus accuracy per `kind`
(fact, arithmetic, ...) and per (chosen tier, rejected tier), and two reference points: the untrained
model (all rewards 0: every pair a tie, accuracy 0.5) and "the longer reply wins". Accuracy counts a
tie as half a pair. Once, before training, a third reference point: "the reply the SFT model finds more
likely wins" (`reply_logprobs`). It shows what the starting model already knows about the pairs -- on
the tiny world its likelihood ranks a correct answer above a wrong one for facts it was never taught in
SFT, which a reward read at one token has to learn to see.

At the end the final model scores every training pair; the mean and std of those rewards (chosen and
rejected together) are written into the directory's config.json as `reward_stats`, so RL can normalise
rewards as (r - mean) / std. A few held-out pairs with their scores are logged as a text artifact.

Output: the `reward_model` directory (`save_scalar_model_dir`, kind "reward_model").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.core.config import ConfigError, validate
from components.core.stage import StageContext, stage
from components.eval.multiple_choice import continuation_logprobs
from components.io.trl import DatasetError, load_preferences
from components.model.checkpoint import TOKENIZER_FILE, load_model_dir, read_model_config
from components.model.gpt import GPT, GPTConfig, evaluating
from components.model.heads import ScalarHeadModel, gather_last, save_scalar_model_dir
from components.tokenizer.bpe import eot_id, load_tokenizer
from components.tokenizer.chat import ChatTokens
from components.train.chat_batches import (
    EpochBatches,
    PairBatch,
    PairExample,
    RenderStats,
    collate_pairs,
    render_pairs,
)
from components.train.loop import Periodic, StepResult, TrainLoop
from components.train.preference_metrics import (
    kind_and_tier_accuracy,
    pair_accuracy,
    pair_metrics,
    shared_prefix_length,
)
from components.train.reward_model_config import SPEC, RewardModelConfig
from components.train.trainer import (
    Runtime,
    load_checkpoint_weights,
    optimizer_step,
    scores_across_workers,
    sum_over_workers,
    train_on_workers,
)

TRAIN_FILE = "train.jsonl"
TEST_FILE = "test.jsonl"


# --- the loss and the metrics -------------------------------------------------------------------------


def pairwise_loss(chosen: Tensor, rejected: Tensor, center_rewards_coef: float = 0.0) -> Tensor:
    """mean(-log sigmoid(r_chosen - r_rejected)) (+ center_rewards_coef * mean((r_c + r_r)^2)).
    `logsigmoid` rather than log(sigmoid(.)): exact for large negative margins, where sigmoid
    underflows to 0."""
    loss = -F.logsigmoid(chosen - rejected).mean()
    if center_rewards_coef:
        loss = loss + center_rewards_coef * ((chosen + rejected) ** 2).mean()
    return loss


# --- what the stage works out before starting workers ------------------------------------------------


@dataclass
class RewardPlan:
    model: GPTConfig
    sft_model_dir: str
    tokenizer_file: str
    train_file: str
    val_file: str
    max_length: int
    max_steps: int
    rows_per_step: int
    pad_id: int
    seed: int
    render: dict[str, float]


def plan_reward_model(
    config: RewardModelConfig, model_dir: Path, preferences_dir: Path, *, seed: int
) -> tuple[RewardPlan, RenderStats]:
    model_config = read_model_config(model_dir)
    gpt = validate(GPTConfig, model_config["model"], f"{model_dir / 'config.json'} (section 'model')")
    tokenizer_file = model_dir / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise FileNotFoundError(
            f"{tokenizer_file} is missing: the reward model renders with the SFT tokenizer"
        )
    tok = load_tokenizer(tokenizer_file)
    ChatTokens.of(tok)
    if tok.get_vocab_size() > gpt.vocab_size:
        raise ConfigError(
            f"the tokenizer in {model_dir} has {tok.get_vocab_size()} ids but the model only {gpt.vocab_size}"
        )
    max_length = min(config.max_length or gpt.context_length, gpt.context_length)
    files = {"train": preferences_dir / TRAIN_FILE, "val": preferences_dir / TEST_FILE}
    for name, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the {name} preference pairs)")
    pairs, stats = render_pairs(tok, load_preferences(str(files["train"])), max_tokens=max_length)
    if not pairs:
        raise DatasetError(
            f"{files['train']}: none of the {stats.records} pairs fits max_length {max_length}"
        )
    val, _ = render_pairs(tok, load_preferences(str(files["val"])), max_tokens=max_length)
    if not val:
        raise DatasetError(f"{files['val']}: no pair fits max_length {max_length}")
    rows_per_step = config.batch_size * config.grad_accum * config.scaling.num_workers
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * len(pairs) / rows_per_step))
    plan = RewardPlan(
        model=gpt,
        sft_model_dir=str(model_dir),
        tokenizer_file=str(tokenizer_file),
        train_file=str(files["train"]),
        val_file=str(files["val"]),
        max_length=max_length,
        max_steps=max_steps,
        rows_per_step=rows_per_step,
        pad_id=eot_id(tok),
        seed=seed,
        render=stats.as_metrics("render"),
    )
    return plan, stats


# --- the stage ----------------------------------------------------------------------------------------


@stage(SPEC)
def reward_model(ctx: StageContext, config: RewardModelConfig, inputs: dict) -> dict:
    """Trains a reward model (SFT trunk + scalar head) on preference pairs with Ray Train."""
    model_dir = ctx.local_input(inputs["model"])
    seed = ctx.seed if config.seed is None else config.seed
    plan, stats = plan_reward_model(config, model_dir, ctx.local_input(inputs["preferences"]), seed=seed)
    ctx.log.info(
        "%d pairs (%d skipped as too long), %d steps of %d pairs",
        stats.kept,
        stats.too_long,
        plan.max_steps,
        plan.rows_per_step,
    )
    ctx.tracker.log_params(
        {"derived.max_steps": plan.max_steps, "derived.max_length": plan.max_length, "derived.seed": seed}
    )
    ctx.log_metrics(plan.render, 0)

    model, progress = train_on_workers(
        ctx, train_worker, config, plan, lambda: ScalarHeadModel(GPT(plan.model)), name="reward_model"
    )
    summary = {**progress["summary"], "steps": plan.max_steps, "seed": seed, **plan.render}
    reward_stats = summary.pop("reward_stats")
    with ctx.output_dir("reward_model") as out:
        save_scalar_model_dir(
            model,
            out,
            kind="reward_model",
            tokenizer_path=plan.tokenizer_file,
            extra={"stage": "reward_model", "reward_stats": reward_stats, "training": summary},
            overwrite=True,
        )
    val = summary["val"]
    ctx.report(
        val_accuracy=val["accuracy"],
        val_margin=val["margin"],
        val_reward_mean=val["reward_mean"],
        val_reward_std=val["reward_std"],
        length_baseline_accuracy=val["length_baseline_accuracy"],
        loglik_baseline_accuracy=summary["loglik_baseline"]["loglik_baseline_accuracy"],
        train_accuracy=summary.get("train_accuracy"),
        reward_mean=reward_stats["mean"],
        reward_std=reward_stats["std"],
        skipped_too_long=stats.too_long,
    )
    return {"reward_model": ctx.artifact("reward_model", kind="reward_model", **reward_stats)}


# --- the worker: the step and the evaluations (the loop is `TrainLoop`) --------------------------------


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker's reward-model training (every rank runs it; rank 0 logs and writes)."""
    cfg = RewardModelConfig.model_validate(loop_config["config"])
    plan: RewardPlan = loop_config["plan"]
    tok = load_tokenizer(plan.tokenizer_file)

    def build_model(checkpoint: Path | None) -> ScalarHeadModel:
        if checkpoint is not None:
            model = ScalarHeadModel(GPT(plan.model))
            load_checkpoint_weights(checkpoint, model)
            return model
        trunk = GPT(plan.model)
        load_checkpoint_weights(plan.sft_model_dir, trunk)  # the SFT weights; the head starts at zero
        return ScalarHeadModel(trunk)

    loop = TrainLoop("reward_model", cfg, plan, loop_config, build_model, unit="pairs")
    runtime, model, summary = loop.runtime, loop.model, loop.summary
    train_records = load_preferences(plan.train_file)
    train_pairs, _ = render_pairs(tok, train_records, max_tokens=plan.max_length)
    data = EpochBatches(
        train_pairs,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        rank=runtime.rank,
        world_size=runtime.world_size,
        seed=plan.seed,
        position=loop.data_position,
    )
    val_records = load_preferences(plan.val_file)
    val_pairs, _ = render_pairs(tok, val_records, max_tokens=plan.max_length)
    val_pairs = val_pairs[: cfg.val_limit]
    if runtime.is_main and "loglik_baseline" not in summary:  # progress (and the summary) is rank 0's
        summary["loglik_baseline"] = loglik_baseline(plan, val_pairs, runtime, cfg.eval_batch_size)
        loop.logger.log({f"val/{k}": v for k, v in summary["loglik_baseline"].items()}, 0)

    def train_step() -> StepResult:
        batches = [collate_pairs(rows, pad_id=plan.pad_id) for rows in data.next_step()]
        stats = reward_step(
            loop.train_model,
            loop.optimizer,
            batches,
            runtime,
            grad_clip=cfg.grad_clip,
            center_rewards_coef=cfg.center_rewards_coef,
        )

        def metrics() -> dict[str, float | None]:
            values = sum_over_workers(stats, runtime) / runtime.world_size
            loss, accuracy, margin, reward_mean, reward_std, grad_norm = values.tolist()
            summary["train_accuracy"] = accuracy  # the loop keeps train_loss
            return {
                "train/loss": loss,
                "train/accuracy": accuracy,
                "train/margin": margin,
                "train/reward_mean": reward_mean,
                "train/reward_std": reward_std,
                "train/grad_norm": grad_norm,
                "train/epoch": data.epoch_progress(),
            }

        return StepResult(work=plan.rows_per_step, metrics=metrics)

    scores: dict[str, Tensor] = {}  # the last evaluation's rewards of the held-out pairs

    def validate(step: int) -> None:
        chosen, rejected = score_pairs(model, val_pairs, runtime, cfg.eval_batch_size, plan.pad_id)
        metrics = pair_metrics(chosen, rejected)
        metrics |= kind_and_tier_accuracy(val_pairs, chosen, rejected, "accuracy")
        metrics["length_baseline_accuracy"] = length_baseline(val_pairs)
        loop.logger.log({f"val/{k}": v for k, v in metrics.items()}, step)
        summary["val"], scores["chosen"], scores["rejected"] = metrics, chosen, rejected
        accuracy = metrics["accuracy"]
        loop.info("step %d: val pair accuracy %s", step, "n/a" if accuracy is None else f"{accuracy:.4f}")

    def final_stats(step: int) -> None:
        """The statistics RL normalises rewards with, over the training pairs' scores."""
        c, r = score_pairs(model, train_pairs[: cfg.stats_limit], runtime, cfg.eval_batch_size, plan.pad_id)
        rewards = torch.cat([c, r])
        summary["reward_stats"] = {
            "mean": float(rewards.mean()),
            "std": float(rewards.std()),
            "n": len(rewards),
            "over": "the final model's scores of the training pairs' chosen and rejected replies",
        }
        loop.logger.log(
            {"reward_stats/mean": float(rewards.mean()), "reward_stats/std": float(rewards.std())}, step
        )
        loop.logger.log_text(
            scored_examples(val_records, val_pairs, scores["chosen"], scores["rejected"], cfg.log_examples),
            "scored_pairs.txt",
        )

    # final_stats runs after the last evaluation (whose scores it shows), only at the last step.
    loop.run(data, train_step, [Periodic(cfg.eval_every, validate), Periodic(0, final_stats)])


def pair_step_loss(
    model: nn.Module, batch: PairBatch, runtime: Runtime, center_rewards_coef: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The pairwise loss of one micro-batch and its figures (loss, accuracy, margin, reward mean, reward
    std), for `optimizer_step`.

    The batch is right-padded, so the model runs without an attention mask (causal attention never lets
    a real token see a later pad) and the reward is read at each row's last real token."""
    ids = batch.input_ids.to(runtime.device, non_blocking=True)
    mask = batch.attention_mask.to(runtime.device, non_blocking=True)
    with runtime.autocast():
        values = model(ids)
    rewards = gather_last(values.float(), mask)
    B = batch.n_pairs
    chosen, rejected = rewards[:B], rewards[B:]
    loss = pairwise_loss(chosen, rejected, center_rewards_coef)
    with torch.no_grad():
        figures = torch.stack(
            [
                loss.detach(),
                pair_accuracy(chosen, rejected),
                (chosen - rejected).mean(),
                rewards.mean(),
                rewards.std() if len(rewards) > 1 else rewards.new_zeros(()),
            ]
        )
    return loss, figures


def reward_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[PairBatch],
    runtime: Runtime,
    *,
    grad_clip: float,
    center_rewards_coef: float = 0.0,
) -> Tensor:
    """One optimizer step over `micro_batches` (`PairBatch`es): `trainer.optimizer_step` with the
    pairwise loss. Returns this worker's mean (loss, accuracy, margin, reward mean, reward std) and the
    gradient norm as one tensor on the device."""
    loss_fn = functools.partial(pair_step_loss, center_rewards_coef=center_rewards_coef)
    figures, norm = optimizer_step(
        model, optimizer, micro_batches, runtime, grad_clip=grad_clip, loss_fn=loss_fn
    )
    return torch.cat([figures, norm.detach().float().reshape(1).to(runtime.device)])


@torch.no_grad()
def score_pairs(
    model: ScalarHeadModel, pairs: Sequence[PairExample], runtime: Runtime, batch_size: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) rewards of every pair, on the CPU, in `pairs` order, spread over the workers
    (`scores_across_workers`)."""

    def rewards(rows: Sequence[PairExample]) -> Tensor:
        batch = collate_pairs(rows, pad_id=pad_id)
        with runtime.autocast():
            values = model(batch.input_ids.to(runtime.device))
        return gather_last(values.float(), batch.attention_mask.to(runtime.device)).view(2, -1)

    with evaluating(model):
        chosen, rejected = scores_across_workers(pairs, runtime, batch_size, rewards, per_item=2)
    return chosen, rejected


def length_baseline(pairs: Sequence[PairExample]) -> float | None:
    """Pair accuracy of "the longer reply wins" (in tokens; a tie counts half): what a reward model
    that only measured length would score. None without pairs."""
    if not pairs:
        return None
    chosen = torch.tensor([float(len(p.chosen)) for p in pairs])
    rejected = torch.tensor([float(len(p.rejected)) for p in pairs])
    return float(pair_accuracy(chosen, rejected))


def reply_logprobs(
    lm: GPT, pairs: Sequence[PairExample], *, batch_size: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected): each reply's summed log-probability under the language model `lm`, over the
    tokens after the pair's common prefix (the prompt and any opening the two replies share: those
    tokens score the same in both, so leaving them out changes no comparison). A pair whose one
    rendering is a prefix of the other (identical replies) scores 0 and 0: a tie."""
    contexts, continuations, scored = [], [], []
    for i, p in enumerate(pairs):
        n = shared_prefix_length(p.chosen, p.rejected)
        if n in (len(p.chosen), len(p.rejected)):
            continue
        contexts += [p.chosen[:n], p.rejected[:n]]
        continuations += [p.chosen[n:], p.rejected[n:]]
        scored.append(i)
    logprobs = continuation_logprobs(lm, contexts, continuations, batch_size=batch_size, pad_token_id=pad_id)
    chosen, rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    chosen[scored], rejected[scored] = torch.tensor(logprobs[0::2]), torch.tensor(logprobs[1::2])
    return chosen, rejected


def loglik_baseline(
    plan: RewardPlan, pairs: Sequence[PairExample], runtime: Runtime, batch_size: int
) -> dict[str, float]:
    """Pair accuracy of "the reply the SFT model finds more likely wins" on `pairs`, overall, per kind
    and per tier pair: a few forward passes over the held-out pairs, once, on rank 0."""
    lm, _ = load_model_dir(plan.sft_model_dir, device=runtime.device)
    chosen, rejected = reply_logprobs(lm, pairs, batch_size=batch_size, pad_id=plan.pad_id)
    del lm
    prefix = "loglik_baseline"
    return {
        f"{prefix}_accuracy": float(pair_accuracy(chosen, rejected)),
        **kind_and_tier_accuracy(pairs, chosen, rejected, prefix),
    }


def scored_examples(
    records: Sequence[dict],
    pairs: Sequence[PairExample],
    chosen: Tensor,
    rejected: Tensor,
    limit: int,
) -> str:
    """A few held-out pairs with their rewards, one per kind and tier pair first, as readable text."""
    seen, picked = set(), []
    for i, p in enumerate(pairs):
        key = (p.kind, p.info.get("chosen_tier"), p.info.get("rejected_tier"))
        if key not in seen:
            seen.add(key)
            picked.append(i)
    picked = (picked + [i for i in range(len(pairs)) if i not in set(picked)])[:limit]
    lines = ["# held-out pairs: reward of the chosen and of the rejected reply\n\n"]
    for i in picked:
        record, p = records[pairs[i].index], pairs[i]
        verdict = "right" if chosen[i] > rejected[i] else "WRONG"
        lines.append(
            f"## {p.kind}: {p.info.get('chosen_tier')} vs {p.info.get('rejected_tier')} ({verdict})\n"
        )
        for m in record["prompt"]:
            lines.append(f"[{m['role']}] {m['content']}\n")
        lines.append(f"chosen   r={float(chosen[i]):+.3f}: {record['chosen'][-1]['content']}\n")
        lines.append(f"rejected r={float(rejected[i]):+.3f}: {record['rejected'][-1]['content']}\n\n")
    return "".join(lines)
