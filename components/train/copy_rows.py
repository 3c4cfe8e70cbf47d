"""Rows that teach in-context copying: one random block of ordinary tokens repeated to the row's end.

A small model pretrained on a corpus it can memorise learns no induction heads (Olsson et al. 2022, "In-
context Learning and Induction Heads"), so it cannot copy an unseen word from its context into a tool
call. In these rows the block's length (the period) differs from row to row: after its first period a
row is predicted exactly by finding the previous occurrence of the current token and copying the token
that followed it, and by nothing else. The pretrain stage can train on them before the corpus (a warm-up
that crosses the induction plateau) and keep some in every corpus step (without them the corpus erases
the copying again); see PretrainConfig's copy_* fields.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MIN_BLOCK, MAX_BLOCK = 8, 64


def repeated_block_rows(n: int, length: int, vocab: int, generator: torch.Generator) -> Tensor:
    """(n, length) token ids < `vocab`: each row one random block of MIN_BLOCK-MAX_BLOCK tokens repeated."""
    rows = torch.empty(n, length, dtype=torch.long)
    for row in rows:
        period = int(torch.randint(MIN_BLOCK, MAX_BLOCK + 1, (1,), generator=generator))
        block = torch.randint(0, vocab, (period,), generator=generator)
        row[:] = block.repeat(length // period + 1)[:length]
    return rows


def copy_batch(
    n: int, seq_len: int, vocab: int, *, seed: int, step: int, rank: int, warmup: bool = False
) -> tuple[Tensor, Tensor]:
    """The (inputs, targets) micro-batch of copy rows for one step of one worker. Drawn from (seed,
    warm-up or corpus step, step, rank) alone, so a resumed run sees the same rows and workers see
    different ones."""
    entropy = [seed, int(warmup), step, rank]
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    rows = repeated_block_rows(n, seq_len + 1, vocab, generator)
    return rows[:, :-1], rows[:, 1:]
