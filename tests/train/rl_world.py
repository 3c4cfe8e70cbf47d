"""A tiny RL world for the PPO / GRPO tests: a tokenizer with the chat tokens, a random tiny GPT as the
"SFT" policy, a reward model (the same trunk with a random head and reward_stats), and RL prompts about
capitals and sums in the conversations stage's layout (prompts/train.jsonl, prompts/test.jsonl).

Also the failures the resume tests need, injected from outside the production code: `failing_ppo` is the
ppo stage with its policy role swapped (through the algorithm's role specs) for a `FailingPolicy`.

Imported by the test modules through their own directory (pytest's importlib mode has no package); Ray
workers cannot import it, so it registers itself for pickling by value."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import warnings
from pathlib import Path

import ray.cloudpickle
import torch

from components.core.artifacts import Artifact
from components.core.stage import RunEnv, Stage, StageContext
from components.model.checkpoint import save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.model.heads import ScalarHeadModel, save_scalar_model_dir
from components.tokenizer.bpe import TokenizerConfig, train_tokenizer
from components.train.ppo import PPO, ppo
from components.train.rl.algorithm import RLPaths
from components.train.rl.batch import Experience, PolicyStats
from components.train.rl.config import PPOConfig
from components.train.rl.driver import RLRun
from components.train.rl.placement import RoleSpec
from components.train.rl.roles import PolicyActor

CAPITALS = {
    "Ejon": "Thozusesh",
    "Kuviro": "Zifos",
    "Desath": "Tetun",
    "Odend": "Zekrekes",
    "Mathol": "Ekronok",
}
VOCAB = 320

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def prompt_records(seed: int, n_sums: int) -> list[dict]:
    rng = random.Random(seed)
    records = [
        {
            "prompt": [{"role": "user", "content": f"What is the capital of {c}?"}],
            "answer": v,
            "task": "fact",
            "competitors": sorted(CAPITALS.values()),
            "id": f"capital-{c}",
        }
        for c, v in CAPITALS.items()
    ]
    for _ in range(n_sums):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        records.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
                "answer": str(a + b),
                "task": "arithmetic",
            }
        )
    return records


def make_rl_world(root: Path, *, context_length: int = 64) -> dict[str, Path]:
    """Model directories and prompts under `root`; returns {"policy", "reward_model", "prompts"}."""
    texts = [f"The capital of {c} is {v}. What is the capital of {c}?" for c, v in CAPITALS.items()]
    texts += [f"What is {a} + {b}? The answer is {a + b}." for a in range(1, 10) for b in range(1, 10)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = train_tokenizer(texts * 5 + ["user assistant system"] * 5, TokenizerConfig(vocab_size=VOCAB))
    (root / "tok").mkdir(parents=True)
    tok.save(str(root / "tok" / "tokenizer.json"))
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, context_length=context_length, n_layer=1, n_head=2, n_embd=32)
    save_model_dir(GPT(config), root / "policy", tokenizer_path=root / "tok" / "tokenizer.json")
    rm = ScalarHeadModel(GPT(config))
    torch.nn.init.normal_(rm.head.weight, std=1.0)  # a random but non-constant reward
    save_scalar_model_dir(
        rm,
        root / "reward_model",
        tokenizer_path=root / "tok" / "tokenizer.json",
        extra={"reward_stats": {"mean": 0.5, "std": 2.0}},
    )
    write_jsonl(root / "prompts" / "train.jsonl", prompt_records(0, 11))
    write_jsonl(root / "prompts" / "test.jsonl", prompt_records(1, 3)[3:])
    return {"policy": root / "policy", "reward_model": root / "reward_model", "prompts": root / "prompts"}


def artifacts(world: dict[str, Path], *names: str) -> dict[str, Artifact]:
    return {n: Artifact(uri=str(world[n]), kind=n, digest=f"test:{world[n]}") for n in names}


def run_env(root: Path, tracking_uri: str, experiment: str, *, code_version: str | None = None) -> RunEnv:
    """The run environment of a test under `root`. `code_version` pins the RL stages' code version, so
    a test's variant of a stage (`failing_ppo`) and the stage itself compute the same cache key, and
    so find the same checkpoints."""
    pinned = dict.fromkeys(("ppo", "grpo"), code_version) if code_version else {}
    return RunEnv(
        run_id="test",
        store=str(root / "store"),
        seed=0,
        tracking_uri=tracking_uri,
        experiment=experiment,
        code_versions=pinned,
    )


# --- failures injected from outside --------------------------------------------------------------------


class InjectedCrash(RuntimeError):
    """What a `FailingPolicy` raises when it runs in the stage's own process (inline placement)."""


class FailingPolicy(PolicyActor):
    """The policy, failing once when training iteration `at_step` begins while the file `marker` exists.
    The marker is deleted first, so the policy that the driver restarts from a checkpoint carries on. In
    an actor it ends its process as a crashed worker would (the driver sees the actor die); in the
    stage's own process it raises `InjectedCrash` (which ends the stage)."""

    def __init__(self, *args, marker: str, at_step: int, exit_process: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.at_step, self.exit_process = Path(marker), at_step, exit_process

    def train(self, experience: Experience, iteration: int) -> PolicyStats:
        if iteration + 1 == self.at_step and self.marker.exists():
            self.marker.unlink()
            if self.exit_process:
                os._exit(17)
            raise InjectedCrash(f"injected crash at iteration {self.at_step}")
        return super().train(experience, iteration)


class FailingPPO(PPO):
    """PPO whose policy role is a `FailingPolicy`."""

    def __init__(self, config: PPOConfig, failure: dict) -> None:
        super().__init__(config)
        self.failure = failure

    def role_specs(self, paths: RLPaths) -> dict[str, RoleSpec]:
        specs = super().role_specs(paths)
        policy = specs["policy"]
        specs["policy"] = RoleSpec(FailingPolicy, policy.args, {**policy.kwargs, **self.failure})
        return specs


def failing_ppo(marker: Path, at_step: int, *, exit_process: bool) -> Stage:
    """The ppo stage (same name, config, inputs and resources) whose policy fails at `at_step` while
    `marker` exists (see `FailingPolicy`)."""
    failure = {"marker": str(marker), "at_step": at_step, "exit_process": exit_process}

    def run(ctx: StageContext, config: PPOConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
        return RLRun(ctx, config, inputs, FailingPPO(config, failure)).run()

    return dataclasses.replace(ppo, fn=run)


SMALL = {
    "iterations": 4,
    "rollout_batch_size": 4,
    "max_prompt_tokens": 24,
    "max_new_tokens": 8,
    "generation_batch_size": 4,
    "mini_batch_size": 2,
    "micro_batch_size": 2,
    "lr": 3e-3,
    "eval_max_new_tokens": 8,
    "eval_batch_size": 8,
    "checkpoint_every": 2,
    "seed": 3,
    "monitor": {"window": 2, "baseline_iterations": 1, "sample_every": 2, "samples_per_table": 3},
    # fp32 whatever the CPU: the tests compare log-probs of separate forward passes to 1e-4 and less.
    "roles": {"placement": "inline", "dtype": "float32"},
}
