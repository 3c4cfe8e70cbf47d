"""The driver of an RL stage: `RLRun` runs an algorithm's iterations with monitoring, evaluation,
checkpoints and resume. One iteration (the algorithm, `components.train.ppo.PPO` or `.grpo.GRPO`,
fills in the middle; see `components.train.rl.algorithm`):

    prompts (the stream's next batch) -> generation -> scoring -> experience -> training
    -> health metrics + alarms -> (samples, evaluation, checkpoint)

The driver runs in the stage's task, which reserves no CPU: the roles' actors hold the resources and do
the tensor work (`components.train.rl.placement`). It keeps everything that is not a model -- the step,
the prompt stream's position, the KL controller, the monitor's history, the evaluation before training
-- in a JSON state beside the roles' checkpoints, under the stage's scratch directory, which is stable
for the same cache key (`components.train.rl.checkpoints`).

So a rerun of the stage after a crash resumes at the latest checkpoint, and a role process that dies
mid-run makes the driver restart the roles from it (``max_failures`` times). Everything the next
iteration depends on is in the checkpoint (weights, AdamW state, sampling generator, step, data
position, KL coefficient), so a resumed run computes the same iterations as an uninterrupted one, and
`MetricLogger` keeps the MLflow history free of duplicated steps.

Headline metrics are measurements only, and only where there was something to measure: a number with
nothing behind it (alarms never checkable, no time elapsed) is left out, shown as n/a, never as a
perfect score; settings such as the KL budget are the stage's params.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from tokenizers import Tokenizer

from components.core.artifacts import Artifact
from components.core.config import ConfigError
from components.core.stage import StageContext
from components.eval.chat_eval import ChatEval, format_samples, is_verifiable
from components.io.trl import load_prompts
from components.tokenizer.bpe import load_tokenizer
from components.train.rl.algorithm import RLAlgorithm, RLPaths, phase_timer
from components.train.rl.checkpoints import RLCheckpoints, RunState
from components.train.rl.config import RLConfig
from components.train.rl.monitor import RLMonitor, curves_figure, sample_table
from components.train.rl.placement import RoleGroup
from components.train.rl.prompts import PromptStream, encode_prompts
from components.train.trainer import MetricLogger, Runtime

TOKENIZER_FILE = "tokenizer.json"


class RLRun:
    """Runs one RL stage: setup, (resume), iterations, evaluation, output. See the module docstring."""

    def __init__(
        self, ctx: StageContext, config: RLConfig, inputs: Mapping[str, Artifact], algorithm: RLAlgorithm
    ):
        self.ctx, self.config, self.algorithm = ctx, config, algorithm
        self.paths = resolve_paths(ctx, inputs)
        tok = load_tokenizer(self.paths.tokenizer)
        context = check_models(self.paths, tok, config)
        algorithm.check_inputs(self.paths, context)

        prompts_dir = ctx.local_input(inputs["prompts"])
        self.prompts = encode_prompts(
            tok,
            load_prompts(str(prompts_dir / "train.jsonl")),
            max_prompt_tokens=config.max_prompt_tokens,
            keep=algorithm.keep_record,
        )
        if len(self.prompts) == 0:
            raise ConfigError(
                f"{algorithm.name}: no training prompt left in {prompts_dir / 'train.jsonl'} "
                f"(left out: {self.prompts.dropped}); raise max_prompt_tokens or check the data"
            )
        self.test_records = load_prompts(str(prompts_dir / "test.jsonl"))
        ctx.log.info(
            "%d training prompts (left out: %s), %d held-out (%d verifiable), %d iterations of %d rows",
            len(self.prompts),
            self.prompts.dropped or "none",
            len(self.test_records),
            sum(map(is_verifiable, self.test_records)),
            config.iterations,
            config.rows_per_iteration,
        )
        ctx.tracker.log_params(
            {"derived.train_prompts": len(self.prompts), "derived.seed": config.seed_value}
            | {f"derived.dropped_prompts.{k}": v for k, v in self.prompts.dropped.items()}
        )
        self.checkpoints = RLCheckpoints(ctx.store, ctx.scratch_uri("checkpoints"), config.keep_checkpoints)
        self.spool_dir = ctx.scratch_uri("tracking") if ctx.store.is_local else None
        self.monitor = RLMonitor(config.monitor)
        self.stream = PromptStream(len(self.prompts), config.seed_value)
        self.state: RunState

    # -- the whole run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Artifact]:
        """Iterate to the end, restarting the roles from the latest checkpoint when a role process dies."""
        failures = 0
        latest = self.checkpoints.latest()
        self.logger = self._logger(resumed_step=latest[1]["step"] if latest else None)
        while True:
            roles = RoleGroup(
                self.algorithm.role_specs(self.paths),
                self.config.roles,
                name=self.algorithm.name,
                staged=self.ctx.staged_inputs(),
            )
            try:
                self._restore(roles)
                self._train(roles)
                return self._finish(roles)
            except Exception as e:
                if not _is_actor_death(e) or failures >= self.config.max_failures:
                    raise
                failures += 1
                latest = self.checkpoints.latest()
                step = latest[1]["step"] if latest else 0
                self.ctx.log.warning(
                    "%s: a role process died (%s); restart %d of %d from step %d",
                    self.algorithm.name,
                    type(e).__name__,
                    failures,
                    self.config.max_failures,
                    step,
                )
                self.logger.flush()
                self.logger = self._logger(resumed_step=step)
            finally:
                roles.shutdown()

    def _logger(self, resumed_step: int | None) -> MetricLogger:
        # The driver is the only process that logs step metrics: rank 0 of 1.
        driver = Runtime(rank=0, world_size=1, device=torch.device("cpu"), dtype=torch.float32)
        return MetricLogger(
            self.ctx.tracker_handle(), driver, resumed_step=resumed_step, spool_dir=self.spool_dir
        )

    def _restore(self, roles: RoleGroup) -> None:
        """Load the latest checkpoint into the roles and the driver, or start fresh (evaluating the SFT
        policy first, the 'before' column of the closing comparison)."""
        latest = self.checkpoints.latest()
        self.monitor = RLMonitor(self.config.monitor)
        self.stream = PromptStream(len(self.prompts), self.config.seed_value)
        if latest is None:
            self.algorithm.reset()
            before = roles.get(
                roles.call("policy", "evaluate", self.test_records, limit=self.config.eval_limit)
            )
            self._log_eval(before, step=0, label="before (SFT policy)")
            self.state = {
                "step": 0,
                "before": before.metrics,
                "history": [],
                "evals": [],
                "timing": {
                    "generation_s": 0.0,
                    "scoring_s": 0.0,
                    "training_s": 0.0,
                    "tokens": 0,
                    "seconds": 0.0,
                },
            }
            return
        directory, state = latest
        store = self.ctx.store
        roles.get(
            [roles.call(role, "load", store.join(directory, role)) for role in self.algorithm.trainable_roles]
        )
        self.stream.load_state_dict(state["prompts"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.monitor.load_state_dict(state["monitor"])
        self.state = state
        self.ctx.tracker.set_tags({f"{self.algorithm.name}.resumed_from_step": state["step"]})
        for name, step in self.monitor.first_fired.items():
            self.ctx.tracker.set_tags({f"gptrecipe.alarm.{name}": f"first at iteration {step}"})
        self.ctx.log.info("%s: resumed from %s (step %d)", self.algorithm.name, directory, state["step"])

    # -- iterations ----------------------------------------------------------------------------------------

    def _train(self, roles: RoleGroup) -> None:
        cfg = self.config
        while self.state["step"] < cfg.iterations:
            step = self.state["step"] + 1
            elapsed = phase_timer()
            batch = self.stream.take(cfg.rollout_batch_size)
            result = self.algorithm.iteration(roles, self.prompts, batch, step)
            seconds = elapsed()
            metrics = dict(result.metrics)
            timing = self.state["timing"]
            for phase in ("generation_s", "scoring_s", "training_s"):
                timing[phase] += metrics.get(f"time/{phase}") or 0.0
            timing["tokens"] += result.tokens
            timing["seconds"] += seconds
            metrics |= {
                "time/iteration_s": seconds,
                "throughput/tokens_per_s": result.tokens / seconds,
                "data/epoch": self.stream.epochs_done,
            }
            flags, alarms = self.monitor.observe(step, metrics)
            metrics |= flags
            for alarm in alarms:
                if alarm.first:
                    self.ctx.log.warning(
                        "%s ALARM %s at iteration %d: %s",
                        self.algorithm.name,
                        alarm.name,
                        step,
                        alarm.message,
                    )
                    self.ctx.tracker.set_tags(
                        {f"gptrecipe.alarm.{alarm.name}": f"iteration {step}: {alarm.message}"}
                    )
            self.logger.log(metrics, step)
            self.state["step"] = step
            self.state["history"].append(
                {"step": step, **{k: v for k, v in metrics.items() if _kept_in_history(k)}}
            )

            last = step == cfg.iterations
            every = cfg.monitor.sample_every
            if (every and step % every == 0) or last:
                table = sample_table(
                    step, result.records, result.scores, result.lengths, cfg.monitor.samples_per_table
                )
                self.logger.log_text(json.dumps(table, indent=1) + "\n", f"samples/step_{step:05d}.json")
            if cfg.eval_every and step % cfg.eval_every == 0 and not last:
                evaluation = roles.get(
                    roles.call("policy", "evaluate", self.test_records, limit=cfg.eval_limit)
                )
                self._log_eval(evaluation, step=step)
            if step % cfg.checkpoint_every == 0 or last:
                self._checkpoint(roles, step)
            if step == 1 or step % 5 == 0 or last:
                self.ctx.log.info(
                    "%s %d/%d: reward %.3f gold %s kl %s entropy %.3f len %.1f (%.1fs)",
                    self.algorithm.name,
                    step,
                    cfg.iterations,
                    metrics["rollout/reward"],
                    _fmt(metrics.get("rollout/gold_score")),
                    _fmt(metrics.get("rollout/kl_k1")),
                    metrics["rollout/entropy"],
                    metrics["rollout/response_length"],
                    seconds,
                )

    def _checkpoint(self, roles: RoleGroup, step: int) -> None:
        directory, store = self.checkpoints.begin(step), self.ctx.store
        roles.get(
            [roles.call(role, "save", store.join(directory, role)) for role in self.algorithm.trainable_roles]
        )
        self.state |= {
            "prompts": self.stream.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "monitor": self.monitor.state_dict(),
        }
        self.logger.flush()  # what is logged up to this checkpoint reaches MLflow before it counts
        self.checkpoints.commit(step, self.state)

    # -- evaluation and output -------------------------------------------------------------------------------

    def _log_eval(self, evaluation: ChatEval, *, step: int, label: str | None = None) -> None:
        self.logger.log({f"eval/{k}": v for k, v in evaluation.metrics.items()}, step)
        if step > 0:
            self.state["evals"].append({"step": step, **evaluation.metrics})
        title = label or f"iteration {step}"
        self.logger.log_text(
            format_samples(evaluation.samples, title=title), f"eval/samples_step_{step:05d}.txt"
        )

    def _finish(self, roles: RoleGroup) -> dict[str, Artifact]:
        cfg, ctx, name = self.config, self.ctx, self.algorithm.name
        step = self.state["step"]
        after = roles.get(roles.call("policy", "evaluate", self.test_records, limit=cfg.eval_limit))
        self._log_eval(after, step=step, label=f"after {name} (iteration {step})")
        before = self.state["before"]
        comparison = {
            key: {"sft": before.get(key), name: after.metrics.get(key)}
            for key in sorted(set(before) | set(after.metrics))
        }
        ctx.tracker.log_dict(comparison, "eval/sft_vs_rl.json")

        history = self.state["history"]
        window = history[-cfg.monitor.window :]

        def recent(key: str) -> float | None:
            values = [h[key] for h in window if h.get(key) is not None and not math.isnan(h[key])]
            return sum(values) / len(values) if values else None

        timing = self.state["timing"]
        headline: dict[str, float | None] = {}
        for key in ("rm_score_mean", "accuracy", "format_compliance", "mean_response_tokens"):
            headline[f"sft.{key}"] = before.get(key)
            headline[f"{name}.{key}"] = after.metrics.get(key)
        headline |= {
            "kl_to_reference": recent("rollout/kl_k1"),
            "rollout_rm_score_z": recent("rollout/rm_score_z"),
            "rollout_gold_score": recent("rollout/gold_score"),
            "alarms_fired": self.monitor.alarms_fired,
            **{f"alarm.{k}": float(v) for k, v in self.monitor.first_fired.items()},
            "iterations": float(step),
            "tokens_per_s": timing["tokens"] / timing["seconds"] if timing["seconds"] else None,
            "generation_s": timing["generation_s"],
            "scoring_s": timing["scoring_s"],
            "training_s": timing["training_s"],
            **self.algorithm.summary(),
        }
        ctx.report(**{k: v for k, v in headline.items() if v is not None})
        if missing := [k for k, v in headline.items() if v is None]:
            ctx.log.info("%s: n/a (nothing to measure): %s", name, ", ".join(missing))
        if history:
            figure = curves_figure(history, self.monitor.first_fired, title=f"{name}: RM score vs gold score")
            ctx.tracker.log_figure(figure, "curves/rm_vs_gold.png")
            import matplotlib.pyplot as plt  # here, after curves_figure chose the Agg backend

            plt.close(figure)
        ctx.tracker.log_dict(history, "curves/history.json")

        summary = {
            "iterations": step,
            "before": before,
            "after": after.metrics,
            "alarms": self.monitor.first_fired,
            "seed": cfg.seed_value,
        }
        extra = {"stage": name, "training": json.loads(json.dumps(summary, default=float))}
        out = ctx.output_uri("policy")
        digest = roles.get(roles.call("policy", "export", out, self.paths.tokenizer, extra))
        self.logger.flush()
        meta = {"stage": name, "iterations": step}
        return {"policy": Artifact(uri=out, kind="model", digest=digest, meta=meta)}


def _kept_in_history(key: str) -> bool:
    return key.startswith(("rollout/", "train/", "alarm/", "time/", "throughput/", "kl/"))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _is_actor_death(error: BaseException) -> bool:
    try:
        from ray.exceptions import RayActorError
    except ImportError:  # pragma: no cover - Ray is a dependency
        return False
    return isinstance(error, RayActorError)


def resolve_paths(ctx: StageContext, inputs: Mapping[str, Artifact]) -> RLPaths:
    """Local paths of the model inputs; the tokenizer is the policy directory's tokenizer.json."""
    policy = ctx.local_input(inputs["policy"])
    tokenizer = policy / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise FileNotFoundError(
            f"{tokenizer} is missing: the policy model directory must carry its tokenizer"
        )

    def optional(name: str) -> str | None:
        return str(ctx.local_input(inputs[name])) if name in inputs else None

    return RLPaths(
        policy=str(policy),
        tokenizer=str(tokenizer),
        reward_model=optional("reward_model"),
        critic_init=optional("critic_init"),
    )


def check_models(paths: RLPaths, tok: Tokenizer, config: RLConfig) -> int:
    """Every model reads the same token ids and fits prompt + reply; returns the policy's context length.

    Only config.json files are read (no weights): a mismatch is reported in milliseconds."""
    vocab = tok.get_vocab_size()
    need = config.max_prompt_tokens + config.max_new_tokens
    eval_need = config.eval_max_new_tokens + 1
    policy_context = None
    for label, path in (
        ("policy", paths.policy),
        ("reward_model", paths.reward_model),
        ("critic_init", paths.critic_init),
    ):
        if path is None:
            continue
        file = Path(path) / "config.json"
        try:
            model = json.loads(file.read_text())["model"]
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"{label}: {file} is not a model directory's config ({e})") from None
        if model["vocab_size"] < vocab:
            raise ConfigError(
                f"{label} ({path}) has vocab_size {model['vocab_size']} but the policy's tokenizer has "
                f"{vocab} tokens: the models must come from the same tokenizer"
            )
        if model["context_length"] < max(need, eval_need):
            raise ConfigError(
                f"{label} ({path}) has context_length {model['context_length']}, less than max_prompt_tokens "
                f"{config.max_prompt_tokens} + max_new_tokens {config.max_new_tokens} = {need}: lower them"
            )
        if label == "policy":
            policy_context = model["context_length"]
    return policy_context or 0


__all__ = ["RLRun", "check_models", "resolve_paths"]
