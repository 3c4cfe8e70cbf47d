"""Conversations and preference pairs as training batches: rendering, targets, packing, order.

Rendering goes through the chat template (`components.tokenizer.chat.render`), so SFT and the reward
model see exactly the ids that serving and evaluation produce. A conversation longer than the limit is
truncated by `render`'s rules (earliest turns first, then the end of the final reply); one that cannot
be made to fit (`ChatTooLong`) is skipped and counted, never fatal.

SFT targets. `render(...).assistant_mask` marks what the model learns: every assistant message's content
and its closing `<|im_end|>`. Inputs are `ids[:-1]`, targets `ids[1:]`, and a target is kept only where
the mask of that target token is 1 (the mask shifted with the targets); everywhere else it is
`IGNORE_INDEX` (-100), which the loss skips. So the loss is exactly the next-token loss on assistant
tokens: predicting the reply from the prompt, never the prompt itself.

Padding. Training batches are RIGHT-padded (targets -100 and attention mask 0 on pads). Under causal
attention a token only attends to earlier positions, so pads after a sequence can never influence its
real tokens, and with right padding the real tokens sit at positions 0..n-1 as they would alone: the
model can be run with NO attention mask (the fast `is_causal` kernel) and gives the same logits for the
real tokens as a left-padded batch with its mask (the model's convention, used by generation). Both
sides are available (`padding_side`) and the tests check that they give the same loss and scores.

Packing (optional, `pack_rows`). Conversations are concatenated into rows of at most `max_length` ids,
in the shuffled order, each row right-padded. We choose the simple form (TRL's original
`ConstantLengthDataset` packing, and how pretraining treats documents): attention crosses the
conversations of a row and positions run on. What the model learns is still only the assistant
tokens of each conversation -- the first token of the next conversation (`<|im_start|>`) is never a
target -- and each conversation starts with `<|im_start|>` after the previous one's `<|im_end|>`, the
same kind of boundary that pretraining's end-of-text tokens are. Keeping conversations apart would
need a block-diagonal attention mask, which the model's forward does not take (it takes a key-padding
mask). Packing saves the compute spent on pads when conversations are much shorter than the longest
in a batch; it is off by default because the tiny world's conversations are short and of similar
length, where it gains little (see the SFT stage's measurements).

Order (`EpochBatches`). Each epoch visits the rows (conversations, packed rows or pairs) in a seeded
permutation; the sequence of rows is global and independent of the number of workers: optimizer step
s takes the next `batch_size * grad_accum * world_size` rows, and rank r's micro-batch m is the slice
starting at `(m * world_size + r) * batch_size` -- the pretraining data order's rule, so a checkpoint
stores the stream as a `DataPosition` (epoch, row) and 2 workers see what 1 worker with twice the
accumulation sees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from components.io.token_stream import DataPosition
from components.tokenizer.chat import ChatTooLong, render

IGNORE_INDEX = -100
PaddingSide = Literal["left", "right"]
T = TypeVar("T")


# --- SFT conversations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatExample:
    """One rendered conversation (or a packed row of several): ids and the SFT loss mask per id."""

    ids: list[int]
    loss_mask: list[int]  # 1 where the token is a target the model learns (assistant content + <|im_end|>)
    conversations: int = 1  # how many conversations the row holds (packing)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        """Tokens the loss counts: mask-1 tokens after the first position (the first id has no input)."""
        return sum(self.loss_mask[1:])


@dataclass
class RenderStats:
    """What rendering a dataset kept and skipped."""

    records: int = 0
    kept: int = 0
    too_long: int = 0  # ChatTooLong: could not be made to fit
    nothing_to_learn: int = 0  # no assistant token left after truncation
    truncated: int = 0  # kept, but earlier turns dropped or the final reply cut
    tokens: int = 0
    target_tokens: int = 0

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}.{k}": float(v) for k, v in vars(self).items()}


def render_sft(
    tok: Tokenizer, records: Sequence[Mapping[str, Any]], *, max_tokens: int
) -> tuple[list[ChatExample], RenderStats]:
    """Render SFT records (`messages`) with `render(max_tokens=max_tokens)`; skip and count those that do
    not fit (`ChatTooLong`) or keep no assistant token."""
    stats = RenderStats(records=len(records))
    examples = []
    for record in records:
        try:
            chat = render(tok, record["messages"], max_tokens=max_tokens)
        except ChatTooLong:
            stats.too_long += 1
            continue
        example = ChatExample(chat.ids, chat.assistant_mask)
        if example.n_targets == 0:
            stats.nothing_to_learn += 1
            continue
        stats.kept += 1
        stats.truncated += int(chat.dropped_messages > 0 or chat.truncated_tokens > 0)
        stats.tokens += len(example)
        stats.target_tokens += example.n_targets
        examples.append(example)
    return examples, stats


def shift_targets(example: ChatExample) -> tuple[list[int], list[int]]:
    """(inputs, targets): inputs ids[:-1]; targets ids[1:] where the target token's mask is 1, else
    IGNORE_INDEX."""
    ids, mask = example.ids, example.loss_mask
    targets = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)]
    return ids[:-1], targets


def pack_rows(examples: Sequence[ChatExample], max_length: int) -> list[ChatExample]:
    """Concatenate consecutive examples into rows of at most `max_length` ids (greedy, in order; an
    example never straddles two rows). Loss masks are concatenated with them (see the module docstring
    for why attention may cross conversations)."""
    rows: list[ChatExample] = []
    ids: list[int] = []
    mask: list[int] = []
    count = 0
    for ex in examples:
        if len(ex) > max_length:
            raise ValueError(f"an example of {len(ex)} ids does not fit a packed row of {max_length}")
        if ids and len(ids) + len(ex) > max_length:
            rows.append(ChatExample(ids, mask, count))
            ids, mask, count = [], [], 0
        ids = ids + ex.ids
        mask = mask + ex.loss_mask
        count += ex.conversations
    if ids:
        rows.append(ChatExample(ids, mask, count))
    return rows


def _pad(rows: Sequence[Sequence[int]], value: int, width: int, side: PaddingSide) -> Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        if side == "right":
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        else:
            out[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
    return out


@dataclass
class SFTBatch:
    """(B, T) tensors of one micro-batch: inputs, targets (IGNORE_INDEX off the assistant tokens and on
    pads) and the attention mask (1 on real inputs)."""

    input_ids: Tensor
    targets: Tensor
    attention_mask: Tensor

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def collate_sft(
    examples: Sequence[ChatExample], *, pad_id: int, padding_side: PaddingSide = "right"
) -> SFTBatch:
    """Pad shifted inputs/targets to the longest example of the batch."""
    pairs = [shift_targets(ex) for ex in examples]
    width = max(len(x) for x, _ in pairs)
    return SFTBatch(
        input_ids=_pad([x for x, _ in pairs], pad_id, width, padding_side),
        targets=_pad([y for _, y in pairs], IGNORE_INDEX, width, padding_side),
        attention_mask=_pad([[1] * len(x) for x, _ in pairs], 0, width, padding_side),
    )


# --- preference pairs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairExample:
    """A rendered preference pair: prompt + chosen and prompt + rejected, and the record's metadata."""

    chosen: list[int]
    rejected: list[int]
    kind: str = ""  # the record's `kind` (fact, arithmetic, ...), for per-kind metrics
    index: int = 0  # position in the loaded records
    info: dict[str, Any] = field(default_factory=dict, compare=False)  # tiers, ranks, prompt id


def render_pairs(
    tok: Tokenizer, records: Sequence[Mapping[str, Any]], *, max_tokens: int
) -> tuple[list[PairExample], RenderStats]:
    """Render preference records (`prompt`, `chosen`, `rejected` messages). Earlier turns may be dropped
    to fit `max_tokens`, but a pair whose completion would be cut is skipped (counted as too long): the
    reward is read at the completion's last token, so a cut completion would be scored on a part."""
    stats = RenderStats(records=len(records))
    pairs = []
    for i, record in enumerate(records):
        try:
            chosen = render(tok, [*record["prompt"], *record["chosen"]], max_tokens=max_tokens)
            rejected = render(tok, [*record["prompt"], *record["rejected"]], max_tokens=max_tokens)
        except ChatTooLong:
            stats.too_long += 1
            continue
        if chosen.truncated_tokens or rejected.truncated_tokens:
            stats.too_long += 1
            continue
        stats.kept += 1
        stats.truncated += int(chosen.dropped_messages > 0 or rejected.dropped_messages > 0)
        stats.tokens += len(chosen) + len(rejected)
        info = {
            k: record[k]
            for k in ("chosen_tier", "rejected_tier", "rank_chosen", "rank_rejected", "prompt_id")
            if k in record
        }
        pairs.append(PairExample(chosen.ids, rejected.ids, str(record.get("kind") or ""), i, info))
    return pairs, stats


@dataclass
class PairBatch:
    """Chosen and rejected sequences of B pairs in one (2B, T) batch: rows 0..B-1 chosen, B..2B-1
    rejected (the same prompt in row i and row B + i)."""

    input_ids: Tensor
    attention_mask: Tensor

    @property
    def n_pairs(self) -> int:
        return self.input_ids.shape[0] // 2


def collate_pairs(
    pairs: Sequence[PairExample], *, pad_id: int, padding_side: PaddingSide = "right"
) -> PairBatch:
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    width = max(len(r) for r in rows)
    return PairBatch(
        input_ids=_pad(rows, pad_id, width, padding_side),
        attention_mask=_pad([[1] * len(r) for r in rows], 0, width, padding_side),
    )


# --- the order of rows over epochs --------------------------------------------------------------------


class EpochBatches(Generic[T]):
    """This rank's micro-batches of items (conversations, packed rows, pairs) over shuffled epochs.

    `pack`, if given, turns an epoch's shuffled items into its rows (e.g. `pack_rows`); otherwise each
    item is a row. `next_step()` returns `grad_accum` lists of `batch_size` rows and advances
    `position`. See the module docstring for the order."""

    def __init__(
        self,
        items: Sequence[T],
        *,
        batch_size: int,
        grad_accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        pack: Callable[[list[T]], list[T]] | None = None,
        position: DataPosition | None = None,
    ):
        if not items:
            raise ValueError("no training examples")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.items = list(items)
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.pack = pack
        self.position = position or DataPosition()
        self._rows: tuple[int, list[T]] | None = None  # (epoch, rows), cached

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    def rows(self, epoch: int) -> list[T]:
        """The rows of `epoch`, in visiting order."""
        if self._rows is None or self._rows[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
            shuffled = [self.items[i] for i in order]
            self._rows = (epoch, self.pack(shuffled) if self.pack else shuffled)
        return self._rows[1]

    def rows_in_epoch(self, epoch: int) -> int:
        return len(self.rows(epoch))

    def epoch_progress(self) -> float:
        """Epochs completed, as a fraction (for logging)."""
        return self.position.epoch + self.position.row / self.rows_in_epoch(self.position.epoch)

    def next_step(self) -> list[list[T]]:
        global_rows = []
        epoch, row = self.position.epoch, self.position.row
        for _ in range(self.rows_per_step):
            if row >= self.rows_in_epoch(epoch):
                epoch, row = epoch + 1, 0
            global_rows.append(self.rows(epoch)[row])
            row += 1
        self.position = DataPosition(epoch, row)
        B = self.batch_size
        return [
            global_rows[(m * self.world_size + self.rank) * B : (m * self.world_size + self.rank + 1) * B]
            for m in range(self.grad_accum)
        ]


__all__ = [
    "IGNORE_INDEX",
    "ChatExample",
    "EpochBatches",
    "PairBatch",
    "PairExample",
    "RenderStats",
    "SFTBatch",
    "collate_pairs",
    "collate_sft",
    "pack_rows",
    "render_pairs",
    "render_sft",
    "shift_targets",
]
