"""What the recipe's claims add to evaluate: sampling `claims.samples` replies for `claims.prompts` held-out
prompts per model (`components.eval.claims_sampling`), timed per model in wall and CPU seconds.

    .venv/bin/python tests/bench/claims_cost.py PROMPTS_DIR MODEL_DIR [MODEL_DIR ...]
    .venv/bin/python tests/bench/claims_cost.py runs/store/stages/conversations/*/prompts \\
        runs/store/stages/pretrain/*/model runs/store/stages/sft/*/model --threads 1

PROMPTS_DIR holds test.jsonl (the conversations stage's `prompts` output); each MODEL_DIR is a model
directory (pretrain's model, sft's model, a policy). The settings are evaluate's defaults
(`EvaluateConfig().claims`, max_new_tokens = evaluate's), one torch thread per model as evaluate's
1-CPU Ray tasks run; the stage runs two models at a time on 2 cores. CPU seconds are what a shared
machine cannot inflate much; wall seconds on an idle machine are close to them. Prints figures and the
claims metrics, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch

from components.eval.claims_sampling import sample_claims
from components.eval.evaluate_config import EvaluateConfig
from components.io.trl import load_prompts
from components.model.checkpoint import load_model_dir
from components.tokenizer.bpe import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prompts", type=Path, help="a directory with test.jsonl")
    parser.add_argument("models", type=Path, nargs="+", help="model directories")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (evaluate: 1 per model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = EvaluateConfig()
    claims = cfg.claims
    records = load_prompts(str(args.prompts / "test.jsonl"))
    print(
        f"{claims.prompts} prompts x {claims.samples} samples, ks {list(claims.ks)}, {args.threads} thread(s)"
    )
    total_wall = total_cpu = 0.0
    for model_dir in args.models:
        model, _ = load_model_dir(model_dir)
        tok = load_tokenizer(model_dir / "tokenizer.json")
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = sample_claims(
            model,
            tok,
            records,
            prompts=claims.prompts,
            samples=claims.samples,
            ks=claims.ks,
            temperature=claims.temperature,
            max_new_tokens=claims.max_new_tokens or cfg.max_new_tokens,
            batch_size=claims.batch_size,
            seed=0,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        shown = ", ".join(
            f"{k} {v:.3g}" for k, v in metrics.items() if v is not None and k != "claims_seconds"
        )
        print(f"{model_dir}: {wall:.1f} s wall, {cpu:.1f} s CPU; {shown}")
    print(f"all {len(args.models)} models: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
