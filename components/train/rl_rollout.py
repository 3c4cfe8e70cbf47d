"""What PPO and GRPO share: the config fields, the rollout data, the prompt stream, checkpoints, and the
driver loop that runs an algorithm's iterations with monitoring, evaluation and resume.

One iteration (the algorithm, `ppo.PPO` or `grpo.GRPO`, fills in the middle):

    prompts (the stream's next batch) -> generation -> scoring (RM / verifier, old log-probs, reference
    log-probs, values: no gradients, once per batch) -> experience (rewards, advantages) -> training
    -> health metrics + alarms -> (samples, evaluation, checkpoint)

The driver (`RLRun`) runs in the stage's task, which reserves no CPU: the roles' actors hold the
resources and do the tensor work (`rl_roles`). It keeps everything that is not a model -- the step, the
prompt stream's position, the KL controller, the monitor's history, the evaluation before training -- in
a JSON state beside the roles' checkpoints, under the stage's scratch directory, which is stable for the
same cache key:

    <scratch>/checkpoints/step_000010/policy/   model.safetensors, optimizer.pt, RNG (trainer's layout)
                                     /critic/   (PPO)
                                     /state.json  written last: a step directory without it is unfinished

So a rerun of the stage after a crash resumes at the latest checkpoint, and a role process that dies
mid-run makes the driver restart the roles from it (``max_failures`` times). Everything the next
iteration depends on is in the checkpoint (weights, AdamW state, sampling generator, step, data
position, KL coefficient), so a resumed run computes the same iterations as an uninterrupted one, and
`MetricLogger` keeps the MLflow history free of duplicated steps.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError, StageConfig, StrictModel
from components.core.stage import StageContext
from components.train.rl_monitor import MonitorConfig, RLMonitor, curves_figure, sample_table
from components.train.trainer import DTYPE_HELP, DTypeSetting, MetricLogger, Runtime

STATE_FILE = "state.json"
TOKENIZER_FILE = "tokenizer.json"

# --------------------------------------------------------------------------------------------------------
# Where the roles run (the classes are in rl_roles)
# --------------------------------------------------------------------------------------------------------

Placement = Literal["colocate", "separate", "inline"]


class RoleResources(StrictModel):
    """What one role's Ray actor reserves (``separate``) or the one actor of all roles (``colocate``)."""

    num_cpus: float = Field(1.0, ge=0, description="CPU cores reserved; torch uses this many threads.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved; > 0 puts the role's models on a GPU.")


class RoleSettings(StrictModel):
    """Where the RL roles run and with what. See the module docstring of `components.train.rl_roles`."""

    placement: Placement = Field(
        "colocate",
        description="colocate: all roles in one actor (small models, one device); separate: one actor "
        "per role with the resources below (large models, a cluster); inline: in the stage's own "
        "process without Ray (tests, debugging).",
    )
    colocated: RoleResources = Field(
        default_factory=RoleResources, description="Resources of the one actor under colocate."
    )
    policy: RoleResources = Field(default_factory=RoleResources, description="Policy actor (separate).")
    critic: RoleResources = Field(default_factory=RoleResources, description="Critic actor (separate).")
    reference: RoleResources = Field(default_factory=RoleResources, description="Reference actor (separate).")
    reward: RoleResources = Field(default_factory=RoleResources, description="Reward scorer (separate).")
    dtype: DTypeSetting = Field("auto", description=DTYPE_HELP)
    torch_threads: int | None = Field(
        None, ge=1, description="Torch threads per role process; None = the CPUs it reserves."
    )

    def resources(self, role: str) -> RoleResources:
        return self.colocated if self.placement == "colocate" else getattr(self, role)

    def threads(self, role: str) -> int:
        return self.torch_threads or max(1, int(self.resources(role).num_cpus))


# --------------------------------------------------------------------------------------------------------
# Config fields PPO and GRPO share
# --------------------------------------------------------------------------------------------------------


class RLConfig(StageConfig):
    """Rollouts, the policy update, evaluation, monitoring, checkpoints and placement (PPO and GRPO).

    Defaults are the `tiny` demo: a few million parameters on one CPU core per stage, about a minute."""

    # -- length of training and rollouts --
    iterations: int = Field(16, ge=1, description="Rollout + update cycles (one 'step' in the metrics).")
    rollout_batch_size: int = Field(32, ge=1, description="Prompts per iteration.")
    max_prompt_tokens: int = Field(
        128, ge=1, description="Longer rendered prompts are dropped (counted) when the data is loaded."
    )
    max_new_tokens: int = Field(48, ge=1, description="Longest reply sampled; longer replies are cut off.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature; log-probs are taken at the same temperature."
    )
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely tokens; None = all.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling; None = off.")
    generation_batch_size: int = Field(64, ge=1, description="Rows generated together (KV-cache batch).")
    missing_eos_penalty: float | None = Field(
        None,
        ge=0,
        description="Subtracted from the reward of a reply that never closes its turn within "
        "max_new_tokens (TRL's missing_eos_penalty); None = no penalty.",
    )

    # -- the policy update --
    lr: float = Field(1e-5, gt=0, description="Peak learning rate of the policy.")
    warmup_iterations: int = Field(0, ge=0, description="Linear learning-rate warm-up, in iterations.")
    min_lr_ratio: float = Field(
        1.0, ge=0, le=1, description="Cosine decay to this fraction of lr at the end; 1 = constant."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (matrices and embeddings).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 = off.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout (OpenRLHF 1, TRL 4).")
    mini_batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    micro_batch_size: int = Field(16, ge=1, description="Sequences per forward/backward (memory bound).")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="Policy ratio clip range (1 +- eps).")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight in the policy loss.")
    target_kl: float | None = Field(
        None,
        gt=0,
        description="Early stop: skip the rest of an iteration's updates once a mini-batch's approximate KL "
        "to the rollout policy exceeds 1.5 x target_kl; None = never.",
    )
    normalize_reward: bool = Field(
        True,
        description="Divide RM scores into z-scores with the reward model's reward_stats (its train "
        "pairs' mean and std), so reward scales and thresholds mean the same for any RM.",
    )

    # -- evaluation --
    eval_limit: int | None = Field(None, ge=1, description="Held-out prompts evaluated; None = all.")
    eval_max_new_tokens: int = Field(64, ge=1, description="Longest reply in evaluation (greedy).")
    eval_batch_size: int = Field(64, ge=1, description="Prompts generated together in evaluation.")
    eval_every: int = Field(
        0, ge=0, description="Also evaluate every N iterations (eval/* curves); 0 = before and after only."
    )

    # -- monitoring, checkpoints, failures, placement --
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="Health alarms, samples.")
    checkpoint_every: int = Field(8, ge=1, description="Checkpoint every N iterations (and at the last).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the newest).")
    max_failures: int = Field(
        2, ge=0, description="Restarts of the roles (from the latest checkpoint) after a role process dies."
    )
    roles: RoleSettings = Field(default_factory=RoleSettings, description="Where the roles run, on what.")
    seed: int | None = Field(None, description="Seed of sampling and mini-batch order; None = pipeline seed.")
    fail_marker_dir: str | None = Field(
        None,
        description="Test hook: after iteration N, if <dir>/step-N exists, it is deleted and the run dies "
        "(the policy's process under Ray, the stage itself inline).",
    )

    @model_validator(mode="after")
    def _check_batches(self) -> RLConfig:
        if self.micro_batch_size > self.mini_batch_size:
            raise ValueError(
                f"micro_batch_size {self.micro_batch_size} > mini_batch_size {self.mini_batch_size}: a "
                "mini-batch is accumulated from micro-batches"
            )
        return self

    @property
    def seed_value(self) -> int:
        return self.seed or 0

    @property
    def loss_kl_coef(self) -> float:
        """Weight of a k3 KL-to-reference term in the policy loss (GRPO's; PPO puts the KL in the reward)."""
        return 0.0

    @property
    def rows_per_iteration(self) -> int:
        return self.rollout_batch_size


# --------------------------------------------------------------------------------------------------------
# Rollout data
# --------------------------------------------------------------------------------------------------------


def _pad_right(x: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _pad_left(x: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)


@dataclass
class Rollout:
    """Sampled replies in generation's layout: left-padded prompts (width P), then responses (width N)
    right-padded after each row's stop token. See `components.model.generate.Generation`."""

    sequences: Tensor  # (B, P + N) long
    attention_mask: Tensor  # (B, P + N) long: 1 on real prompt and response tokens
    prompt_length: int  # P
    response_mask: Tensor  # (B, N) long: 1 on generated tokens up to and including the stop token
    finished: Tensor  # (B,) bool: the row produced its stop token

    @classmethod
    def from_generation(cls, out: Any) -> Rollout:
        return cls(out.sequences, out.attention_mask, out.prompt_length, out.response_mask, out.finished)

    @property
    def size(self) -> int:
        return self.sequences.shape[0]

    @property
    def num_response_tokens(self) -> int:
        return self.response_mask.shape[1]

    @property
    def responses(self) -> Tensor:
        return self.sequences[:, self.prompt_length :]

    def response_lists(self) -> list[list[int]]:
        return [row[m.bool()].tolist() for row, m in zip(self.responses, self.response_mask, strict=True)]

    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def select(self, rows: slice | Tensor) -> Rollout:
        return Rollout(
            self.sequences[rows],
            self.attention_mask[rows],
            self.prompt_length,
            self.response_mask[rows],
            self.finished[rows],
        )

    def to(self, device: torch.device | str) -> Rollout:
        return Rollout(
            self.sequences.to(device),
            self.attention_mask.to(device),
            self.prompt_length,
            self.response_mask.to(device),
            self.finished.to(device),
        )

    @classmethod
    def concat(cls, parts: Sequence[Rollout], *, pad_token_id: int) -> Rollout:
        """Rows of several rollouts in one: prompts re-padded on the left to the widest P, responses on
        the right to the longest N, so the layout (and every row's real tokens) stays the same."""
        if len(parts) == 1:
            return parts[0]
        P = max(p.prompt_length for p in parts)
        N = max(p.num_response_tokens for p in parts)

        def widen(p: Rollout) -> tuple[Tensor, Tensor]:
            prompt = _pad_left(p.sequences[:, : p.prompt_length], P, pad_token_id)
            prompt_mask = _pad_left(p.attention_mask[:, : p.prompt_length], P, 0)
            response = _pad_right(p.responses, N, pad_token_id)
            response_mask = _pad_right(p.response_mask, N, 0)
            return torch.cat([prompt, response], 1), torch.cat([prompt_mask, response_mask], 1)

        widened = [widen(p) for p in parts]
        return cls(
            torch.cat([w[0] for w in widened]),
            torch.cat([w[1] for w in widened]),
            P,
            torch.cat([_pad_right(p.response_mask, N, 0) for p in parts]),
            torch.cat([p.finished for p in parts]),
        )


@dataclass
class Scores:
    """What the reward scorer says about each reply of a rollout (CPU tensors, (B,))."""

    reward: Tensor  # the reward the update optimises (before the KL penalty and EOS penalty)
    rm: Tensor | None  # raw reward-model score (None without an RM)
    rm_normalized: Tensor | None  # the same as a z-score with the RM's reward_stats
    gold: Tensor  # verifier score, NaN where the prompt has no verifiable answer
    replies: list[str]  # reply texts (for sample tables)
    ended: Tensor  # bool: closed with <|im_end|>
    leaked_role: Tensor  # bool: wrote another role's turn


@dataclass
class Experience:
    """A scored rollout ready for the update: per-token tensors over response positions (B, N)."""

    rollout: Rollout
    mask: Tensor  # bool, response tokens only: prompt and padding are never trained on
    advantages: Tensor
    old_logp: Tensor  # the sampling policy's log-probs (the ratio's denominator)
    ref_logp: Tensor | None = None  # the reference's (GRPO's KL loss term)
    old_values: Tensor | None = None  # the critic's values at rollout time (PPO)
    returns: Tensor | None = None  # GAE returns, the critic's targets (PPO)

    @property
    def size(self) -> int:
        return self.rollout.size

    def _map(self, fn: Callable[[Tensor], Tensor], rollout: Rollout) -> Experience:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if f.name != "rollout" and getattr(self, f.name) is not None
        }
        return replace(self, rollout=rollout, **changes)

    def select(self, rows: slice | Tensor) -> Experience:
        return self._map(lambda t: t[rows], self.rollout.select(rows))

    def to(self, device: torch.device | str) -> Experience:
        return self._map(lambda t: t.to(device), self.rollout.to(device))


def apply_missing_eos_penalty(reward: Tensor, finished: Tensor, penalty: float | None) -> Tensor:
    """reward - penalty for every reply that did not produce its stop token."""
    if not penalty:
        return reward
    return reward - penalty * (~finished.bool()).to(reward.dtype)


# --------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------


@dataclass
class PromptSet:
    """RL prompt records and their rendered ids (``<|im_start|>assistant<|im_sep|>`` appended)."""

    records: list[dict[str, Any]]
    ids: list[list[int]]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> records left out

    def __len__(self) -> int:
        return len(self.records)


def encode_prompts(
    tok: Any,
    records: Sequence[dict[str, Any]],
    *,
    max_prompt_tokens: int,
    keep: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> PromptSet:
    """Render each record's prompt for generation; leave out (and count) records whose prompt is longer
    than `max_prompt_tokens` and those `keep` rejects (it returns the reason, or None to keep)."""
    from components.tokenizer.chat import render

    kept, ids, dropped = [], [], {}
    for record in records:
        reason = keep(record) if keep else None
        if reason is None:
            rendered = render(tok, record["prompt"], add_generation_prompt=True).ids
            if len(rendered) > max_prompt_tokens:
                reason = "too_long"
            else:
                kept.append(record)
                ids.append(rendered)
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
    return PromptSet(kept, ids, dropped)


class PromptStream:
    """An endless, seeded walk over ``n`` prompts: each epoch a fresh permutation, seeded by (seed, epoch).

    Its position (epoch, index) is all a checkpoint needs: the order is recomputed from the seed."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("no prompts to train on")
        self.n, self.seed = n, seed
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.index == self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            step = min(k - len(out), self.n - self.index)
            out += self._order[self.index : self.index + step]
            self.index += step
        return out

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.index / self.n

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if (state["n"], state["seed"]) != (self.n, self.seed):
            raise ValueError(
                f"checkpoint's prompt stream has n={state['n']}, seed={state['seed']}; this run has "
                f"n={self.n}, seed={self.seed}: the prompts changed under the same cache key"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)


# --------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------


class RLCheckpoints:
    """Step directories under `root` in the artifact store, each complete once its state.json exists;
    the newest `keep` stay. The roles write their own parts (`save(uri)`), wherever they run."""

    def __init__(self, store: ArtifactStore, root: str, keep: int) -> None:
        self.store, self.root, self.keep = store, root, keep

    def _complete(self) -> list[tuple[int, str]]:
        steps = []
        for name in self.store.listdir(self.root):
            if name.startswith("step_") and self.store.exists(self.store.join(self.root, name, STATE_FILE)):
                steps.append((int(name.removeprefix("step_")), self.store.join(self.root, name)))
        return sorted(steps)

    def latest(self) -> tuple[str, dict[str, Any]] | None:
        complete = self._complete()
        if not complete:
            return None
        _, directory = complete[-1]
        return directory, self.store.read_json(self.store.join(directory, STATE_FILE))

    def directory(self, step: int) -> str:
        return self.store.join(self.root, f"step_{step:06d}")

    def begin(self, step: int) -> str:
        """A fresh directory for step `step` (an unfinished one from a crash is cleared first)."""
        directory = self.directory(step)
        self.store.remove(directory)
        return directory

    def commit(self, step: int, state: dict[str, Any]) -> None:
        """Write state.json last (atomically), then drop older and unfinished step directories."""
        directory = self.directory(step)
        self.store.write_json(self.store.join(directory, STATE_FILE), state)
        complete = [d for _, d in self._complete()]
        keep = set(complete[-self.keep :])
        for name in self.store.listdir(self.root):
            d = self.store.join(self.root, name)
            if name.startswith("step_") and d not in keep and d != directory:
                self.store.remove(d)


# --------------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------------


@dataclass
class RLPaths:
    """Local paths of the stage's inputs, as the roles open them."""

    policy: str
    tokenizer: str
    reward_model: str | None = None
    critic_init: str | None = None


@dataclass
class IterationResult:
    """What an algorithm's iteration hands back to the driver."""

    metrics: dict[str, float | None]  # logged at this step (rollout/*, train/*, time/*)
    records: list[dict[str, Any]]  # the prompt record of each rollout row (sample tables)
    scores: Scores
    lengths: Tensor  # (B,) reply lengths in tokens
    tokens: int  # real tokens in the rollout (prompt + reply), for tokens/s


class RLAlgorithm:
    """What `RLRun` needs from PPO or GRPO (subclassed in `ppo.py` and `grpo.py`)."""

    name = "rl"
    trainable_roles: tuple[str, ...] = ("policy",)

    def __init__(self, config: RLConfig) -> None:
        self.config = config

    def keep_record(self, record: Mapping[str, Any]) -> str | None:
        """None to train on a prompt record, or the reason it is left out."""
        return None

    def check_inputs(self, paths: RLPaths, context_length: int) -> None:
        """Refuse inputs that cannot work, before any actor starts."""

    def role_specs(self, paths: RLPaths) -> dict[str, Any]:
        raise NotImplementedError

    def iteration(self, roles: Any, prompts: PromptSet, batch: list[int], step: int) -> IterationResult:
        raise NotImplementedError

    def reset(self) -> None:
        """Back to the state before the first iteration (a fresh KL controller)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, float]:
        """Extra headline numbers of the algorithm (e.g. PPO's final KL coefficient)."""
        return {}


class SimulatedCrash(RuntimeError):
    """Raised by the ``fail_marker_dir`` test hook under the inline placement."""


def phase_timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


class RLRun:
    """Runs one RL stage: setup, (resume), iterations, evaluation, output. See the module docstring."""

    def __init__(
        self, ctx: StageContext, config: RLConfig, inputs: Mapping[str, Artifact], algorithm: RLAlgorithm
    ):
        from components.eval.chat_eval import is_verifiable
        from components.tokenizer.bpe import load_tokenizer
        from components.train.datasets import load_prompts

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
        self.state: dict[str, Any] = {}

    # -- the whole run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Artifact]:
        """Iterate to the end, restarting the roles from the latest checkpoint when a role process dies."""
        from components.train.rl_roles import RoleGroup

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

    def _restore(self, roles: Any) -> None:
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

    def _train(self, roles: Any) -> None:
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
            if cfg.fail_marker_dir:
                self._die_if_marked(roles, step)
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

    def _checkpoint(self, roles: Any, step: int) -> None:
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

    def _die_if_marked(self, roles: Any, step: int) -> None:
        marker = Path(self.config.fail_marker_dir) / f"step-{step}"
        if not marker.exists():
            return
        marker.unlink()
        self.logger.flush()
        if self.config.roles.placement == "inline":
            raise SimulatedCrash(f"simulated crash after iteration {step}")
        roles.call("policy", "crash")  # the policy's process exits; the next call finds it dead

    # -- evaluation and output -------------------------------------------------------------------------------

    def _log_eval(self, evaluation: Any, *, step: int, label: str | None = None) -> None:
        from components.eval.chat_eval import format_samples

        self.logger.log({f"eval/{k}": v for k, v in evaluation.metrics.items()}, step)
        if step > 0:
            self.state["evals"].append({"step": step, **evaluation.metrics})
        title = label or f"iteration {step}"
        self.logger.log_text(
            format_samples(evaluation.samples, title=title), f"eval/samples_step_{step:05d}.txt"
        )

    def _finish(self, roles: Any) -> dict[str, Artifact]:
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
            "kl_budget": cfg.monitor.kl_budget,
            "rollout_rm_score_z": recent("rollout/rm_score_z"),
            "rollout_gold_score": recent("rollout/gold_score"),
            "alarms_fired": float(len(self.monitor.first_fired)),
            **{f"alarm.{k}": float(v) for k, v in self.monitor.first_fired.items()},
            "iterations": float(step),
            "tokens_per_s": timing["tokens"] / timing["seconds"] if timing["seconds"] else None,
            "generation_s": timing["generation_s"],
            "scoring_s": timing["scoring_s"],
            "training_s": timing["training_s"],
            **self.algorithm.summary(),
        }
        ctx.report(**{k: v for k, v in headline.items() if v is not None})
        if history:
            figure = curves_figure(history, self.monitor.first_fired, title=f"{name}: RM score vs gold score")
            ctx.tracker.log_figure(figure, "curves/rm_vs_gold.png")
            import matplotlib.pyplot as plt

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


def check_models(paths: RLPaths, tok: Any, config: RLConfig) -> int:
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


__all__ = [
    "Experience",
    "IterationResult",
    "PromptSet",
    "PromptStream",
    "RLAlgorithm",
    "RLCheckpoints",
    "RLConfig",
    "RLPaths",
    "RLRun",
    "RoleResources",
    "RoleSettings",
    "Rollout",
    "Scores",
    "SimulatedCrash",
    "apply_missing_eos_penalty",
    "check_models",
    "encode_prompts",
    "phase_timer",
    "resolve_paths",
]
