"""The `conversations` stage's config and declaration: light (pydantic only), so that a pipeline config
loads and validates fast; `components.world.conversations` is the code."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import Field, field_validator

from components.core.config import ConfigError, StageConfig
from components.core.stage import stage_spec

TASKS = ("fact", "arithmetic", "letter_count", "unknown")  # verifiable tasks (prompts, preferences)
SFT_KINDS = ("fact", "arithmetic", "letter_count", "unknown", "identity", "multi_turn")


class ConversationsConfig(StageConfig):
    """What post-training data to generate from the tiny world (or which user files to use instead)."""

    seed: int = Field(0, description="Seed of every random choice, the held-out splits included.")
    test_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share held out for test: of the known and of the unknown entities (per type), of "
        "arithmetic problems and letter-count words (by hash), and of each generated count below.",
    )
    questions_per_fact: int = Field(
        2,
        ge=1,
        le=4,
        description="Distinct question phrasings per training fact (and per relation of each training "
        "unknown entity). Test facts are asked once.",
    )
    arithmetic: int = Field(500, ge=0, description="Arithmetic conversations with worked steps (all splits).")
    letter_count: int = Field(300, ge=0, description="Letter-counting conversations (all splits).")
    made_up_words: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of training letter-count questions about made-up words (syllables, never a "
        "word of the held-out pool): the real training words are too few to learn copying the word into "
        "the tool call from, rather than recalling a trained one. Held-out questions ask about real words.",
    )
    identity: int = Field(
        100, ge=0, le=500, description="Identity conversations (all splits); a few hundred at most."
    )
    multi_turn: int = Field(200, ge=0, description="Conversations with 2-3 user turns (all splits).")
    system_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of SFT conversations that open with a system message."
    )
    max_operand: int = Field(
        100,
        ge=12,
        le=10_000,
        description="Arithmetic operands are below this; multiplications are by one digit (2-9).",
    )
    tool_use: bool = Field(
        True,
        description="Arithmetic and letter-count replies call the tool (say what to compute, call, restate "
        "the result); False = the worked steps alone, without the tool. Facts, unknowns and identity "
        "never use it.",
    )
    assistant_name: str = Field("Recipe", min_length=1, description="The assistant's name in identity data.")
    creator: str = Field("gptrecipe", min_length=1, description="Who made the assistant, in identity data.")
    preference_prompts: int = Field(
        400, ge=0, description="Prompts with ranked completions (all splits); each gives K*(K-1)/2 pairs."
    )
    completions_per_prompt: int = Field(
        4,
        ge=2,
        le=5,
        description="K ranked completions per preference prompt: 2 = helpful > wrong; 3 adds rude or "
        "degenerate last; 4 adds correct-but-terse second; 5 has both rude and degenerate.",
    )
    preference_mix: dict[str, float] = Field(
        default_factory=lambda: {"fact": 0.55, "arithmetic": 0.2, "letter_count": 0.1, "unknown": 0.15},
        description="Share of preference prompts per task.",
    )
    rl_prompts: int = Field(600, ge=0, description="RL prompts with gold answers (train + test).")
    prompt_mix: dict[str, float] = Field(
        default_factory=lambda: {"fact": 0.5, "arithmetic": 0.25, "letter_count": 0.15, "unknown": 0.1},
        description="Share of RL prompts per task.",
    )
    sft_path: str | None = Field(
        None,
        description="Use this SFT data (TRL `messages` format) instead of generating it: a .jsonl/.parquet "
        "file (split by test_fraction on a hash of each record) or a directory with train and test files.",
    )
    preferences_path: str | None = Field(
        None,
        description="Use these preference pairs (TRL `prompt`/`chosen`/`rejected`) instead of generating "
        "them; a file (split by prompt) or a directory with train and test files.",
    )
    prompts_path: str | None = Field(
        None,
        description="Use these RL prompts (`prompt`, optional `answer`, `task`) instead of generating "
        "them; a file or a directory with train and test files.",
    )
    max_errors: int = Field(20, ge=1, description="Malformed records listed before a user file is rejected.")
    samples: int = Field(8, ge=0, description="Records per output and split logged to MLflow as samples.")

    def external_inputs(self) -> list[str]:
        return [p for p in (self.sft_path, self.preferences_path, self.prompts_path) if p]

    @field_validator("preference_mix", "prompt_mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; tasks are {', '.join(TASKS)}")
        if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return mix


def check_sources(config: ConversationsConfig, inputs: Collection[str]) -> None:
    """Preflight: without the world's knowledge (your own crawl), every output comes from your files."""
    if "knowledge" in inputs:
        return
    missing = [
        f"conversations.{k}_path"
        for k in ("sft", "preferences", "prompts")
        if not getattr(config, f"{k}_path")
    ]
    if missing:
        raise ConfigError(
            f"conversations has no knowledge input (the world stage is off) to generate data from: set "
            f"{', '.join(missing)} too, or none of them to skip post-training"
        )


SPEC = stage_spec(
    "conversations",
    impl="components.world.conversations:conversations",
    config=ConversationsConfig,
    optional_inputs=("knowledge",),
    outputs=("sft", "preferences", "prompts"),
    cpus=1,
    preflight=check_sources,
    # With the world off and no files of yours, the pipeline skips post-training.
    replaced_by={"knowledge": ("sft_path", "preferences_path", "prompts_path")},
)

__all__ = ["SFT_KINDS", "SPEC", "TASKS", "ConversationsConfig", "check_sources"]
