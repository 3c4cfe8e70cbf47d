"""Packed batches: the stream over shards, the seeded order, per-rank sharding, the data position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.io.token_shards import ShardWriter
from components.io.token_stream import (
    DataPosition,
    NotEnoughTokensError,
    PackedBatches,
    TokenStream,
    tokens_needed,
    val_rows,
)

VOCAB, EOT = 1000, 999


def write_shards(directory, sizes: list[int]) -> TokenStream:
    """Shards whose ids count up 0, 1, 2, ... (mod 997) across shards, so a window's content tells
    exactly where in the stream it was cut."""
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(sizes):
        with ShardWriter(directory / f"part-{i:05d}.bin", vocab_size=VOCAB, eot_id=EOT) as w:
            w.write(np.arange(start, start + n) % 997)
        start += n
    return TokenStream.from_dir(directory)


@pytest.fixture
def stream(tmp_path) -> TokenStream:
    return write_shards(tmp_path / "train", [300, 250, 451])  # 1001 tokens


def first_ids(micro_batches) -> list[int]:
    return [int(x[i, 0]) for x, _ in micro_batches for i in range(len(x))]


def test_stream_reads_across_shard_boundaries(stream):
    assert len(stream) == 1001 and stream.vocab_size == VOCAB and stream.eot_id == EOT
    assert stream.read(295, 10).tolist() == list(range(295, 305))
    assert stream.read(0, 1001).tolist() == [i % 997 for i in range(1001)]
    assert stream.read(545, 10).dtype == np.int64
    with pytest.raises(IndexError):
        stream.read(995, 10)


def test_unigram_counts(stream):
    counts = stream.unigram_counts()
    assert counts.sum() == 1001 and counts[0] == counts[3] == 2 and counts[4] == 1 and counts[998] == 0


def test_rows_are_windows_with_targets_shifted_by_one(stream):
    batches = PackedBatches(stream, batch_size=4, seq_len=10, seed=0)
    [(x, y)] = batches.next_step()
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.long
    for row_x, row_y in zip(x, y, strict=True):
        start = int(row_x[0])
        assert start % 10 == 0  # epoch 0 cuts at multiples of T
        assert row_x.tolist() == list(range(start, start + 10))
        assert row_y.tolist() == list(range(start + 1, start + 11))


def test_an_epoch_visits_every_window_once_in_a_seeded_order(stream):
    batches = PackedBatches(stream, batch_size=10, seq_len=10, seed=3)
    assert batches.windows_in_epoch(0) == 100  # (1001 - 1) // 10
    seen = [s for _ in range(10) for s in first_ids(batches.next_step())]
    assert sorted(seen) == list(range(0, 1000, 10))
    assert seen != sorted(seen)
    assert batches.position == DataPosition(epoch=0, row=100)
    again = PackedBatches(stream, batch_size=10, seq_len=10, seed=3)
    assert first_ids(again.next_step()) == seen[:10]
    other = PackedBatches(stream, batch_size=10, seq_len=10, seed=4)
    assert first_ids(other.next_step()) != seen[:10]


def test_later_epochs_cut_the_text_elsewhere(stream):
    batches = PackedBatches(stream, batch_size=10, seq_len=10, seed=0)
    shifts = {batches.shift(e) for e in range(1, 6)}
    assert shifts != {0}
    for _ in range(10):
        batches.next_step()
    [(x, y)] = batches.next_step()  # the first step of epoch 1
    assert batches.position.epoch == 1
    assert {(int(s) - batches.shift(1)) % 10 for s in x[:, 0]} == {0}
    assert (y[:, :-1] == x[:, 1:]).all()


def test_two_workers_split_exactly_the_rows_of_one_worker_with_accumulation(stream):
    one = PackedBatches(stream, batch_size=3, seq_len=10, grad_accum=2, seed=1)
    ranks = [
        PackedBatches(stream, batch_size=3, seq_len=10, grad_accum=1, rank=r, world_size=2, seed=1)
        for r in range(2)
    ]
    for _ in range(20):  # runs across an epoch boundary (100 windows, 6 per step)
        single = one.next_step()
        split = [b.next_step()[0] for b in ranks]
        for (x1, y1), (x2, y2) in zip(single, split, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert ranks[0].position == ranks[1].position == one.position


def test_micro_batches_of_a_rank_interleave_with_the_other_ranks(stream):
    flat = PackedBatches(stream, batch_size=8, seq_len=10, seed=5)
    expected = first_ids(flat.next_step())
    r0, r1 = (
        PackedBatches(stream, batch_size=2, seq_len=10, grad_accum=2, rank=r, world_size=2, seed=5)
        for r in range(2)
    )
    a, b = first_ids(r0.next_step()), first_ids(r1.next_step())
    # micro-batch m of rank r holds global rows (m * world + r) * B ...
    assert expected == a[:2] + b[:2] + a[2:] + b[2:]


def test_restoring_the_position_continues_the_same_stream(stream):
    batches = PackedBatches(stream, batch_size=7, seq_len=10, seed=2)
    for _ in range(13):  # into epoch 1
        batches.next_step()
    saved = DataPosition.from_dict(batches.position.to_dict())
    expected = [batches.next_step() for _ in range(20)]
    resumed = PackedBatches(stream, batch_size=7, seq_len=10, seed=2, position=saved)
    for want in expected:
        [(x, y)] = resumed.next_step()
        assert torch.equal(x, want[0][0]) and torch.equal(y, want[0][1])


def test_too_few_tokens_for_one_step_names_both_numbers(stream):
    assert tokens_needed(batch_size=10, seq_len=100, grad_accum=1, world_size=1) == 1001
    PackedBatches(stream, batch_size=10, seq_len=100)  # exactly enough
    with pytest.raises(NotEnoughTokensError, match=r"has 1,001 tokens, but one optimizer step needs 2,001"):
        PackedBatches(stream, batch_size=10, seq_len=100, world_size=2, rank=1)


def test_val_rows_do_not_depend_on_the_number_of_workers(stream):
    ids, weights = val_rows(stream, seq_len=10, n_rows=5)
    assert ids.shape == (5, 11) and weights.tolist() == [1.0] * 5
    assert ids[:, 0].tolist() == [0, 10, 20, 30, 40]
    per_rank = [val_rows(stream, seq_len=10, n_rows=5, rank=r, world_size=3) for r in range(3)]
    assert all(len(i) == 2 for i, _ in per_rank)  # equal counts: FSDP forwards are collectives
    real = sorted(int(row[0]) for i, w in per_rank for row, wt in zip(i, w, strict=True) if wt == 1)
    assert real == [0, 10, 20, 30, 40]
    assert sum(float(w.sum()) for _, w in per_rank) == 5


def test_val_rows_are_capped_by_the_split_and_refuse_an_empty_one(stream, tmp_path):
    ids, _ = val_rows(stream, seq_len=100, n_rows=50)
    assert len(ids) == 10
    tiny = write_shards(tmp_path / "val", [50])
    with pytest.raises(
        NotEnoughTokensError, match=r"has 50 tokens; evaluation needs at least one row .* 101"
    ):
        val_rows(tiny, seq_len=100, n_rows=4)


def test_shards_from_different_tokenizers_are_refused(tmp_path):
    (tmp_path / "mixed").mkdir()
    with ShardWriter(tmp_path / "mixed" / "a.bin", vocab_size=1000, eot_id=999) as w:
        w.write([1, 2, 3])
    with ShardWriter(tmp_path / "mixed" / "b.bin", vocab_size=2000, eot_id=1999) as w:
        w.write([1, 2, 3])
    with pytest.raises(ValueError, match="disagree on the vocabulary"):
        TokenStream.from_dir(tmp_path / "mixed")
