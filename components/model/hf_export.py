"""The `export` stage: a model of the run as a Hugging Face transformers model directory.

The recipe exports the final policy (``ppo.policy``); which model is exported is the node's wiring
(``{"model": "sft.model"}`` exports the SFT model). The work is `components.model.export`: a rename
and a transpose of the weights plus a few JSON files, seconds even for GPT-2 small, so the stage runs
on every pipeline and its output is what you hand to vLLM, lm-evaluation-harness or the Hub.
"""

from __future__ import annotations

import json

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.model.export import export_model_dir
from components.model.hf_export_config import SPEC, ExportConfig


@stage(SPEC)
def export(ctx: StageContext, config: ExportConfig, inputs: dict[str, Artifact]) -> dict:
    """The model as a transformers directory (GPT2LMHeadModel / LlamaForCausalLM, chat template)."""
    model_dir = ctx.local_input(inputs["model"])
    with ctx.output_dir("hf_model") as out:
        # The directory is this stage's own output (per cache key): whatever a killed earlier attempt
        # left there is ours to replace.
        export_model_dir(model_dir, out, force=True)
        hf_config = json.loads((out / "config.json").read_text())
    architecture = hf_config["architectures"][0]
    ctx.log.info("exported %s as %s", inputs["model"].uri, architecture)
    ctx.tracker.log_text(json.dumps(hf_config, indent=2), "hf_config.json")
    return {"hf_model": ctx.artifact("hf_model", kind="hf_model", architecture=architecture)}


__all__ = ["ExportConfig", "export"]
