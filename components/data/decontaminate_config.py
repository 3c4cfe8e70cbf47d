"""The `decontaminate` stage's config and declaration: light (no pyarrow, no xxhash, no libphonenumber), so
that a pipeline config loads and validates fast; `components.data.decontaminate` is the code."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import Field

from components.core.config import ConfigError, StageConfig
from components.data.filter_spec import filter_spec


class DecontaminateConfig(StageConfig):
    """Which evaluation data to protect and how long a shared word sequence must be to count."""

    ngram: int = Field(13, ge=3, le=50, description="Words per n-gram (GPT-3 used 13).")
    min_matches: int = Field(
        1, ge=1, description="Drop a document that shares at least this many distinct n-grams with eval data."
    )
    benchmark_files: list[str] = Field(
        default_factory=lambda: ["benchmark.jsonl"],
        description="JSONL files of eval items inside the `benchmark` input artifact.",
    )
    extra_eval_paths: list[str] = Field(
        default_factory=list,
        description="More eval sets: JSONL files (paths or URLs), one item per line; e.g. held-out prompts.",
    )
    text_fields: list[str] = Field(
        default_factory=lambda: ["question", "prompt", "text", "input", "instruction", "messages", "answer"],
        description="Fields of an extra_eval_paths record that hold eval text (in this order).",
    )
    samples: int = Field(10, ge=0, description="Dropped documents logged to MLflow as samples (scrubbed).")

    def external_inputs(self) -> list[str]:
        return list(self.extra_eval_paths)


def check_sources(config: DecontaminateConfig, inputs: Collection[str]) -> None:
    """Preflight, before the curation runs: an evaluation set comes from somewhere (without one the
    pipeline skips the stage, see `replaced_by` below; called directly, it is an error), and every file
    of `extra_eval_paths` exists."""
    if "benchmark" not in inputs and not config.extra_eval_paths:
        raise ConfigError(
            "decontaminate has no evaluation set: wire its `benchmark` input (the world stage's knowledge), "
            "set decontaminate.extra_eval_paths, or switch the stage off (decontaminate.enabled=false)"
        )
    import fsspec  # here, not at the top: loading a config imports no I/O library it does not use

    for path in config.extra_eval_paths:
        fs, _ = fsspec.core.url_to_fs(path)
        if not fs.isfile(path):
            raise ConfigError(f"decontaminate.extra_eval_paths: {path} does not exist (or is not a file)")


SPEC = filter_spec(
    "decontaminate",
    DecontaminateConfig,
    optional_inputs=("benchmark", "labels"),
    preflight=check_sources,
    # Without the world's benchmark and without eval files of yours, the pipeline skips the stage.
    replaced_by={"benchmark": ("extra_eval_paths",)},
)
