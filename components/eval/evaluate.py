"""The recipe's last box: every model of the run measured the same way, side by side.

Because the tiny world's facts are known, the comparison says what each step of the recipe added:

- **pretraining** (`base`): knowledge of the facts, measured without any chat format by the
  multiple-choice benchmark (log-likelihood of each choice after ``Question: ...\\nAnswer:``), and
  language modelling of held-out web text in bits per byte;
- **SFT** (`sft`): the chat format (format compliance: the reply closes its turn and writes no other
  role) and answers a verifier accepts, on held-out prompts and on prompts like the SFT data's ("seen");
  a base model gets the very same chat-rendered prompts and mostly fails the format -- that is the point;
- **the reward model** (`reward_model`): the RM score of every model's replies, and how well that score
  ranks correct replies above wrong ones (`reward_model.auc`: the probability that a verified-correct
  reply outscores a wrong one, over all models' held-out replies);
- **RL** (`ppo`, `grpo`, `dpo`): verifier accuracy and RM score after optimising the RM (PPO), the
  verifier (GRPO) or the preference pairs directly (DPO); a rising RM score with a flat accuracy is
  reward hacking; bits per byte shows what RL (and SFT) cost on web text (the alignment tax);
- **the recipe's claims** (`recipe_claims`, settings `claims`): per model, from many replies sampled
  for each of the first verifiable held-out prompts, token entropy and distinct-1/2 (does RL lower
  diversity?), pass@k and maj@k (do many samples and a vote beat one?); across models, pairwise win
  rates of the greedy held-out replies judged by the verifier and by the reward model, with
  Bradley-Terry ratings on the Elo scale (is base < SFT < RL?). The checks are flags
  (``claims.accuracy.sft_lt_ppo``, ``claims.ppo_lowered_entropy``, ...) and lines in ``claims.txt``.

Every input is optional; at least one model is required (a preflight check refuses a DAG without one).
Each model is evaluated in its own Ray task (in-process without Ray), which loads the model and the
reward model, so the models of a run are measured in parallel on a cluster. Outputs (`report`):

    evaluation.json        every metric per model, per-relation benchmark accuracy, RM agreement, timings
    comparison.png         grouped bars per metric, one bar per model
    samples_<model>.jsonl  a few replies per task and split, with verdicts and RM scores
    table.txt              the compact table that is also logged (the claims' figures at its end)
    claims.txt             the win-rate matrices and the recipe's checks, one line each

Headline metrics are ``<model>.<metric>`` (``sft.accuracy``, ``grpo.accuracy``, ``ppo.rm_score``,
``base.benchmark_acc``, ``base.bpb``, ...); unprefixed chat metrics are on held-out prompts, ``seen_*`` on
seen prompts. Everything, per task and per relation included, goes to MLflow.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from components.core.artifacts import Artifact
from components.core.parallel import ray_running
from components.core.stage import StageContext, stage
from components.core.staging import StagedInputs, restage
from components.eval.bits_per_byte import corpus_bits_per_byte
from components.eval.chat_eval import chat_eval, format_samples, without_tools
from components.eval.claims_sampling import sample_claims
from components.eval.evaluate_config import MODELS, RL_MODELS, SPEC, EvaluateConfig, check_inputs
from components.eval.in_context_copy import copy_accuracy
from components.eval.multiple_choice import benchmark_items, score_items
from components.eval.recipe_claims import (
    JUDGES,
    bradley_terry,
    format_matrix,
    pairwise_scores,
    recipe_checks,
    win_rates,
)
from components.io.trl import load_prompts
from components.model.checkpoint import load_model_dir
from components.model.heads import load_scalar_model_dir
from components.tokenizer.bpe import eot_id, load_tokenizer

SPLITS = {"test": "", "seen": "seen_"}  # prompts file -> metric prefix (held-out metrics are unprefixed)
# The metrics shown in the table, the figure and (per model) the headline, in that order.
HEADLINE = (
    "accuracy",
    "seen_accuracy",
    "format_compliance",
    "rm_score",
    "benchmark_acc",
    "benchmark_acc_norm",
    "bpb",
)
TABLE = (
    *HEADLINE,
    "ended_rate",
    "leaked_role_rate",
    "mean_response_tokens",
    "no_tools_accuracy",  # tool use: the same model with its tool switched off
    "tool_call_rate",
    "copy_accuracy",  # in-context copying, which a tool call needs
    "seen_rm_score",
    "val_loss",
    "lm_eval_acc",
    "lm_eval_acc_norm",
)


def claims_rows(ks: Sequence[int]) -> tuple[str, ...]:
    """The recipe's claims in the table, after TABLE (`recipe_claims`)."""
    return (
        "entropy",
        "distinct_1",
        "distinct_2",
        *(f"pass_at_{k}" for k in ks),
        *(f"maj_at_{k}" for k in ks),
        *(f"{kind}_{judge}" for judge in JUDGES for kind in ("win_rate", "elo")),
    )


# --- one model's evaluation (a Ray task) ---------------------------------------------------------------


@dataclass
class ModelJob:
    """Everything one model's evaluation needs; small enough to travel to a Ray task."""

    name: str
    model_dir: str
    config: dict[str, Any]  # EvaluateConfig as JSON
    seed: int
    reward_model_dir: str | None = None
    tokens_dir: str | None = None  # the tokenize stage's output (val/ shards inside)
    benchmark: list[dict[str, Any]] = field(default_factory=list)
    prompts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> records


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "bfloat16" or (
        setting == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


def evaluate_model(job: ModelJob) -> dict[str, Any]:
    """Benchmark, bits per byte and chat metrics of one model: {metrics, by_relation, samples, seconds}."""
    cfg = EvaluateConfig.model_validate(job.config)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    tokenizer_file = Path(job.model_dir) / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{job.name}: {tokenizer_file} is missing; the model directory needs it")
    tok = load_tokenizer(tokenizer_file)
    model, _ = load_model_dir(job.model_dir, device=device, dtype=dtype)
    if model.config.vocab_size < tok.get_vocab_size():
        raise ValueError(
            f"{job.name}: the model has {model.config.vocab_size} token ids but its tokenizer "
            f"{tok.get_vocab_size()}; the directory {job.model_dir} is inconsistent"
        )
    metrics: dict[str, float] = {}
    seconds: dict[str, float] = {}
    out: dict[str, Any] = {"metrics": metrics, "seconds": seconds, "by_relation": {}, "samples": {}}

    if job.benchmark:
        started = time.perf_counter()
        result = score_items(
            model, tok, benchmark_items(job.benchmark), prefix_ids=[eot_id(tok)], batch_size=cfg.batch_size
        )
        metrics.update(benchmark_acc=result.acc, benchmark_acc_norm=result.acc_norm)
        metrics["benchmark_items"] = float(result.items)
        out["by_relation"] = result.by_group
        seconds["benchmark"] = time.perf_counter() - started
        if cfg.lm_eval:
            started = time.perf_counter()
            metrics.update(lm_eval_benchmark(model, tok, job.benchmark, cfg.batch_size))
            seconds["lm_eval"] = time.perf_counter() - started

    if job.tokens_dir:
        started = time.perf_counter()
        bpb = corpus_bits_per_byte(
            model,
            tok,
            Path(job.tokens_dir) / "val",
            max_tokens=cfg.max_val_tokens,
            seq_len=cfg.val_seq_len,
            batch_size=cfg.batch_size,
            dtype=dtype,
        )
        metrics.update(bpb=bpb.bpb, val_loss=bpb.loss, val_tokens=float(bpb.tokens))
        seconds["bpb"] = time.perf_counter() - started

    started = time.perf_counter()
    copied = copy_accuracy(model, tok, sequences=cfg.copy_sequences, seed=job.seed)
    if copied is not None:
        metrics["copy_accuracy"] = copied
        seconds["copy"] = time.perf_counter() - started

    if job.prompts:
        reward_model = None
        if job.reward_model_dir:
            rm_tokenizer = Path(job.reward_model_dir) / "tokenizer.json"
            if rm_tokenizer.is_file() and rm_tokenizer.read_text() != tokenizer_file.read_text():
                raise ValueError(
                    f"the reward model {job.reward_model_dir} has another tokenizer than {job.name} "
                    f"({job.model_dir}); it would score token ids it does not know"
                )
            # float32 whatever `dtype`: its head runs in float32 (small reward differences survive), and
            # one scoring pass per batch of replies costs little next to generating them.
            reward_model, _ = load_scalar_model_dir(job.reward_model_dir, device=device, dtype=torch.float32)
        decoding = {
            "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.batch_size,
            "temperature": cfg.temperature,
            "seed": job.seed,
        }
        for split, records in job.prompts.items():
            started = time.perf_counter()
            result = chat_eval(model, tok, records, reward_model=reward_model, **decoding)
            prefix = SPLITS[split]
            for key, value in result.metrics.items():
                key = "rm_score" if key == "rm_score_mean" else key
                metrics[f"{prefix}{key}"] = float(value)
            out["samples"][split] = result.samples
            if split == "test":  # the same model without its tool: what the tool adds
                metrics.update(without_tools(model, tok, records, **decoding))
            seconds[f"chat_{split}"] = time.perf_counter() - started
        claims = cfg.claims
        if claims.prompts and job.prompts.get("test"):
            found = sample_claims(
                model,
                tok,
                job.prompts["test"],
                prompts=claims.prompts,
                samples=claims.samples,
                ks=claims.ks,
                temperature=claims.temperature,
                max_new_tokens=claims.max_new_tokens or cfg.max_new_tokens,
                batch_size=claims.batch_size,
                seed=job.seed,
            )
            seconds["claims"] = found.pop("claims_seconds")
            metrics.update({k: v for k, v in found.items() if v is not None})
    return out


def lm_eval_benchmark(model, tok, records: list[dict[str, Any]], batch_size: int) -> dict[str, float]:
    """The benchmark scored by lm-evaluation-harness: {lm_eval_acc, lm_eval_acc_norm}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from components.eval.lm_eval_adapter import GPTRecipeLM
    from components.eval.lm_eval_tasks import FACTS_TASK, write_fact_task

    with tempfile.TemporaryDirectory(prefix="lm-eval-") as task_dir:
        write_fact_task(records, task_dir)
        results = lm_eval.simple_evaluate(
            model=GPTRecipeLM(model=model, tokenizer=tok, batch_size=batch_size),
            tasks=[FACTS_TASK],
            task_manager=TaskManager(include_path=task_dir, include_defaults=False),
            bootstrap_iters=0,  # no standard errors: the point estimate is what we report
            log_samples=False,
        )
    scores = results["results"][FACTS_TASK]
    return {"lm_eval_acc": float(scores["acc,none"]), "lm_eval_acc_norm": float(scores["acc_norm,none"])}


def map_models(
    fn: Callable[[ModelJob], dict[str, Any]],
    jobs: Sequence[ModelJob],
    staged: StagedInputs,
    *,
    cpus: float,
    gpus: float,
) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, one Ray task per model when Ray is running (each reserving
    ``cpus`` and ``gpus``; even a single model, since the stage's own task reserves nothing), else in
    this process. `components.core.parallel.parallel_map` with GPUs. A task on another node stages the
    job's inputs there (`restage`)."""
    if not ray_running():
        return [fn(job) for job in jobs]
    import ray

    remote = ray.remote(_on_this_node).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=1, name="evaluate_model"
    )
    return ray.get([remote.remote(fn, job, staged) for job in jobs])


def _on_this_node(fn: Callable[[ModelJob], dict[str, Any]], job: ModelJob, staged: StagedInputs) -> dict:
    with restage(staged) as move:
        return fn(move(job))


# --- what the stage derives from all models ----------------------------------------------------------


def judged_claims(
    per_model: dict[str, dict], table_metrics: dict[str, dict[str, float]], config: EvaluateConfig
) -> tuple[dict[str, Any], dict[str, float], str]:
    """Win rates and ratings of the models' greedy held-out replies by each judge (added to
    `table_metrics` as win_rate_<judge>, elo_<judge>) and the recipe's checks: (the report's `claims`
    section, the checks' flags, the claims text: win-rate matrices and one line per check)."""
    replies = {n: r["samples"].get("test", []) for n, r in per_model.items()}
    section: dict[str, Any] = {"win_rates": {}, "games": {}, "ratings": {}}
    texts = []
    for judge in JUDGES:
        score, games = pairwise_scores(replies, judge)
        rate, mean = win_rates(score, games)
        ratings = bradley_terry(score, games, prior=config.claims.rating_prior)
        section["win_rates"][judge], section["games"][judge], section["ratings"][judge] = rate, games, ratings
        for name in per_model:
            for key, value in ((f"win_rate_{judge}", mean[name]), (f"elo_{judge}", ratings[name])):
                if value is not None:
                    table_metrics[name][key] = value
        if any(v is not None for v in ratings.values()):
            texts.append(
                format_matrix(rate, f"win rate of the row model against the column model, judged by {judge}")
            )
    flags, lines = recipe_checks(table_metrics, [m for m in RL_MODELS if m in per_model])
    section["checks"] = lines
    text = "\n\n".join([*texts, "the recipe's claims:\n" + "\n".join(lines or ["(nothing to compare)"])])
    return section, flags, text


def write_report(
    out_dir: Path, per_model: dict[str, dict], report: dict[str, Any], table: str, config: EvaluateConfig
) -> None:
    """The report output: picked samples per model, evaluation.json, the table and the figure."""
    for name, r in per_model.items():
        picked = [
            {"split": split, **s}
            for split, samples in r["samples"].items()
            for s in pick_samples(samples, config.samples_per_task)
        ]
        with (out_dir / f"samples_{name}.jsonl").open("w", encoding="utf-8") as f:
            for s in picked:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out_dir / "table.txt").write_text(table + "\n")
    figure = comparison_figure(report["models"])
    figure.savefig(out_dir / "comparison.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)


def rm_auc(samples: Sequence[dict[str, Any]]) -> tuple[float | None, int]:
    """How well the reward model's score separates verified-correct replies from wrong ones: the
    probability that a random correct reply scores above a random wrong one (ties count half), and the
    number of (correct, wrong) pairs. None without both kinds of reply."""
    pos = sorted(s["rm_score"] for s in samples if s.get("correct") == 1.0 and s.get("rm_score") is not None)
    neg = sorted(s["rm_score"] for s in samples if s.get("correct") == 0.0 and s.get("rm_score") is not None)
    if not pos or not neg:
        return None, 0
    # Mann-Whitney U by merging the two sorted lists: O(n log n) rather than every pair.
    wins, j_lo, j_hi = 0.0, 0, 0
    for p in pos:
        while j_lo < len(neg) and neg[j_lo] < p:
            j_lo += 1
        j_hi = max(j_hi, j_lo)
        while j_hi < len(neg) and neg[j_hi] <= p:
            j_hi += 1
        wins += j_lo + 0.5 * (j_hi - j_lo)
    return wins / (len(pos) * len(neg)), len(pos) * len(neg)


def pick_samples(samples: Sequence[dict[str, Any]], per_task: int) -> list[dict[str, Any]]:
    """The first ``per_task`` samples of each task, in their original order."""
    seen: dict[Any, int] = {}
    out = []
    for s in samples:
        task = s.get("task")
        if seen.get(task, 0) < per_task:
            seen[task] = seen.get(task, 0) + 1
            out.append(s)
    return out


def format_table(models: dict[str, dict[str, float]], rows: Sequence[str] = TABLE) -> str:
    """Metrics as rows, models as columns; rows no model has are left out, a value not measured is n/a."""
    names = list(models)
    rows = [r for r in rows if any(r in m for m in models.values())]
    width = max([len(r) for r in rows] + [6])
    lines = [f"{'metric':<{width}}" + "".join(f"{n:>10}" for n in names)]
    for r in rows:
        cells = []
        for n in names:
            v = models[n].get(r)
            cells.append(f"{'n/a':>10}" if v is None or math.isnan(v) else f"{v:>10.4g}")
        lines.append(f"{r:<{width}}" + "".join(cells))
    return "\n".join(lines)


def comparison_figure(models: dict[str, dict[str, float]]):
    """Small multiples: one panel per metric with one bar per model, and a panel of held-out accuracy
    per task with the models side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    colors = {n: plt.get_cmap("tab10")(i) for i, n in enumerate(MODELS)}
    panels = [m for m in (*HEADLINE, "mean_response_tokens") if any(m in v for v in models.values())]
    tasks = sorted({k.split(".", 1)[1] for v in models.values() for k in v if k.startswith("accuracy.")})
    n_panels = len(panels) + (1 if tasks else 0)
    cols = min(4, max(1, n_panels))
    rows = max(1, math.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, metric in zip(flat, panels, strict=False):
        values = [models[n].get(metric, float("nan")) for n in names]
        bars = ax.bar(names, values, color=[colors.get(n, "grey") for n in names])
        ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.3g}" for v in values], fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=8)
        if metric.startswith("benchmark_acc"):
            ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)  # chance with four choices
        if "accuracy" in metric or metric.startswith(("benchmark_acc", "format")):
            ax.set_ylim(0, 1.12)
    if tasks:
        ax = flat[len(panels)]
        width = 0.8 / max(1, len(names))
        for i, n in enumerate(names):
            xs = [t + (i - (len(names) - 1) / 2) * width for t in range(len(tasks))]
            values = [models[n].get(f"accuracy.{task}", float("nan")) for task in tasks]
            ax.bar(xs, values, width=width, label=n, color=colors.get(n, "grey"))
        ax.set_xticks(range(len(tasks)), tasks, fontsize=7, rotation=20)
        ax.set_ylim(0, 1.12)
        ax.set_title("held-out accuracy per task", fontsize=9)
        ax.legend(fontsize=7)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle("What each stage of the recipe added", fontsize=11)
    fig.tight_layout()
    return fig


# --- the stage ------------------------------------------------------------------------------------------


def _read_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
                if limit is not None and len(records) >= limit:
                    break
    return records


@stage(SPEC)
def evaluate(ctx: StageContext, config: EvaluateConfig, inputs: dict[str, Artifact]) -> dict:
    """Every model of the run on the fact benchmark, held-out bits/byte and chat prompts (verifier, RM)."""
    check_inputs(config, inputs)
    local = {name: str(ctx.local_input(art)) for name, art in inputs.items()}
    models = [m for m in MODELS if m in inputs]

    benchmark: list[dict[str, Any]] = []
    if "benchmark" in inputs:
        path = Path(local["benchmark"]) / "benchmark.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"evaluate: the benchmark input has no benchmark.jsonl ({path})")
        benchmark = _read_jsonl(path, config.max_benchmark_items)
    prompts: dict[str, list[dict[str, Any]]] = {}
    if "prompts" in inputs:
        for split in SPLITS:
            path = Path(local["prompts"]) / f"{split}.jsonl"
            if path.is_file():
                prompts[split] = load_prompts(str(path))[: config.max_prompts]
            else:
                ctx.log.warning("evaluate: %s is missing; no %s chat metrics", path, split)
    tokens_dir = local.get("tokens")
    if tokens_dir and not (Path(tokens_dir) / "val").is_dir():
        ctx.log.warning("evaluate: %s has no val/ split; no bits per byte", tokens_dir)
        tokens_dir = None
    if "reward_model" in inputs and not prompts:
        ctx.log.warning("evaluate: a reward model but no prompts; the reward model scores nothing")

    seed = ctx.seed if config.seed is None else config.seed
    jobs = [
        ModelJob(
            name=name,
            model_dir=local[name],
            config=config.model_dump(mode="json"),
            seed=seed,
            reward_model_dir=local.get("reward_model"),
            tokens_dir=tokens_dir,
            benchmark=benchmark,
            prompts=prompts,
        )
        for name in models
    ]
    ctx.log.info(
        "evaluating %s: %d benchmark items, %s prompts, %s",
        ", ".join(models),
        len(benchmark),
        "/".join(f"{len(v)} {k}" for k, v in prompts.items()) or "no",
        f"up to {config.max_val_tokens} val tokens" if tokens_dir else "no bits per byte",
    )
    started = time.perf_counter()
    results = map_models(
        evaluate_model, jobs, ctx.staged_inputs(), cpus=config.cpus_per_model, gpus=config.gpus_per_model
    )
    wall = time.perf_counter() - started
    per_model = {job.name: r for job, r in zip(jobs, results, strict=True)}
    table_metrics = {name: r["metrics"] for name, r in per_model.items()}

    report: dict[str, Any] = {
        "models": table_metrics,
        "benchmark_by_relation": {n: r["by_relation"] for n, r in per_model.items() if r["by_relation"]},
        "seconds": {n: r["seconds"] for n, r in per_model.items()} | {"wall": wall},
        "inputs": {name: art.uri for name, art in inputs.items()},
        "config": config.model_dump(mode="json"),
    }
    headline: dict[str, float] = {}
    report["claims"], flags, claims_text = judged_claims(per_model, table_metrics, config)
    headline |= {f"claims.{k}": v for k, v in flags.items()}
    if "reward_model" in inputs and prompts:
        pooled = [s for r in per_model.values() for s in r["samples"].get("test", [])]
        auc, pairs = rm_auc(pooled)
        by_model = {n: rm_auc(r["samples"].get("test", []))[0] for n, r in per_model.items()}
        report["reward_model"] = {"auc": auc, "pairs": pairs, "auc_by_model": by_model}
        if auc is not None:
            headline["reward_model.auc"] = auc

    table = format_table(table_metrics, (*TABLE, *claims_rows(config.claims.ks)))
    with ctx.output_dir("report") as out_dir:
        write_report(out_dir, per_model, report, table, config)
        (out_dir / "claims.txt").write_text(claims_text + "\n")

    # Headline: each metric across the models before the next metric, so the run summary's first
    # columns compare the models on accuracy.
    for metric in HEADLINE:
        for name in models:
            value = table_metrics[name].get(metric)
            if value is not None and not math.isnan(value):
                headline[f"{name}.{metric}"] = value
    everything = {f"{n}.{k}": v for n, m in table_metrics.items() for k, v in m.items()}
    everything |= {f"{n}.seconds.{k}": v for n, r in per_model.items() for k, v in r["seconds"].items()}
    for n, r in per_model.items():
        everything |= {f"{n}.benchmark_acc.{rel}": v["acc"] for rel, v in r["by_relation"].items()}
    ctx.log_metrics({k: v for k, v in everything.items() if k not in headline and not math.isnan(v)})
    ctx.report(**headline)
    ctx.log.info("evaluated %d model(s) in %.1fs:\n%s\n\n%s", len(models), wall, table, claims_text)
    ctx.tracker.log_text(table + "\n", "evaluation_table.txt")
    ctx.tracker.log_text(claims_text + "\n", "evaluation_claims.txt")
    for path in sorted(out_dir.iterdir()):
        ctx.tracker.log_artifact(path, "report")
    for name, r in per_model.items():
        for split, samples in r["samples"].items():
            text = format_samples(pick_samples(samples, config.samples_per_task), title=f"{name} / {split}")
            ctx.tracker.log_text(text, f"samples/{name}_{split}.txt")
    return {"report": ctx.artifact("report", kind="evaluation", models=models)}


__all__ = [
    "MODELS",
    "EvaluateConfig",
    "ModelJob",
    "check_inputs",
    "comparison_figure",
    "evaluate",
    "evaluate_model",
    "format_table",
    "pick_samples",
    "rm_auc",
]
