"""Tool-use accuracy on many held-out prompts, and what the calls copy (prints figures, asserts nothing).

evaluate and the SFT stage score a few dozen verifiable prompts; this draws N letter-count and N
arithmetic questions from the held-out pools of a run's world (the same generator and split the
`conversations` stage uses, so none was trained on), answers them greedily with each given model, with
the tool and without it, and checks every call against the question: did it copy the word, the letter,
the operands and the operator?

    .venv/bin/python tests/bench/tool_accuracy.py MODEL_DIR [MODEL_DIR ...] [--store runs/store] [--n 200]

MODEL_DIR: a stage's model directory, e.g. runs/store/stages/sft/<key>/model or .../grpo/<key>/policy.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from components.eval.chat_eval import chat_eval  # noqa: E402
from components.model.checkpoint import TOKENIZER_FILE, load_model_dir  # noqa: E402
from components.tokenizer.bpe import load_tokenizer  # noqa: E402
from components.world.conversation_generator import ConversationGenerator  # noqa: E402
from components.world.conversations_config import ConversationsConfig  # noqa: E402
from components.world.knowledge import KnowledgeBase  # noqa: E402

CALL = re.compile(r"<\|tool_call\|>(.*?)<\|/tool_call\|>", re.S)
LETTER_CALL = re.compile(r"\s*['\"](.*)['\"]\.lower\(\)\.count\(['\"](.*)['\"]\)")
ARITHMETIC_CALL = re.compile(r"\s*(\d+) ([-+*]) (\d+)")


def held_out_records(knowledge: Path, n: int, seed: int) -> list[dict]:
    generator = ConversationGenerator(
        KnowledgeBase.from_json(knowledge.read_text()), ConversationsConfig(seed=seed)
    )
    rng = random.Random(f"{seed}/tool-accuracy-bench")
    records = []
    for task in ("letter_count", "arithmetic"):
        for _ in range(n):
            item = generator.task_item(task, "test", rng)
            prompt = [{"role": "user", "content": item.question}]
            records.append({"prompt": prompt, "answer": item.answer, "task": task, "id": item.ref})
    return records


def call_checks(samples: list[dict]) -> Counter:
    """Per task: calls made, and which parts of the question each call copied."""
    seen: Counter = Counter()
    for s in samples:
        match = CALL.search(s["reply"])
        call = match.group(1) if match else ""
        seen[f"{s['task']}.calls"] += bool(match)
        if s["task"] == "letter_count":
            word, letter = s["id"].rsplit(":", 1)
            parts = LETTER_CALL.fullmatch(call)
            seen["letter_count.word copied"] += bool(parts) and parts.group(1) == word
            seen["letter_count.letter copied"] += bool(parts) and parts.group(2) == letter
        else:
            a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)", s["id"]).groups()
            parts = ARITHMETIC_CALL.fullmatch(call)
            seen["arithmetic.operands and operator copied"] += bool(parts) and parts.groups() == (a, op, b)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="model directories")
    parser.add_argument("--store", default="runs/store", help="the run's store (its world stage's knowledge)")
    parser.add_argument("--n", type=int, default=200, help="held-out prompts per task")
    parser.add_argument("--seed", type=int, default=0, help="conversations.seed of the run")
    args = parser.parse_args()

    knowledge = sorted(Path(args.store).glob("stages/world/*/knowledge/knowledge.json"))
    if len(knowledge) != 1:
        raise SystemExit(f"expected one world stage output in {args.store}, found {len(knowledge)}")
    records = held_out_records(knowledge[0], args.n, args.seed)
    torch.set_num_threads(1)
    print(f"{args.n} held-out letter-count and {args.n} arithmetic prompts, greedy")
    for model_dir in map(Path, args.models):
        model, _ = load_model_dir(model_dir, device="cpu", dtype=torch.float32)
        tok = load_tokenizer(model_dir / TOKENIZER_FILE)
        with_tool = chat_eval(model, tok, records, batch_size=64, tools=True)
        without = chat_eval(model, tok, records, batch_size=64, tools=False)
        print(f"\n{model_dir}")
        for task in ("arithmetic", "letter_count"):
            key = f"accuracy.{task}"
            print(
                f"  {task:<13} with the tool {with_tool.metrics[key]:.3f}, without {without.metrics[key]:.3f}"
            )
        for what, count in sorted(call_checks(with_tool.samples).items()):
            print(f"  {what:<42} {count:4d} / {args.n}")


if __name__ == "__main__":
    main()
