"""Direct preference optimisation: the SFT model trained on the preference pairs themselves, no reward model
and no sampling, with Ray Train.

DPO (Rafailov et al. 2023) reads the RLHF objective backwards: the policy that maximises reward minus
beta * KL(pi || pi_ref) makes beta * log(pi(y|x) / pi_ref(y|x)) a reward (up to a term of the prompt
alone), so a Bradley-Terry loss on that *implicit reward* trains the policy directly. With

    h = [log pi(y_c|x) - log pi_ref(y_c|x)] - [log pi(y_r|x) - log pi_ref(y_r|x)]

the losses (config `loss`) are, per pair, averaged over a batch:

    sigmoid   -log sigmoid(beta * h)            DPO: the reward model's loss on the implicit reward
    ipo       (h - 1 / (2 * beta))^2            IPO (Azar et al. 2023): a finite target margin, so the
                                                 policy is not pushed ever further from the reference

The reference pi_ref is the frozen SFT model. It never changes, so its log-probs are computed once per
pair before training (the SFT weights in eval mode, under the same autocast as the policy, so that the
first step's policy and reference agree) and travel with the pairs: no second model during training.

Which tokens count. A reply's log-prob is summed over the tokens after the pair's shared prefix -- the
prompt, the assistant header and any opening the two replies share (`shared_prefix_length`, as the
reward model's likelihood baseline scores them). Those tokens have the same log-prob in both sequences
under any causal model, so h, the loss, the accuracy and the margin are exactly those of summing over
the whole completion; the per-reply figures (chosen and rejected log-prob shifts) are over the part
where the replies differ.

Metrics: per logged step the loss, the implicit-reward pair accuracy, the reward margin
beta * h and the chosen and rejected log-prob shifts (log pi - log pi_ref: both falling while the
margin grows is DPO's known likelihood displacement); every `eval_every` steps and at the end the
same on the held-out pairs, plus accuracy per kind and per tier pair (`preference_metrics`, the reward
model's code) and how often the policy's own likelihood ranks the pair right. Once, before training,
the reference's likelihood ranking of the held-out pairs (`val/loglik_baseline_*`, the reward model
stage's reference point under the same name). A few held-out pairs with their implicit rewards are
logged as a text artifact.

Output: the `policy` model directory in the SFT model's format (`save_model_dir`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.core.stage import StageContext, stage
from components.io.trl import load_preferences
from components.model.checkpoint import load_model_dir, save_model_dir
from components.model.gpt import GPT, evaluating
from components.tokenizer.bpe import load_tokenizer
from components.train.chat_batches import (
    IGNORE_INDEX,
    ChatExample,
    EpochBatches,
    PairExample,
    collate_sft,
    render_pairs,
)
from components.train.dpo_config import SPEC, DPOConfig, DPOLoss
from components.train.loop import Periodic, StepResult, TrainLoop
from components.train.preference_metrics import (
    kind_and_tier_accuracy,
    pair_accuracy,
    pair_metrics,
    shared_prefix_length,
)
from components.train.reward_model import RewardPlan, plan_reward_model, scored_examples
from components.train.trainer import (
    Runtime,
    load_checkpoint_weights,
    optimizer_step,
    scores_across_workers,
    sum_over_workers,
    train_on_workers,
)

# --- the loss and the metrics -------------------------------------------------------------------------


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float,
    loss: DPOLoss = "sigmoid",
) -> Tensor:
    """The mean DPO or IPO loss of a batch of pairs from the summed log-probs of each reply under the
    policy and the reference (see the module docstring)."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss == "sigmoid":
        return -F.logsigmoid(beta * h).mean()  # logsigmoid: exact where sigmoid underflows
    if loss == "ipo":
        return ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    raise ValueError(f"unknown DPO loss {loss!r}: sigmoid or ipo")


def implicit_rewards(policy: Tensor, ref: Tensor, beta: float) -> Tensor:
    """beta * (log pi(y|x) - log pi_ref(y|x)): DPO's reward of each reply."""
    return beta * (policy - ref)


def dpo_metrics(
    pairs: Sequence[PairExample],
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    cfg: DPOConfig,
) -> dict[str, float | None]:
    """Held-out figures: the implicit reward's pair metrics (accuracy, margin, reward mean/std, chosen
    and rejected means), its accuracy per kind and tier pair, the loss, the log-prob shifts of the
    chosen and rejected replies, and the policy's own likelihood ranking (no reference)."""
    chosen = implicit_rewards(policy_chosen, ref_chosen, cfg.beta)
    rejected = implicit_rewards(policy_rejected, ref_rejected, cfg.beta)
    metrics = pair_metrics(chosen, rejected) | kind_and_tier_accuracy(pairs, chosen, rejected, "accuracy")
    if not len(pairs):
        return metrics
    args = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    metrics["loss"] = float(dpo_loss(*args, beta=cfg.beta, loss=cfg.loss))
    metrics["chosen_logprob_shift"] = float((policy_chosen - ref_chosen).mean())
    metrics["rejected_logprob_shift"] = float((policy_rejected - ref_rejected).mean())
    metrics["policy_loglik_accuracy"] = float(pair_accuracy(policy_chosen, policy_rejected))
    return metrics


# --- pairs as batches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPOPair:
    """A rendered pair with the reference's log-probs of its two replies."""

    pair: PairExample
    ref_chosen: float
    ref_rejected: float


@dataclass
class DPOBatch:
    """Chosen rows 0..B-1 and rejected rows B..2B-1 (right-padded; targets IGNORE_INDEX off the scored
    tokens) and the reference's log-probs of the B pairs."""

    input_ids: Tensor
    targets: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor


def scored_rows(pair: PairExample) -> tuple[ChatExample, ChatExample]:
    """The pair's two sequences with a loss mask on the tokens after their shared prefix."""
    n = shared_prefix_length(pair.chosen, pair.rejected)
    return tuple(ChatExample(ids, [0] * n + [1] * (len(ids) - n)) for ids in (pair.chosen, pair.rejected))


def collate_dpo(
    pairs: Sequence[PairExample],
    *,
    pad_id: int,
    ref_chosen: Sequence[float] | None = None,
    ref_rejected: Sequence[float] | None = None,
) -> DPOBatch:
    """One micro-batch of pairs (`scored_rows`, right-padded); reference log-probs 0 when not given."""
    rows = [scored_rows(p) for p in pairs]
    batch = collate_sft([c for c, _ in rows] + [r for _, r in rows], pad_id=pad_id)
    zeros = [0.0] * len(pairs)
    return DPOBatch(
        batch.input_ids,
        batch.targets,
        torch.tensor(zeros if ref_chosen is None else list(ref_chosen), dtype=torch.float32),
        torch.tensor(zeros if ref_rejected is None else list(ref_rejected), dtype=torch.float32),
    )


def sequence_logprobs(model: nn.Module, batch: DPOBatch, runtime: Runtime) -> Tensor:
    """(2B,) summed log-probs of each row's scored tokens (with gradients when enabled). Right-padded
    and causal: no attention mask needed (see chat_batches)."""
    ids = batch.input_ids.to(runtime.device, non_blocking=True)
    targets = batch.targets.to(runtime.device, non_blocking=True)
    with runtime.autocast():
        logits, _ = model(ids)
    nll = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return -nll.view(targets.shape).sum(dim=1)


@torch.no_grad()
def pair_logprobs(
    model: nn.Module, pairs: Sequence[PairExample], runtime: Runtime, batch_size: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) summed log-probs of every pair's replies, on the CPU, in `pairs` order, with
    the model in eval mode, spread over the workers (`scores_across_workers`)."""

    def logprobs(rows: Sequence[PairExample]) -> Tensor:
        return sequence_logprobs(model, collate_dpo(rows, pad_id=pad_id), runtime).view(2, -1)

    with evaluating(model):
        chosen, rejected = scores_across_workers(pairs, runtime, batch_size, logprobs, per_item=2)
    return chosen, rejected


def dpo_step_loss(
    model: nn.Module, batch: DPOBatch, runtime: Runtime, *, cfg: DPOConfig
) -> tuple[Tensor, Tensor]:
    """The loss of one micro-batch and its figures (loss, accuracy, margin, chosen and rejected
    log-prob shifts), for `optimizer_step`."""
    logprobs = sequence_logprobs(model, batch, runtime)
    B = batch.ref_chosen.shape[0]
    chosen, rejected = logprobs[:B], logprobs[B:]
    ref_c, ref_r = batch.ref_chosen.to(runtime.device), batch.ref_rejected.to(runtime.device)
    loss = dpo_loss(chosen, rejected, ref_c, ref_r, beta=cfg.beta, loss=cfg.loss)
    with torch.no_grad():
        shift_c, shift_r = chosen - ref_c, rejected - ref_r
        figures = torch.stack(
            [
                loss.detach(),
                pair_accuracy(shift_c, shift_r),  # beta > 0: the implicit rewards' order
                cfg.beta * (shift_c - shift_r).mean(),
                shift_c.mean(),
                shift_r.mean(),
            ]
        )
    return loss, figures


# --- the stage ----------------------------------------------------------------------------------------


@stage(SPEC)
def dpo(ctx: StageContext, config: DPOConfig, inputs: dict) -> dict:
    """Trains the SFT model on preference pairs with DPO (or IPO) against its frozen self, with Ray Train."""
    model_dir = ctx.local_input(inputs["model"])
    seed = ctx.seed if config.seed is None else config.seed
    plan, stats = plan_reward_model(config, model_dir, ctx.local_input(inputs["preferences"]), seed=seed)
    ctx.log.info(
        "%d pairs (%d skipped as too long), %d steps of %d pairs, loss %s, beta %g",
        stats.kept,
        stats.too_long,
        plan.max_steps,
        plan.rows_per_step,
        config.loss,
        config.beta,
    )
    ctx.tracker.log_params(
        {"derived.max_steps": plan.max_steps, "derived.max_length": plan.max_length, "derived.seed": seed}
    )
    ctx.log_metrics(plan.render, 0)

    model, progress = train_on_workers(ctx, train_worker, config, plan, lambda: GPT(plan.model), name="dpo")
    summary = {**progress["summary"], "steps": plan.max_steps, "seed": seed, **plan.render}
    with ctx.output_dir("policy") as out:
        save_model_dir(
            model,
            out,
            tokenizer_path=plan.tokenizer_file,
            extra={"stage": "dpo", "training": summary},
            overwrite=True,
        )
    val, baseline = summary["val"], summary["loglik_baseline"]
    ctx.report(
        val_accuracy=val["accuracy"],
        val_margin=val["margin"],
        val_loss=val.get("loss"),
        val_chosen_logprob_shift=val.get("chosen_logprob_shift"),
        val_rejected_logprob_shift=val.get("rejected_logprob_shift"),
        loglik_baseline_accuracy=baseline["loglik_baseline_accuracy"],
        train_loss=summary.get("train_loss"),
        train_accuracy=summary.get("train_accuracy"),
        skipped_too_long=stats.too_long,
    )
    meta = {"stage": "dpo", **plan.model.model_dump(mode="json")}
    return {"policy": ctx.artifact("policy", kind="model", **meta)}


# --- the worker: the step and the evaluations (the loop is `TrainLoop`) --------------------------------


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker's DPO (every rank runs it; rank 0 logs and writes)."""
    cfg = DPOConfig.model_validate(loop_config["config"])
    plan: RewardPlan = loop_config["plan"]
    tok = load_tokenizer(plan.tokenizer_file)

    def build_model(checkpoint: Path | None) -> GPT:
        model = GPT(plan.model)
        load_checkpoint_weights(checkpoint or plan.sft_model_dir, model)
        return model

    loop = TrainLoop("dpo", cfg, plan, loop_config, build_model, unit="pairs")
    runtime, model, summary = loop.runtime, loop.model, loop.summary
    train_pairs, _ = render_pairs(tok, load_preferences(plan.train_file), max_tokens=plan.max_length)
    val_records = load_preferences(plan.val_file)
    val_pairs, _ = render_pairs(tok, val_records, max_tokens=plan.max_length)
    val_pairs = val_pairs[: cfg.val_limit]

    # The frozen reference, once: the SFT weights (also after a resume, when the policy has moved).
    reference, _ = load_model_dir(plan.sft_model_dir, device=runtime.device)
    ref_train = pair_logprobs(reference, train_pairs, runtime, cfg.eval_batch_size, plan.pad_id)
    ref_val = pair_logprobs(reference, val_pairs, runtime, cfg.eval_batch_size, plan.pad_id)
    del reference
    items = [DPOPair(p, c, r) for p, c, r in zip(train_pairs, *(x.tolist() for x in ref_train), strict=True)]
    if runtime.is_main and "loglik_baseline" not in summary:  # progress (and the summary) is rank 0's
        summary["loglik_baseline"] = {
            "loglik_baseline_accuracy": float(pair_accuracy(*ref_val)),
            **kind_and_tier_accuracy(val_pairs, *ref_val, "loglik_baseline"),
        }
        loop.logger.log({f"val/{k}": v for k, v in summary["loglik_baseline"].items()}, 0)

    data = EpochBatches(
        items,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        rank=runtime.rank,
        world_size=runtime.world_size,
        seed=plan.seed,
        position=loop.data_position,
    )

    def train_step() -> StepResult:
        batches = [
            collate_dpo(
                [x.pair for x in rows],
                pad_id=plan.pad_id,
                ref_chosen=[x.ref_chosen for x in rows],
                ref_rejected=[x.ref_rejected for x in rows],
            )
            for rows in data.next_step()
        ]
        figures, grad_norm = optimizer_step(
            loop.train_model,
            loop.optimizer,
            batches,
            runtime,
            grad_clip=cfg.grad_clip,
            loss_fn=lambda m, b, rt: dpo_step_loss(m, b, rt, cfg=cfg),
        )

        def metrics() -> dict[str, float | None]:
            values = torch.cat([figures, grad_norm.detach().float().reshape(1).to(figures.device)])
            values = sum_over_workers(values, runtime) / runtime.world_size
            loss, accuracy, margin, shift_c, shift_r, norm = values.tolist()
            summary["train_accuracy"] = accuracy  # the loop keeps train_loss
            return {
                "train/loss": loss,
                "train/accuracy": accuracy,
                "train/margin": margin,
                "train/chosen_logprob_shift": shift_c,
                "train/rejected_logprob_shift": shift_r,
                "train/grad_norm": norm,
                "train/epoch": data.epoch_progress(),
            }

        return StepResult(work=plan.rows_per_step, metrics=metrics)

    def validate(step: int) -> None:
        policy = pair_logprobs(model, val_pairs, runtime, cfg.eval_batch_size, plan.pad_id)
        metrics = dpo_metrics(val_pairs, *policy, *ref_val, cfg)
        loop.logger.log({f"val/{k}": v for k, v in metrics.items()}, step)
        summary["val"] = metrics
        loop.info(
            "step %d: val implicit-reward accuracy %s, margin %s",
            step,
            *("n/a" if metrics[k] is None else f"{metrics[k]:.4f}" for k in ("accuracy", "margin")),
        )
        if step == plan.max_steps:
            chosen, rejected = (
                implicit_rewards(p, r, cfg.beta) for p, r in zip(policy, ref_val, strict=True)
            )
            loop.logger.log_text(
                scored_examples(val_records, val_pairs, chosen, rejected, cfg.log_examples),
                "scored_pairs.txt",
            )

    loop.run(data, train_step, [Periodic(cfg.eval_every, validate)])
