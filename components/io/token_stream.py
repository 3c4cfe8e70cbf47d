"""Packed B x T training batches from memory-mapped token shards.

The token shards of a split are read as one long sequence of ids (documents back to back, each ended
by end-of-text). A training row is a window of T + 1 consecutive ids: the first T are the input, the
last T the next-token targets, so every position of every row is trained on and no padding is ever
needed -- a row simply runs across document boundaries, where the end-of-text token tells the model
that a new document starts.

Order. Epoch e cuts the sequence into windows starting at shift_e + k*T (shift_e is a seeded offset
in [0, T), 0 in epoch 0, so later epochs see the text cut at other places) and visits them in a
seeded random permutation. The visiting order is one global sequence of rows, independent of the
number of workers: optimizer step s consumes the next `batch_size * grad_accum * world_size` rows of
it, and rank r's micro-batch m is the slice starting at `(m * world_size + r) * batch_size`. So
2 workers with grad_accum 1 train on exactly the rows that 1 worker with grad_accum 2 trains on,
and the whole state of the data stream is a `DataPosition` (epoch, row) that a checkpoint stores.

Validation rows are the first windows of the val split in order, the same for every world size;
each rank takes every world_size-th one (see `val_rows`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from components.io.token_shards import read_shard, shard_header


class NotEnoughTokensError(ValueError):
    """A split too small for the batches asked of it; the message gives both numbers."""


class TokenStream:
    """The ids of several shards read as one sequence; memory-mapped, nothing is copied up front."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]):
        self.paths = [Path(p) for p in paths]
        headers = [shard_header(p) for p in self.paths]
        vocab = {h.vocab_size for h in headers}
        eot = {h.eot_id for h in headers}
        if len(vocab) > 1 or len(eot) > 1:
            raise ValueError(
                f"shards disagree on the vocabulary: vocab_size {sorted(vocab)}, eot_id {sorted(eot)} "
                f"in {[str(p) for p in self.paths]}"
            )
        self.vocab_size = vocab.pop() if vocab else 0
        self.eot_id = eot.pop() if eot else 0
        self._shards = [read_shard(p) for p in self.paths]
        self._starts = np.cumsum([0] + [len(s) for s in self._shards])

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> TokenStream:
        """Every `*.bin` shard in `directory`, in name order."""
        paths = sorted(Path(directory).glob("*.bin"))
        return cls(paths)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Ids start .. start + length - 1 (across shard boundaries) as a fresh int64 array."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"tokens {start}..{start + length} outside a stream of {len(self)}")
        out = np.empty(length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        while filled < length:
            offset = start + filled - int(self._starts[shard])
            take = min(length - filled, len(self._shards[shard]) - offset)
            out[filled : filled + take] = self._shards[shard][offset : offset + take]
            filled += take
            shard += 1
        return out

    def unigram_counts(self, max_tokens: int | None = None) -> np.ndarray:
        """How often each id occurs (the first `max_tokens` ids of every shard, spread evenly)."""
        counts = np.zeros(max(self.vocab_size, 1), dtype=np.int64)
        per_shard = None if max_tokens is None else max(1, max_tokens // max(1, len(self._shards)))
        for shard in self._shards:
            part = shard if per_shard is None else shard[:per_shard]
            for lo in range(0, len(part), 1 << 24):  # chunks keep the int64 copy small
                counts += np.bincount(np.asarray(part[lo : lo + (1 << 24)]), minlength=len(counts))
        return counts


@dataclass(frozen=True)
class DataPosition:
    """Where the training stream stands: `row` rows of epoch `epoch` have been consumed."""

    epoch: int = 0
    row: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> DataPosition:
        return cls(epoch=int(data["epoch"]), row=int(data["row"]))


def tokens_needed(batch_size: int, seq_len: int, grad_accum: int = 1, world_size: int = 1) -> int:
    """Tokens a split needs for one optimizer step without reusing a window: rows * T + 1."""
    return batch_size * grad_accum * world_size * seq_len + 1


class PackedBatches:
    """Micro-batches for one rank: `next_step()` returns `grad_accum` (x, y) pairs of shape (B, T)."""

    def __init__(
        self,
        stream: TokenStream,
        *,
        batch_size: int,
        seq_len: int,
        grad_accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        position: DataPosition | None = None,
    ):
        needed = tokens_needed(batch_size, seq_len, grad_accum, world_size)
        if len(stream) < needed:
            raise NotEnoughTokensError(
                f"the training split has {len(stream):,} tokens, but one optimizer step needs {needed:,} "
                f"(batch_size {batch_size} x grad_accum {grad_accum} x {world_size} worker(s) rows of "
                f"seq_len {seq_len}, + 1): give more text or lower batch_size / seq_len"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.stream = stream
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.position = position or DataPosition()
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, window permutation), cached
        self._shifts: dict[int, int] = {}

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.rows_per_step * self.seq_len

    def _rng(self, epoch: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, purpose])

    def shift(self, epoch: int) -> int:
        if epoch not in self._shifts:
            self._shifts[epoch] = 0 if epoch == 0 else int(self._rng(epoch, 0).integers(0, self.seq_len))
        return self._shifts[epoch]

    def windows_in_epoch(self, epoch: int) -> int:
        return (len(self.stream) - 1 - self.shift(epoch)) // self.seq_len

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            n = self.windows_in_epoch(epoch)
            dtype = np.uint32 if n < 2**32 else np.int64  # half the memory for up to 4G windows
            self._order = (epoch, self._rng(epoch, 1).permutation(n).astype(dtype))
        return self._order[1]

    def window_start(self, epoch: int, row: int) -> int:
        """Token offset of row `row` of epoch `epoch` in the stream."""
        return self.shift(epoch) + int(self._permutation(epoch)[row]) * self.seq_len

    def _step_rows(self) -> list[tuple[int, int]]:
        """(epoch, row) of every row of the next step, all ranks together, in global order."""
        rows = []
        epoch, row = self.position.epoch, self.position.row
        for _ in range(self.rows_per_step):
            if row >= self.windows_in_epoch(epoch):
                epoch, row = epoch + 1, 0
            rows.append((epoch, row))
            row += 1
        return rows

    def next_step(self) -> list[tuple[Tensor, Tensor]]:
        """This rank's `grad_accum` micro-batches of the next optimizer step; advances the position."""
        rows = self._step_rows()
        micro = []
        B, T = self.batch_size, self.seq_len
        for m in range(self.grad_accum):
            first = (m * self.world_size + self.rank) * B
            starts = [self.window_start(e, r) for e, r in rows[first : first + B]]
            block = np.stack([self.stream.read(start, T + 1) for start in starts])
            ids = torch.from_numpy(block)
            micro.append((ids[:, :-1], ids[:, 1:]))
        last_epoch, last_row = rows[-1]
        self.position = DataPosition(last_epoch, last_row + 1)
        return micro


def val_rows(
    stream: TokenStream, *, seq_len: int, n_rows: int, rank: int = 0, world_size: int = 1
) -> tuple[Tensor, Tensor]:
    """This rank's validation windows, ids of shape (R, T + 1), and a weight per row (R,), 1 or 0.

    The val set is the first `n_rows` windows of the split (fewer if it is shorter), the same for
    every world size; rank r takes rows r, r + world_size, .... Every rank gets the same number of
    rows, padded with weight-0 copies, because with sharded parameters (FSDP) every forward is a
    collective that all ranks must join."""
    available = (len(stream) - 1) // seq_len
    n_rows = min(n_rows, available)
    if n_rows < 1:
        raise NotEnoughTokensError(
            f"the validation split has {len(stream):,} tokens; evaluation needs at least one row of "
            f"seq_len {seq_len} + 1 = {seq_len + 1} tokens"
        )
    per_rank = -(-n_rows // world_size)
    mine = list(range(rank, n_rows, world_size))
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine += [0] * (per_rank - len(mine))
    ids = torch.from_numpy(np.stack([stream.read(i * seq_len, seq_len + 1) for i in mine]))
    return ids, torch.tensor(weights)
