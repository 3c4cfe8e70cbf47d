"""The tiny world's fact benchmark as a local lm-evaluation-harness task: a YAML file and a JSONL file,
nothing from the Hub.

    lm_eval --model hf --model_args pretrained=EXPORT_DIR --include_path TASK_DIR --tasks gptrecipe_facts

The task asks exactly what `components.eval.multiple_choice.score_items` asks: the same prompt
(``Question: ...\\nAnswer:``), the same continuations (`` {choice}``), and lm-eval's ``acc`` and
``acc_norm`` are then our ``acc`` and ``acc_norm``. One detail makes that so: lm-eval divides a choice's
log-likelihood by the length of the choice string for ``acc_norm``, and we divide by the length of the
scored text, its leading space included. So each JSONL record carries its ``continuations`` (with the
space), the task takes them as its choices, and the target delimiter is empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from components.eval.multiple_choice import BENCHMARK_PROMPT, benchmark_items

FACTS_TASK = "gptrecipe_facts"
DATA_FILE = "facts.jsonl"


def fact_task_config(data_file: Path, task: str = FACTS_TASK) -> dict[str, Any]:
    """The lm-eval task config (what the YAML holds) for the benchmark records in ``data_file``."""
    if BENCHMARK_PROMPT.count("{") != 1:  # only {question} may be substituted, see doc_to_text below
        raise ValueError(f"BENCHMARK_PROMPT {BENCHMARK_PROMPT!r} has fields this task does not fill")
    return {
        "task": task,
        # `json` is a builder inside the datasets package, so nothing is downloaded.
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(data_file.resolve())},
            # Its Arrow cache goes beside the data rather than into ~/.cache.
            "cache_dir": str((data_file.parent / "datasets_cache").resolve()),
        },
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": BENCHMARK_PROMPT.replace("{question}", "{{question}}"),
        "doc_to_choice": "continuations",
        "doc_to_target": "answer_index",
        "target_delimiter": "",  # the continuations carry their leading space (module docstring)
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def write_fact_task(records: Sequence[dict[str, Any]], out_dir: str | Path, task: str = FACTS_TASK) -> Path:
    """Write benchmark records ``{id, question, choices, answer_index}`` (world.knowledge's
    benchmark.jsonl) as the lm-eval task ``task`` in ``out_dir``: ``<task>.yaml`` and ``facts.jsonl``.
    Returns ``out_dir``, the directory to give lm-eval as ``include_path``."""
    if not records:
        raise ValueError("no benchmark records to write as an lm-eval task")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file = out_dir / DATA_FILE
    items = benchmark_items(records)
    with data_file.open("w", encoding="utf-8") as f:
        for record, item in zip(records, items, strict=True):
            row = {
                "id": item.id,
                "group": item.group,
                "question": record["question"],
                "choices": list(record["choices"]),
                "continuations": list(item.continuations),
                "answer_index": item.answer_index,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    header = "# The tiny world's fact benchmark, written by gptrecipe (components/eval/lm_eval_tasks.py).\n"
    config = yaml.safe_dump(fact_task_config(data_file, task), sort_keys=False, allow_unicode=True)
    (out_dir / f"{task}.yaml").write_text(header + config, encoding="utf-8")
    return out_dir


__all__ = ["FACTS_TASK", "fact_task_config", "write_fact_task"]
