"""Tiny-world post-training data: SFT conversations, ranked preference pairs and RL prompts.

Everything is generated from the same `KnowledgeBase` as the crawl, deterministically from a seed, so the
facts the assistant is taught to state in chat are the facts pretraining read on web pages, and every
answer can be checked exactly (`components.eval.verifiers`).

Tasks (the `task`/`kind` of an item):

- ``fact``: a question about one (subject, relation, value) fact, answered with one full sentence that
  states it ("The capital of Ejon is Thozusesh."); several question phrasings per relation.
- ``arithmetic``: small additions, subtractions and multiplications, handed to the tool with the steps
  around the call ("Let me calculate 23 + 48. <|tool_call|>23 + 48<|/tool_call|><|tool_result|>71
  <|/tool_result|> So 23 + 48 = 71. The answer is 71."); with ``tool_use=False`` worked steps instead
  ("Let's work it out: 23 + 48 = 23 + 40 + 8 = 63 + 8 = 71. The answer is 71.").
- ``letter_count``: counted by the tool (`` "strawberry".lower().count("r")``), or with ``tool_use=False``
  spelled letter by letter with a running count. Facts, unknowns and identity never call the tool.
- ``unknown``: questions about the knowledge base's unknown entities, which the crawl never mentions,
  answered "I don't have any information about X."
- ``identity``: who the assistant is (its name and maker); SFT only, a hundred or so conversations.
- ``multi_turn`` (SFT kind): 2-3 user turns mixing the above; ``refs`` lists one item per assistant turn.

Held-out splits, shared by all three outputs, so no test question is ever asked (or answered) in any
training data, while pretraining did see every known fact:

- known entities are split per type (countries, cities, people) with `test_fraction` going to test;
  test facts are all facts of test entities. A training fact whose answer sentence would also state a
  test fact is dropped from training: "The capital of C is X." states X's country, "A shares a border
  with B." states B's neighbour, and "X is a city in C" pairs a capital with its country. Facts are
  split by entity rather than one by one so that a test entity is never the subject of any training
  question.
- unknown entities are split per type the same way;
- arithmetic problems and letter-count words are split by a hash of the problem (commutative operands
  sorted) or of the word, so a problem's split does not depend on what else was drawn;
- identity questions: the last phrasing of each intent is held out.

Prompts also get ``seen.jsonl``: prompts drawn from the training pools (facts the SFT data asks about),
so evaluation can compare held-out with seen accuracy.

Record formats (TRL's, with extra metadata fields that trainers ignore):

- sft: ``{"messages": [...], "kind": "fact", "refs": ["country-03.capital"]}``
- preferences: ``{"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg],
  "rank_chosen": 0, "rank_rejected": 2, "kind": "fact", "chosen_tier": "helpful",
  "rejected_tier": "wrong", "prompt_id": "train-00012", "ref": "country-03.capital"}``. Each prompt has
  K ranked completions (0 = best) and yields all K*(K-1)/2 pairs.
- prompts: ``{"prompt": [...], "answer": "Thozusesh", "task": "fact", "competitors": [...], "id": ...}``;
  ``competitors`` are the relation's other values, which the fact and unknown verifiers need.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.stage import StageContext, stage
from components.io.trl import (
    DatasetError,
    data_format,
    load_preferences,
    load_prompts,
    load_sft,
    write_jsonl,
)
from components.world.conversation_generator import ConversationGenerator
from components.world.conversation_tasks import hash_fraction
from components.world.conversations_config import SPEC, ConversationsConfig
from components.world.knowledge import KnowledgeBase

# --- user data -------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "sft": load_sft,
    "preferences": load_preferences,
    "prompts": load_prompts,
}


def _split_key(output: str, record: dict[str, Any]) -> str:
    # Pairs of one prompt, and RL prompts, are split by prompt so the same question is never on both sides.
    value = record["messages"] if output == "sft" else record["prompt"]
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def load_user_data(output: str, path: str, config: ConversationsConfig) -> dict[str, list[dict[str, Any]]]:
    """A user's file split by `test_fraction` on a hash of its prompt, or a directory's train/test files."""
    import fsspec

    load = _LOADERS[output]
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise ConfigError(f"conversations.{output}_path: {path} does not exist")
    if not fs.isdir(fs_path):
        records = load(path, max_errors=config.max_errors)
        out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
        for record in records:
            key = _split_key(output, record)
            test = hash_fraction(config.seed, output, key) < config.test_fraction
            out["test" if test else "train"].append(record)
        return out
    out = {}
    names = sorted(fs.ls(fs_path, detail=False))
    for split in ("train", "test"):
        found = []
        for name in names:
            base = name.rstrip("/").rsplit("/", 1)[-1]
            if base.split(".", 1)[0] != split:
                continue
            try:
                data_format(base)
            except DatasetError:
                continue
            found.append(name)
        if len(found) != 1:
            raise ConfigError(
                f"conversations.{output}_path: {path} must hold exactly one {split}.jsonl or "
                f"{split}.parquet file, found {len(found)}"
            )
        protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
        file = found[0] if "://" in found[0] or not protocol else protocol + found[0]
        out[split] = load(file, max_errors=config.max_errors)
    return out


# --- the stage -------------------------------------------------------------------------------------


def read_knowledge(store: ArtifactStore, uri: str) -> KnowledgeBase:
    """The KnowledgeBase in a `knowledge` artifact: a directory holding knowledge.json, or that file."""
    path = uri if uri.endswith(".json") else store.join(uri, "knowledge.json")
    if not store.exists(path):
        raise ConfigError(f"conversations: the knowledge artifact has no knowledge.json ({path})")
    with store.open(path, "rb") as f:
        return KnowledgeBase.from_json(f.read().decode("utf-8"))


def _metrics(name: str, splits: dict[str, list[dict[str, Any]]], by: str | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, records in splits.items():
        metrics[f"{name}_{split}"] = len(records)
        if by:
            # User data may lack the field or use any text; MLflow metric names allow only a few symbols.
            kinds = Counter(re.sub(r"[^\w.-]", "_", str(r[by])) for r in records if r.get(by) is not None)
            for kind, count in sorted(kinds.items()):
                metrics[f"{name}_{split}_{kind}"] = count
    return metrics


@stage(SPEC)
def conversations(ctx: StageContext, config: ConversationsConfig, inputs: dict[str, Artifact]) -> dict:
    """Tiny-world SFT conversations, ranked preference pairs and RL prompts (or the user's, validated)."""
    user_paths = {
        "sft": config.sft_path,
        "preferences": config.preferences_path,
        "prompts": config.prompts_path,
    }
    generator = None
    if not all(user_paths.values()):
        generator = ConversationGenerator(read_knowledge(ctx.store, inputs["knowledge"].uri), config)
    data: dict[str, dict[str, list[dict[str, Any]]]] = {}
    source: dict[str, str] = {}
    for output, path in user_paths.items():
        if path:
            data[output] = load_user_data(output, path, config)
            source[output] = path
        else:
            assert generator is not None
            data[output] = getattr(generator, output)()
            source[output] = "generated"

    metrics: dict[str, float] = {}
    for output, splits in data.items():
        by = {"sft": "kind", "preferences": "kind", "prompts": "task"}[output]
        metrics |= _metrics(output if output != "preferences" else "preference_pairs", splits, by)
        for split, records in splits.items():
            with ctx.store.atomic_write(ctx.store.join(ctx.output_uri(output), f"{split}.jsonl")) as f:
                write_jsonl(records, f)
            if config.samples and records:
                sample = json.dumps(records[: config.samples], ensure_ascii=False, indent=1)
                ctx.tracker.log_text(sample + "\n", f"samples/{output}_{split}.json")
    if generator is not None:
        for split in ("train", "test"):
            metrics[f"facts_{split}"] = len(generator.split.facts[split])
            metrics[f"unknown_entities_{split}"] = len(generator.split.unknown[split])
    for split in ("train", "test"):
        prompts = {json.dumps(r["prompt"], sort_keys=True) for r in data["preferences"][split]}
        metrics[f"preference_prompts_{split}"] = len(prompts)
    ctx.report(**metrics)

    def artifact(output: str, kind: str) -> Artifact:
        counts = {split: len(records) for split, records in data[output].items()}
        return ctx.artifact(output, kind=kind, splits=counts, source=source[output], format="jsonl")

    return {
        "sft": artifact("sft", "sft_conversations"),
        "preferences": artifact("preferences", "preference_pairs"),
        "prompts": artifact("prompts", "rl_prompts"),
    }


__all__ = ["conversations", "load_user_data", "read_knowledge"]
