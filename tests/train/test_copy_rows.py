"""Copy rows (a random block repeated to the row's end) and the pretrain step that mixes them in."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from components.model.gpt import GPT, GPTConfig
from components.train.copy_rows import MAX_BLOCK, MIN_BLOCK, copy_batch, repeated_block_rows
from components.train.pretrain import mixed_copy_step
from components.train.trainer import Runtime, lm_loss

CPU = Runtime(rank=0, world_size=1, device=torch.device("cpu"), dtype=torch.float32)


def period(row: torch.Tensor) -> int | None:
    """The shortest p in [MIN_BLOCK, MAX_BLOCK] with row[t] == row[t - p] for every t >= p."""
    return next((p for p in range(MIN_BLOCK, MAX_BLOCK + 1) if torch.equal(row[p:], row[:-p])), None)


def test_every_row_repeats_one_block_and_the_periods_differ():
    rows = repeated_block_rows(64, 200, vocab=50, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (64, 200) and rows.dtype == torch.long
    assert int(rows.min()) >= 0 and int(rows.max()) < 50
    periods = [period(row) for row in rows]
    assert None not in periods
    assert len(set(periods)) > 20  # no fixed offset predicts the rows: the period must be found


def test_copy_batches_are_drawn_from_seed_step_rank_and_phase_alone():
    x, y = copy_batch(4, 32, 100, seed=3, step=5, rank=1)
    assert x.shape == y.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])  # targets: the next token
    again, _ = copy_batch(4, 32, 100, seed=3, step=5, rank=1)
    assert torch.equal(x, again)  # a resumed run sees the same rows
    for other in ({"step": 6, "rank": 1}, {"step": 5, "rank": 0}, {"step": 5, "rank": 1, "warmup": True}):
        assert not torch.equal(x, copy_batch(4, 32, 100, seed=3, **other)[0])


def test_the_mixed_step_weights_every_token_alike_and_reports_both_losses():
    config = GPTConfig(vocab_size=64, context_length=32, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    corpus = [(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))) for _ in range(2)]
    copy = copy_batch(2, 8, 64, seed=0, step=0, rank=0)  # 16 tokens against 32 per corpus micro-batch

    torch.manual_seed(1)
    by_hand = GPT(config)
    corpus_losses = [lm_loss(by_hand, batch, CPU) for batch in corpus]
    copy_loss = lm_loss(by_hand, copy, CPU)
    ((corpus_losses[0] + corpus_losses[1] + 0.5 * copy_loss) / 2.5).backward()  # tokens 32, 32, 16

    torch.manual_seed(1)
    model = GPT(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loop = SimpleNamespace(
        train_model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), runtime=CPU
    )
    figures, _ = mixed_copy_step(loop, corpus, copy, grad_clip=0.0)

    expected = torch.stack([(corpus_losses[0] + corpus_losses[1]).detach() / 2, copy_loss.detach()])
    torch.testing.assert_close(figures, expected)  # [mean corpus loss, copy loss]
    for name, p in model.named_parameters():  # SGD at lr 1: the update is the gradient
        torch.testing.assert_close(before[name] - p.detach(), dict(by_hand.named_parameters())[name].grad)
