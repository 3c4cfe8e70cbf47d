"""The roles of an RL run that hold a language model: the policy, the critic and the reference.

PPO has four models (InstructGPT, Ouyang et al. 2022; OpenRLHF's actor/critic/reference/reward); GRPO
drops the critic:

- `PolicyActor`: the policy being trained (from the SFT model). It samples the rollouts (batched, with
  the KV cache), recomputes their log-probs without gradients ("old" log-probs), runs the clipped policy
  updates, evaluates itself on held-out prompts (`chat_eval`) and writes the final model directory.
- `Critic`: a `ScalarHeadModel` giving one value per token, initialised from the reward model or the SFT
  model; trained on the GAE returns with the clipped value loss.
- `Reference`: the frozen SFT model; its log-probs measure how far the policy moved (the KL).
- The fourth, the reward scorer, reads replies and scores them: `components.train.rl.rewards`.

Each role is a plain Python class deriving from `Role`; `components.train.rl.placement` puts them in
Ray actors or in the caller's process. Conventions every role follows:

- Tensors cross role boundaries on the CPU (`Rollout`, `Experience` in `components.train.rl.batch`); a
  role moves them to its device and returns CPU tensors.
- Dropout is off for the whole run (the models stay in eval mode, also while training): with dropout the
  log-probs of one sequence differ between passes, so the first PPO mini-batch would not have ratio 1
  and the "old" log-probs would not be the policy that sampled (TRL and OpenRLHF disable it too).
- Per-token quantities are over RESPONSE positions: the logits at position ``P - 1 + t`` score response
  token ``t`` (P = padded prompt width), and the critic's value for token ``t`` is read at the same
  position, the state before the token is chosen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fsspec
import torch
from torch import Tensor, nn

from components.core.artifacts import stage_in, stage_out, tree_digest
from components.eval.chat_eval import ChatEval, chat_eval
from components.model.checkpoint import load_model_dir, save_model_dir
from components.model.generate import generate
from components.model.gpt import GPT
from components.model.heads import ScalarHeadModel, load_scalar_model_dir, scalar_model_from_gpt
from components.model.tools import ToolRunner
from components.tokenizer.bpe import eot_id, load_tokenizer
from components.tokenizer.chat import ChatTokens
from components.train.rl.batch import CriticStats, Experience, MinibatchStats, PolicyStats, Rollout
from components.train.rl.config import PPOConfig, RLConfig
from components.train.rl.formulas import (
    entropy_from_logits,
    kl_penalty_loss,
    logprobs_from_logits,
    masked_mean,
    policy_loss,
    should_early_stop,
    value_loss,
)
from components.train.trainer import (
    Runtime,
    clip_and_step,
    load_checkpoint_state,
    load_checkpoint_weights,
    lr_at,
    make_optimizer,
    save_checkpoint,
    set_lr,
    setup_runtime,
)

GENERATOR_FILE = "generator.pt"
SCALAR_FORMAT = "gptrecipe-scalar"


def model_format(model_dir: str | Path) -> str | None:
    """The ``format`` of a model directory's config.json ("gptrecipe-gpt", "gptrecipe-scalar")."""
    try:
        return json.loads((Path(model_dir) / "config.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------------------
# Forward passes over response positions
# --------------------------------------------------------------------------------------------------------


def response_logits(model: GPT, rollout: Rollout, temperature: float) -> Tensor:
    """(B, N, V) float32 logits scoring each response token, divided by the sampling temperature.

    The LM head runs on the N response positions only (the prompt's logits are never needed). Dividing
    by the temperature makes the trained distribution the one that was sampled from (TRL does the same);
    at temperature 1 it changes nothing.
    """
    P, N = rollout.prompt_length, rollout.num_response_tokens
    hidden = model.hidden_states(rollout.sequences, attention_mask=rollout.attention_mask)
    logits = model.lm_head(hidden[:, P - 1 : P + N - 1]).float()
    return logits / temperature if temperature != 1.0 else logits


def response_values(critic: nn.Module, rollout: Rollout) -> Tensor:
    """(B, N) float32 critic values, the one for response token t read at position P - 1 + t."""
    P, N = rollout.prompt_length, rollout.num_response_tokens
    values = critic(rollout.sequences, attention_mask=rollout.attention_mask)
    return values[:, P - 1 : P + N - 1].float()


def micro_batches(size: int, micro: int) -> Iterator[slice]:
    for lo in range(0, size, micro):
        yield slice(lo, min(size, lo + micro))


def _mean_stats(rows: Sequence[MinibatchStats]) -> MinibatchStats:
    """Per statistic, the mean over the mini-batches that measured it (None where none did)."""
    means: MinibatchStats = {}
    for key in sorted({k for row in rows for k in row}):
        values = [value for row in rows if (value := row.get(key)) is not None]
        means[key] = sum(values) / len(values) if values else None
    return means


# --------------------------------------------------------------------------------------------------------
# The roles
# --------------------------------------------------------------------------------------------------------


class Role:
    """What every role has: the config, its runtime (device, dtype, threads), a label for errors.

    A role is built as ``cls(*args, threads=n, **kwargs)`` from a `placement.RoleSpec`, in the process
    that hosts it; its public methods are what the driver calls by name."""

    role = "role"

    def __init__(self, config: RLConfig, threads: int) -> None:
        self.config = config
        self.runtime: Runtime = setup_runtime(config.roles.dtype, threads)

    def _to_device(self, rollout: Rollout) -> Rollout:
        return rollout.to(self.runtime.device)

    def ping(self) -> str:
        """A cheap call that fails only if the role's process is gone (used after a restart)."""
        return f"{self.role} on {self.runtime.device}"


class TrainableRole(Role):
    """A role with weights and an optimizer: checkpoints and the per-iteration learning rate."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def _make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """AdamW over `self.model` with the config's settings and peak learning rate `lr`."""
        cfg = self.config
        return make_optimizer(
            self.model,
            lr=lr,
            weight_decay=cfg.weight_decay,
            betas=cfg.betas,
            eps=cfg.eps,
            device=self.runtime.device,
        )

    def _set_lr(self, peak: float, iteration: int) -> float:
        cfg = self.config
        lr = lr_at(
            iteration,
            max_steps=cfg.iterations,
            lr=peak,
            warmup_steps=cfg.warmup_iterations,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        set_lr(self.optimizer, lr)
        return lr

    def _minibatch_order(self, iteration: int, epoch: int, size: int) -> Tensor:
        # A function of (seed, iteration, epoch) alone, so a resumed run visits the same mini-batches.
        generator = torch.Generator().manual_seed(
            self.config.seed_value * 1_000_003 + iteration * 101 + epoch
        )
        return torch.randperm(size, generator=generator)

    def save(self, uri: str) -> None:
        """Weights (safetensors), optimizer state and RNG state into the directory `uri` (a store path
        or URL; the trainer's layout)."""
        with stage_out(uri) as directory:
            self._save(directory)

    def load(self, uri: str) -> None:
        with stage_in(uri) as directory:
            self._load(directory)

    def _save(self, directory: Path) -> None:
        save_checkpoint(directory, self.model, self.optimizer, {"role": self.role}, self.runtime)

    def _load(self, directory: Path) -> None:
        load_checkpoint_weights(directory, self.model)
        load_checkpoint_state(directory, self.model, self.optimizer, self.runtime)


class PolicyActor(TrainableRole):
    """The policy: generation, old log-probs, clipped PPO updates, evaluation, the output model."""

    role = "policy"

    def __init__(
        self,
        config: RLConfig,
        model_dir: str,
        tokenizer_file: str,
        *,
        threads: int = 1,
        eval_reward_model_dir: str | None = None,
    ) -> None:
        super().__init__(config, threads)
        device = self.runtime.device
        self.model, self.model_config = load_model_dir(model_dir, device=device, dtype=torch.float32)
        self.model.eval()  # dropout off for the whole run (module docstring)
        self.optimizer = self._make_optimizer(config.lr)
        self.tokenizer = load_tokenizer(tokenizer_file)
        special = ChatTokens.of(self.tokenizer)
        self.stop_id = special.im_end
        self.pad_id = eot_id(self.tokenizer)
        self.generator = torch.Generator(device=device).manual_seed(config.seed_value)
        self.tools = ToolRunner(self.tokenizer) if config.tools and special.has_tools else None
        self.eval_reward_model_dir = eval_reward_model_dir
        self.eval_reward_model: ScalarHeadModel | None = None  # loaded on first use, or shared when colocated

    # -- rollouts ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: list[list[int]]) -> Rollout:
        """Sample one reply per prompt (repeat a prompt to get a group), micro-batch by micro-batch."""
        cfg = self.config
        parts = []
        for rows in micro_batches(len(prompts), cfg.generation_batch_size):
            with self.runtime.autocast():
                out = generate(
                    self.model,
                    prompts[rows],
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature,
                    top_k=cfg.top_k,
                    top_p=cfg.top_p,
                    stop_tokens=[self.stop_id],
                    pad_token_id=self.pad_id,
                    generator=self.generator,
                    tools=self.tools,
                )
            parts.append(Rollout.from_generation(out).to("cpu"))
        return Rollout.concat(parts, pad_token_id=self.pad_id)

    @torch.no_grad()
    def logprobs(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """(old log-probs, entropies), each (B, N), of the response tokens under the current policy.

        Computed with the same forward (and temperature) as the training loss, so on the first mini-batch
        of an iteration the ratio is exactly 1."""
        rollout = self._to_device(rollout)
        logp, entropy = [], []
        for rows in micro_batches(rollout.size, self.config.micro_batch_size):
            part = rollout.select(rows)
            with self.runtime.autocast():
                logits = response_logits(self.model, part, self.config.temperature)
            logp.append(logprobs_from_logits(logits, part.responses))
            entropy.append(entropy_from_logits(logits))
        return torch.cat(logp).cpu(), torch.cat(entropy).cpu()

    # -- training ----------------------------------------------------------------------------------------

    def train(self, experience: Experience, iteration: int) -> PolicyStats:
        """PPO epochs over shuffled mini-batches of `experience` with the clipped policy loss.

        loss = policy_loss - entropy_coef * entropy [+ kl_coef * k3 KL to the reference (GRPO)]

        Token-level mean over each mini-batch's response tokens (micro-batches are weighted by their share
        of its tokens, so accumulating them gives the mean over the whole mini-batch). Before each update
        the mini-batch's approximate KL to the rollout policy is checked: past 1.5 x target_kl the update
        is skipped and the remaining epochs are dropped (early stop). Returns the per-mini-batch stats
        and their means."""
        cfg = self.config
        lr = self._set_lr(cfg.lr, iteration)
        experience = experience.to(self.runtime.device)
        minibatches: list[MinibatchStats] = []
        stopped = False
        for epoch in range(cfg.ppo_epochs):
            order = self._minibatch_order(iteration, epoch, experience.size)
            for lo in range(0, experience.size, cfg.mini_batch_size):
                stats = self._update(experience.select(order[lo : lo + cfg.mini_batch_size]))
                stats["epoch"] = float(epoch)
                minibatches.append(stats)
                if stats["early_stopped"]:
                    stopped = True
                    break
            if stopped:
                break
        updates = [s for s in minibatches if not s["early_stopped"]]
        return {
            "minibatches": minibatches,
            "mean": _mean_stats(updates or minibatches),
            "early_stopped": stopped,
            "updates": len(updates),
            "epochs": max(float(s["epoch"] or 0.0) for s in minibatches) + 1,
            "lr": lr,
        }

    def _update(self, batch: Experience) -> MinibatchStats:
        """Forward/backward of one mini-batch (micro-batched), then one optimizer step unless stopped."""
        cfg = self.config
        total_tokens = float(batch.mask.sum())
        sums: dict[str, float] = {}
        for rows in micro_batches(batch.size, cfg.micro_batch_size):
            part = batch.select(rows)
            weight = float(part.mask.sum()) / total_tokens
            with self.runtime.autocast():
                logits = response_logits(self.model, part.rollout, cfg.temperature)
            logp = logprobs_from_logits(logits, part.rollout.responses)
            loss, stats = policy_loss(logp, part.old_logp, part.advantages, part.mask, cfg.clip_eps)
            entropy = masked_mean(entropy_from_logits(logits), part.mask)
            total = loss - cfg.entropy_coef * entropy
            values = {
                "policy_loss": float(stats["loss"]),
                "clip_fraction": float(stats["clip_fraction"]),
                "approx_kl": float(stats["approx_kl"]),
                "approx_kl_k3": float(stats["approx_kl_k3"]),
                "ratio_mean": float(stats["ratio_mean"]),
                "entropy": float(entropy.detach()),
            }
            if cfg.loss_kl_coef > 0:
                if part.ref_logp is None:
                    raise ValueError("a KL loss term needs the reference log-probs in the experience")
                kl = kl_penalty_loss(logp, part.ref_logp, part.mask)
                total = total + cfg.loss_kl_coef * kl
                values["kl_loss"] = float(kl.detach())
            (total * weight).backward()
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value * weight
            sums["ratio_max"] = max(sums.get("ratio_max", 0.0), float(stats["ratio_max"]))
        if should_early_stop(sums["approx_kl"], cfg.target_kl):
            self.optimizer.zero_grad(set_to_none=True)
            return {**sums, "early_stopped": True, "grad_norm": None}  # no step: no gradient norm to report
        grad_norm = float(clip_and_step(self.model, self.optimizer, cfg.grad_clip))
        return {**sums, "early_stopped": False, "grad_norm": grad_norm}

    # -- evaluation and output -----------------------------------------------------------------------------

    def evaluate(self, records: list[dict[str, Any]], *, limit: int | None = None) -> ChatEval:
        """`chat_eval` of the current policy on held-out records (greedy: deterministic)."""
        cfg = self.config
        if self.eval_reward_model is None and self.eval_reward_model_dir:
            self.eval_reward_model, _ = load_scalar_model_dir(
                self.eval_reward_model_dir, device=self.runtime.device
            )
        with self.runtime.autocast():
            return chat_eval(
                self.model,
                self.tokenizer,
                records,
                max_new_tokens=cfg.eval_max_new_tokens,
                batch_size=cfg.eval_batch_size,
                temperature=0.0,
                seed=cfg.seed_value,
                reward_model=self.eval_reward_model,
                limit=limit,
                tools=cfg.tools,
            )

    def _save(self, directory: Path) -> None:
        super()._save(directory)
        torch.save(self.generator.get_state(), directory / GENERATOR_FILE)

    def _load(self, directory: Path) -> None:
        super()._load(directory)
        self.generator.set_state(torch.load(directory / GENERATOR_FILE, weights_only=True))

    def export(self, uri: str, tokenizer_file: str, extra: dict[str, Any]) -> str:
        """Write the policy as a model directory (config.json, model.safetensors, tokenizer.json) at
        `uri`, a store path or URL; returns its digest."""
        with stage_out(uri) as directory:
            save_model_dir(self.model, directory, tokenizer_path=tokenizer_file, extra=extra, overwrite=True)
            return tree_digest(fsspec.filesystem("file"), str(directory))

    def weights(self) -> dict[str, Tensor]:
        """The policy's weights on the CPU (tests compare runs with them)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


class Critic(TrainableRole):
    """The value model: a `ScalarHeadModel`, one value per response token, trained on GAE returns."""

    role = "critic"

    config: PPOConfig  # the critic is PPO's: it reads critic_lr and value_clip

    def __init__(self, config: PPOConfig, init_dir: str, *, threads: int = 1) -> None:
        super().__init__(config, threads)
        device = self.runtime.device
        if model_format(init_dir) == SCALAR_FORMAT:  # the reward model (or an earlier critic)
            self.model, _ = load_scalar_model_dir(init_dir, device=device, dtype=torch.float32)
        else:  # a GPT model directory (the SFT model): its trunk, a zero value head
            self.model = scalar_model_from_gpt(init_dir, device=device).float()
        self.model.eval()
        self.optimizer = self._make_optimizer(config.critic_lr)

    @torch.no_grad()
    def values(self, rollout: Rollout) -> Tensor:
        rollout = self._to_device(rollout)
        out = []
        for rows in micro_batches(rollout.size, self.config.micro_batch_size):
            with self.runtime.autocast():
                out.append(response_values(self.model, rollout.select(rows)))
        return torch.cat(out).cpu()

    def train(self, experience: Experience, iteration: int) -> CriticStats:
        """The clipped value loss over the same epochs and mini-batch size as the policy (the critic does
        not early-stop: the policy's KL says nothing about how well the values fit)."""
        cfg = self.config
        lr = self._set_lr(cfg.critic_lr, iteration)
        experience = experience.to(self.runtime.device)
        minibatches: list[MinibatchStats] = []
        for epoch in range(cfg.ppo_epochs):
            order = self._minibatch_order(iteration, epoch, experience.size)
            for lo in range(0, experience.size, cfg.mini_batch_size):
                batch = experience.select(order[lo : lo + cfg.mini_batch_size])
                total_tokens = float(batch.mask.sum())
                sums: dict[str, float] = {}
                for rows in micro_batches(batch.size, cfg.micro_batch_size):
                    part = batch.select(rows)
                    weight = float(part.mask.sum()) / total_tokens
                    with self.runtime.autocast():
                        values = response_values(self.model, part.rollout)
                    loss, stats = value_loss(values, part.old_values, part.returns, part.mask, cfg.value_clip)
                    (loss * weight).backward()
                    for key in ("loss", "value_clip_fraction", "value_mean"):
                        sums[key] = sums.get(key, 0.0) + float(stats[key]) * weight
                sums["grad_norm"] = float(clip_and_step(self.model, self.optimizer, cfg.grad_clip))
                minibatches.append(sums)
        return {"minibatches": minibatches, "mean": _mean_stats(minibatches), "lr": lr}


class Reference(Role):
    """The frozen SFT model: log-probs of the response tokens, for the KL to the reference."""

    role = "reference"

    def __init__(self, config: RLConfig, model_dir: str, *, threads: int = 1) -> None:
        super().__init__(config, threads)
        self.model, _ = load_model_dir(model_dir, device=self.runtime.device)
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def logprobs(self, rollout: Rollout) -> Tensor:
        rollout = self._to_device(rollout)
        out = []
        for rows in micro_batches(rollout.size, self.config.micro_batch_size):
            part = rollout.select(rows)
            with self.runtime.autocast():
                logits = response_logits(self.model, part, self.config.temperature)
            out.append(logprobs_from_logits(logits, part.responses))
        return torch.cat(out).cpu()


__all__ = [
    "Critic",
    "PolicyActor",
    "Reference",
    "Role",
    "TrainableRole",
    "micro_batches",
    "model_format",
    "response_logits",
    "response_values",
]
