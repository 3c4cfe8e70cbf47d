"""The `export` stage's config and declaration: light (no torch), so that a pipeline config loads and
validates fast; `components.model.hf_export` is the code."""

from __future__ import annotations

from components.core.config import StageConfig
from components.core.stage import stage_spec


class ExportConfig(StageConfig):
    """The export has nothing to tune: the architecture follows from the model's block type (gpt2 ->
    GPT2LMHeadModel, llama -> LlamaForCausalLM) and the weights keep their dtype."""


SPEC = stage_spec(
    "export",
    impl="components.model.hf_export:export",
    config=ExportConfig,
    inputs=("model",),
    outputs=("hf_model",),
)
