"""What adding the SFT model's likelihood to the reward model's score does to held-out pair accuracy.

PPO's `sft_likelihood_coef` (lambda) rewards a reply with the RM's z-score plus lambda times the reply's
mean log-probability per token under the SFT model (`rl.formulas.sft_likelihood_bonus`). A reward read at
one position learns the pairs' form more easily than their facts, while the SFT model's likelihood ranks
a correct fact above a wrong one for facts it never saw in SFT. This scores a finished run's held-out
preference pairs both ways and prints pair accuracy overall, per kind and per (chosen, rejected) tier for
each lambda; lambda "inf" is the likelihood alone. Prints figures, asserts nothing:

    .venv/bin/python tests/bench/likelihood_reward.py runs/<run id>            # a run of the tiny demo
    .venv/bin/python tests/bench/likelihood_reward.py runs/<run id> --coefs 0,0.1,0.3,1

The run must have finished its conversations, sft and reward_model stages (cached counts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import torch  # noqa: E402

from components.eval.multiple_choice import continuation_logprobs  # noqa: E402
from components.io.trl import load_preferences  # noqa: E402
from components.model.checkpoint import TOKENIZER_FILE, load_model_dir, read_model_config  # noqa: E402
from components.model.heads import load_scalar_model_dir  # noqa: E402
from components.serve.resolve import resolve_model  # noqa: E402
from components.tokenizer.bpe import eot_id, load_tokenizer  # noqa: E402
from components.tokenizer.chat import render  # noqa: E402
from components.train.chat_batches import render_pairs  # noqa: E402
from components.train.preference_metrics import kind_and_tier_accuracy, pair_accuracy  # noqa: E402
from components.train.reward_model import TEST_FILE, score_pairs  # noqa: E402
from components.train.rl.formulas import sft_likelihood_bonus  # noqa: E402
from components.train.rl.rewards import rm_z_score  # noqa: E402
from components.train.trainer import setup_runtime  # noqa: E402


def rm_scores(rm_dir: str, pairs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) z-scores of the reward model, as PPO normalises them."""
    model, config = load_scalar_model_dir(rm_dir)
    chosen, rejected = score_pairs(model, pairs, setup_runtime("auto", threads=2), 32, pad_id)
    return rm_z_score(chosen, config["reward_stats"]), rm_z_score(rejected, config["reward_stats"])


def mean_reply_logprobs(sft_dir: str, tok, records, pairs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected): each reply's mean log-probability per token under the SFT model, the reply
    being every token after the prompt and its assistant header (what PPO's policy samples)."""
    lm, _ = load_model_dir(sft_dir)
    contexts, continuations = [], []
    for p in pairs:
        prompt = render(tok, records[p.index]["prompt"], add_generation_prompt=True).ids
        for ids in (p.chosen, p.rejected):
            if ids[: len(prompt)] != prompt:
                raise ValueError(f"pair {p.index}: its rendering does not start with its prompt's")
            contexts.append(prompt)
            continuations.append(ids[len(prompt) :])
    sums = torch.tensor(
        continuation_logprobs(lm, contexts, continuations, batch_size=32, pad_token_id=pad_id)
    )
    means = sums / torch.tensor([float(len(c)) for c in continuations])
    return means[0::2], means[1::2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a run's folder (with summary.json)")
    parser.add_argument("--coefs", default="0,0.05,0.1,0.2,0.5,1,inf", help="lambdas, comma-separated")
    args = parser.parse_args()
    sft = resolve_model(str(args.run_dir), stage="sft")  # the models as `gptrecipe chat` finds them
    if sft.reward_model_dir is None:
        raise SystemExit(f"{args.run_dir}: the run has no finished reward_model stage")
    sft_dir, rm_dir = str(sft.model_dir), str(sft.reward_model_dir)
    conversations = json.loads((args.run_dir / "summary.json").read_text())["stages"]["conversations"]
    tok = load_tokenizer(sft.model_dir / TOKENIZER_FILE)
    records = load_preferences(str(Path(conversations["outputs"]["preferences"]) / TEST_FILE))
    context_length = read_model_config(sft.model_dir)["model"]["context_length"]
    pairs, stats = render_pairs(tok, records, max_tokens=context_length)
    pad_id = eot_id(tok)
    rm_c, rm_r = rm_scores(rm_dir, pairs, pad_id)
    lp_c, lp_r = mean_reply_logprobs(sft_dir, tok, records, pairs, pad_id)
    print(f"{len(pairs)} held-out pairs ({stats.too_long} too long, left out); run {args.run_dir.name}")
    rows = []
    for text in args.coefs.split(","):
        coef = float(text)
        if coef == float("inf"):
            chosen, rejected = lp_c, lp_r
        else:  # one "token" per reply holding its mean: the bonus's mean is then that value
            ones = torch.ones(len(pairs), 1)
            chosen = sft_likelihood_bonus(rm_c, lp_c[:, None], ones, coef)
            rejected = sft_likelihood_bonus(rm_r, lp_r[:, None], ones, coef)
        groups = kind_and_tier_accuracy(pairs, chosen, rejected, "acc")
        rows.append((text, float(pair_accuracy(chosen, rejected)), groups))
    columns = sorted({key for _, _, groups in rows for key in groups})
    names = [c.split(".", 1)[1] for c in columns]
    print("| lambda | overall | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for text, overall, groups in rows:
        cells = " | ".join(f"{groups[c]:.3f}" if c in groups else "" for c in columns)
        print(f"| {text} | {overall:.3f} | {cells} |")


if __name__ == "__main__":
    main()
