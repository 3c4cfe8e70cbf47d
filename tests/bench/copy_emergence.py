"""Does the demo's model learn in-context copying when the training data reward nothing else?

The tiny demo's pretrained model scores 0 on evaluate's `copy_accuracy` (a random token sequence shown
twice, the second copy predicted greedily), which is why its tool calls miscopy held-out words. This
trains the demo's model shape with the demo's optimizer, schedule, batch and row length on rows made for
copying alone: random ordinary tokens in which one span (8 to 40 tokens) appears twice at a random
distance, so the only thing to learn is to find the earlier copy and continue it (an induction head,
Olsson et al. 2022). `--data periodic` gives a stronger signal: each row is one random block of 8-64
tokens repeated to the row's end (the period differs by row, so no fixed offset predicts it). It
prints the training loss and `copy_accuracy` every `--every` steps. Prints figures, asserts nothing;
about 0.2 s a step of 8 x 256 tokens on 2 cores:

    .venv/bin/python tests/bench/copy_emergence.py runs/<run id> --steps 3000
    .venv/bin/python tests/bench/copy_emergence.py runs/<run id> --data periodic --batch-size 32 \
        --row-length 128 --lr 1e-3 --steps 2500 --stop-after 1000 --save /tmp/copying

The run gives the tokenizer (its pretraining stage's model directory); nothing of its weights is used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import torch  # noqa: E402

from components.eval.in_context_copy import copy_accuracy  # noqa: E402
from components.model.checkpoint import TOKENIZER_FILE, save_model_dir  # noqa: E402
from components.model.gpt import GPT  # noqa: E402
from components.serve.resolve import resolve_model  # noqa: E402
from components.tokenizer.bpe import load_tokenizer, ordinary_token_count  # noqa: E402
from components.train.copy_rows import repeated_block_rows  # noqa: E402
from components.train.pretrain_config import PretrainConfig  # noqa: E402
from components.train.trainer import lr_at, make_optimizer, set_lr, setup_runtime  # noqa: E402


def copy_rows(n: int, length: int, ordinary: int, generator: torch.Generator) -> torch.Tensor:
    """n rows of `length` random ordinary tokens, each holding one span of 8-40 tokens twice."""
    rows = torch.randint(0, ordinary, (n, length), generator=generator)
    for row in rows:
        span = int(torch.randint(8, 41, (1,), generator=generator))
        gap = int(torch.randint(0, length - 2 * span + 1, (1,), generator=generator))
        start = int(torch.randint(0, length - 2 * span - gap + 1, (1,), generator=generator))
        second = start + span + gap
        row[second : second + span] = row[start : start + span]
    return rows


ROWS = {"spans": copy_rows, "periodic": repeated_block_rows}  # periodic: what pretrain.copy_* trains on


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dir", type=Path, help="a run's folder (with summary.json) that finished pretrain"
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step (the demo's 8)")
    parser.add_argument("--data", choices=sorted(ROWS), default="spans")
    parser.add_argument("--row-length", type=int, help="tokens per row (default: the demo's context, 256)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the demo's 3e-3)")
    parser.add_argument("--stop-after", type=int, help="stop after this many of the schedule's --steps")
    parser.add_argument("--save", type=Path, help="write the trained model directory here")
    args = parser.parse_args()
    base = resolve_model(str(args.run_dir), stage="pretrain")  # as `gptrecipe chat` finds it
    tok = load_tokenizer(base.model_dir / TOKENIZER_FILE)
    ordinary = ordinary_token_count(tok)
    cfg = PretrainConfig()  # the demo's shape and optimizer (tiny.yaml changes only batch and steps)
    if args.lr:
        cfg = cfg.model_copy(update={"lr": args.lr})
    length = args.row_length or cfg.context_length
    make_rows = ROWS[args.data]
    runtime = setup_runtime(cfg.dtype, threads=2)
    torch.manual_seed(0)
    model = GPT(cfg.gpt_config(tok.get_vocab_size())).to(runtime.device)
    optimizer = make_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, eps=cfg.eps, device=runtime.device
    )
    generator = torch.Generator().manual_seed(0)
    print(f"{args.steps} steps of {args.batch_size} x {length} tokens ({args.data}), vocabulary {ordinary}")
    started = time.time()
    for step in range(args.stop_after or args.steps):
        set_lr(optimizer, lr_at(step, max_steps=args.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps))
        rows = make_rows(args.batch_size, length + 1, ordinary, generator).to(runtime.device)
        with runtime.autocast():
            _, loss = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.every == 0 or step + 1 == (args.stop_after or args.steps):
            copied = copy_accuracy(model, tok, sequences=64)
            seconds = time.time() - started
            print(
                f"step {step + 1}: loss {loss.item():.3f}, copy_accuracy {copied:.3f}, {seconds:.0f} s",
                flush=True,
            )
    if args.save:  # e.g. for `gptrecipe run tiny pretrain.init_from=DIR`
        save_model_dir(model.float().cpu(), args.save, tokenizer_path=base.model_dir / TOKENIZER_FILE)
        print(f"model directory: {args.save}")


if __name__ == "__main__":
    main()
