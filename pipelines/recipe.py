"""The GPT-assistant recipe as one DAG: raw crawl in, chat assistant out.

Each node is a stage (found by name under components/) and names where each of its inputs comes
from ("stage.output"). Stages with heavy libraries (torch, mlflow, datasketch) enter as their declaration
(`SPEC` in the light `*_config.py` beside the stage's module), so loading and validating a config imports
none of them; a stage's own module is imported when the stage runs.
`gptrecipe stages CONFIG` prints this DAG with each stage's cache status.
Inputs named `labels` are the tiny world's ground truth: with the world stage switched off (your own
WARC files via `ingest.paths`) they are absent and the stages skip their precision/recall metrics.
"""

from __future__ import annotations

from components.data.curation_report_config import SPEC as curation_report
from components.data.decontaminate_config import SPEC as decontaminate
from components.data.dedup_config import SPEC as dedup
from components.data.extract_config import SPEC as extract
from components.data.ingest_config import SPEC as ingest
from components.data.language_config import SPEC as language
from components.data.model_quality_config import SPEC as model_quality
from components.data.pii_config import SPEC as pii
from components.data.quality_config import SPEC as quality
from components.data.url_filter_config import SPEC as url_filter
from components.eval.evaluate_config import SPEC as evaluate
from components.eval.register_model_config import SPEC as register_model
from components.model.hf_export_config import SPEC as export
from components.tokenizer.tokenize_config import SPEC as tokenize
from components.tokenizer.train_config import SPEC as train_tokenizer
from components.train.dpo_config import SPEC as dpo
from components.train.grpo_config import SPEC as grpo
from components.train.ppo_config import SPEC as ppo
from components.train.pretrain_config import SPEC as pretrain
from components.train.reward_model_config import SPEC as reward_model
from components.train.sft_config import SPEC as sft
from components.world.conversations_config import SPEC as conversations
from components.world.crawl_config import SPEC as world
from pipelines.dag import Node, Pipeline

LABELS = {"labels": "world.crawl"}
CURATED = "decontaminate.documents"


_CURATION = [
    Node(url_filter, {"documents": "ingest.documents", **LABELS}),
    Node(extract, {"documents": "url_filter.documents", **LABELS}),
    Node(language, {"documents": "extract.documents", **LABELS}),
    Node(quality, {"documents": "language.documents", **LABELS}),
    Node(model_quality, {"documents": "quality.documents", "reference": "world.knowledge", **LABELS}),
    Node(dedup, {"documents": "model_quality.documents", **LABELS}),
    Node(pii, {"documents": "dedup.documents", **LABELS}),
    Node(decontaminate, {"documents": "pii.documents", "benchmark": "world.knowledge", **LABELS}),
]
_CURATION_NAMES = [node.name for node in _CURATION]

RECIPE = Pipeline(
    "recipe",
    [
        # -- the tiny world: a synthetic, labelled crawl (switch off to bring your own WARC files) ----
        Node(world),
        # -- pretraining data: FineWeb's order -------------------------------------------------------
        Node(ingest, {"crawl": "world.crawl"}),
        *_CURATION,
        Node(
            curation_report,
            {
                "ingest_documents": "ingest.documents",
                **{f"{n}_{out}": f"{n}.{out}" for n in _CURATION_NAMES for out in ("documents", "dropped")},
                **LABELS,
            },
        ),
        # -- tokenizer -------------------------------------------------------------------------------
        Node(train_tokenizer, {"documents": CURATED}),
        Node(tokenize, {"documents": CURATED, "tokenizer": "train_tokenizer.tokenizer"}),
        # -- pretraining ---------------------------------------------------------------------------------
        Node(pretrain, {"tokens": "tokenize.tokens", "tokenizer": "train_tokenizer.tokenizer"}),
        # -- post-training data from the same world ---------------------------------------------------
        Node(conversations, {"knowledge": "world.knowledge"}),
        # -- post-training: SFT, reward model, RL --------------------------------------------------------
        Node(
            sft, {"model": "pretrain.model", "sft": "conversations.sft", "prompts": "conversations.prompts"}
        ),
        Node(reward_model, {"model": "sft.model", "preferences": "conversations.preferences"}),
        Node(
            ppo,
            {
                "policy": "sft.model",
                "reward_model": "reward_model.reward_model",
                "prompts": "conversations.prompts",
            },
        ),
        Node(grpo, {"policy": "sft.model", "prompts": "conversations.prompts"}),
        Node(dpo, {"model": "sft.model", "preferences": "conversations.preferences"}),
        # -- every model of the run side by side ---------------------------------------------------------
        Node(
            evaluate,
            {
                "base": "pretrain.model",
                "sft": "sft.model",
                "ppo": "ppo.policy",
                "grpo": "grpo.policy",
                "dpo": "dpo.policy",
                "reward_model": "reward_model.reward_model",
                "prompts": "conversations.prompts",
                "benchmark": "world.knowledge",
                "tokens": "tokenize.tokens",
            },
        ),
        # -- the final policy as a Hugging Face transformers model (any model: rewire "model") --------
        Node(export, {"model": "ppo.policy"}),
        # -- the final policy in the MLflow model registry: champion if it beats the current one ------
        Node(
            register_model,
            {
                "model": "ppo.policy",
                "hf_model": "export.hf_model",
                "report": "evaluate.report",
                "sft": "conversations.sft",
                "preferences": "conversations.preferences",
                "prompts": "conversations.prompts",
            },
        ),
    ],
)
