"""The `evaluate` stage's config and declaration: light (no torch), so that a pipeline config loads and
validates fast; `components.eval.evaluate` is the code."""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from typing import Literal

from pydantic import Field, model_validator

from components.core.config import ConfigError, StageConfig, StrictModel
from components.core.stage import stage_spec

MODELS = ("base", "sft", "ppo", "grpo", "dpo")  # input names, in recipe order
RL_MODELS = ("ppo", "grpo", "dpo")  # what the recipe's claims compare with SFT


class ClaimsSettings(StrictModel):
    """The recipe's claims (`recipe_claims`): many sampled replies per verifiable held-out prompt for
    entropy, distinct-n, pass@k and maj@k; win rates and ratings from the greedy replies. The defaults
    cost the tiny demo's models about 15 CPU-seconds each (18 at 40 prompts, measured with
    tests/bench/claims_cost.py), so about 40 s for five models on 2 CPU cores."""

    prompts: int = Field(
        32, ge=0, description="Verifiable held-out prompts sampled per model (the first N); 0 = no sampling."
    )
    samples: int = Field(16, ge=1, description="Replies sampled per prompt (n of pass@k).")
    ks: tuple[int, ...] = Field((1, 4, 16), description="The k of pass@k and maj@k; each at most `samples`.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature (the entropy is that of the tempered distribution)."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Longest sampled reply; None = evaluate's max_new_tokens."
    )
    batch_size: int = Field(
        128, ge=1, description="Rows per sampling batch: batch_size // samples prompts, each `samples` times."
    )
    rating_prior: float = Field(
        1.0,
        ge=0,
        description="Virtual tied games per pair of models in the Bradley-Terry ratings (keeps a model "
        "that wins every game finite); 0 = the plain maximum-likelihood fit.",
    )

    @model_validator(mode="after")
    def _check_ks(self) -> ClaimsSettings:
        if not self.ks or min(self.ks) < 1 or max(self.ks) > self.samples:
            raise ValueError(f"claims.ks {list(self.ks)} must be between 1 and claims.samples {self.samples}")
        return self


class EvaluateConfig(StageConfig):
    """What the evaluate stage measures and how much of it. The defaults are the `tiny` demo's: four
    models on 2 CPU cores in about half a minute, and the claims' sampling (`ClaimsSettings`) on top."""

    max_prompts: int | None = Field(
        64,
        ge=1,
        description="Chat prompts per split (held-out test, seen) and model: the first N of each file; "
        "None = all. Accuracy over N prompts has a standard error of up to 0.5/sqrt(N).",
    )
    max_benchmark_items: int | None = Field(
        200, ge=1, description="Benchmark items per model: the first N of benchmark.jsonl; None = all."
    )
    max_val_tokens: int = Field(
        16384,
        ge=1,
        description="Held-out corpus tokens for bits per byte: the first windows of the val split.",
    )
    val_seq_len: int | None = Field(
        None,
        ge=1,
        description="Tokens per bits-per-byte window; None = the model's context length (pretraining's "
        "seq_len in the recipe, so the base model reproduces its training run's val_bpb).",
    )
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass (benchmark, bpb, generation).")
    max_new_tokens: int = Field(64, ge=1, description="Longest reply generated per chat prompt, in tokens.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of the replies; 0 = greedy.")
    seed: int | None = Field(None, description="Seed of sampling at temperature > 0; None = pipeline seed.")
    samples_per_task: int = Field(
        3, ge=0, description="Replies per task and split written to samples_<model>.jsonl."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: auto = a GPU when the task has one, else the CPU."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights' dtype: auto = bfloat16 on a GPU that has it, float32 on CPU."
    )
    cpus_per_model: float = Field(
        1.0, gt=0, description="CPU cores each model's Ray task reserves (its torch threads)."
    )
    gpus_per_model: float = Field(0.0, ge=0, description="GPUs each model's Ray task reserves.")
    torch_threads: int | None = Field(
        None, ge=1, description="Torch threads per model task; None = its reserved CPUs (Ray's default)."
    )
    copy_sequences: int = Field(
        32,
        ge=0,
        description="In-context copying (`in_context_copy`): random 20-token sequences shown twice, the "
        "second copy predicted greedily; copy_accuracy is what a tool call's copying of the question "
        "needs. 0 = off.",
    )
    claims: ClaimsSettings = Field(
        default_factory=ClaimsSettings, description="Entropy, distinct-n, pass@k, maj@k, win rates, ratings."
    )
    lm_eval: bool = Field(
        False,
        description="Also score the benchmark through lm-evaluation-harness (our `gptrecipe` model adapter "
        "on the same items, as a local task): lm_eval_acc / lm_eval_acc_norm, which equal benchmark_acc "
        "/ benchmark_acc_norm. Off by default: it scores the benchmark twice, and needs lm-eval (the hf "
        "extra), which is not a runtime dependency.",
    )


def check_inputs(config: StageConfig, available: Collection[str]) -> None:
    """Preflight: a DAG that gives evaluate no model, or nothing to measure a model on, is refused."""
    if not any(m in available for m in MODELS):
        raise ConfigError(
            f"evaluate has no model to evaluate: wire at least one of the inputs {', '.join(MODELS)} "
            "(pretrain.model, sft.model, ppo.policy, grpo.policy, dpo.policy) or switch evaluate off"
        )
    if getattr(config, "lm_eval", False) and importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(
            "evaluate.lm_eval is true but lm-evaluation-harness is not installed: "
            "pip install -e '.[hf]' (with infra/constraints.txt), or set evaluate.lm_eval=false"
        )
    if not any(d in available for d in ("prompts", "benchmark", "tokens")):
        raise ConfigError(
            "evaluate has nothing to measure the models on: wire at least one of prompts "
            "(conversations.prompts), benchmark (world.knowledge) or tokens (tokenize.tokens)"
        )


SPEC = stage_spec(
    "evaluate",
    impl="components.eval.evaluate:evaluate",
    config=EvaluateConfig,
    optional_inputs=(*MODELS, "reward_model", "prompts", "benchmark", "tokens"),
    outputs=("report",),
    cpus=0,  # only coordinates: each model's Ray task reserves cpus_per_model / gpus_per_model
    preflight=check_inputs,
)
