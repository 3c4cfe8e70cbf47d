"""In-context copying against stub models whose predictions are known: one that copies from the right
place in the first copy, and one that copies from one place too early (a common off-by-one)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.eval.in_context_copy import copy_accuracy
from components.tokenizer.bpe import TokenizerConfig, special_token_ids, train_tokenizer


class Lookback(nn.Module):
    """Predicts, at position t, the token at t - back (nothing before the start: token 0); keeps its input."""

    def __init__(self, back: int, vocab: int):
        super().__init__()
        self.back, self.vocab = back, vocab
        self.weight = nn.Parameter(torch.zeros(1))  # a parameter, for the device lookup

    def forward(self, idx):
        self.seen = idx.clone()
        source = torch.zeros_like(idx)
        source[:, self.back :] = idx[:, : idx.shape[1] - self.back]
        return torch.nn.functional.one_hot(source, self.vocab).float(), None


@pytest.fixture(scope="module")
def tok():
    docs = ["the capital of ejon is thozusesh", "many visitors come in spring"] * 20
    return train_tokenizer(docs, TokenizerConfig(vocab_size=300))


def test_a_perfect_copier_scores_one_and_an_off_by_one_copier_what_its_luck_gives(tok):
    length = 20
    vocab = tok.get_vocab_size()
    # position t of the second copy predicts token t + 1, which is the token at t + 1 - length
    assert copy_accuracy(Lookback(length - 1, vocab), tok, sequences=16, length=length) == 1.0

    early = Lookback(length, vocab)  # predicts token t itself: right only where a token repeats
    score = copy_accuracy(early, tok, sequences=16, length=length)
    first = early.seen[:, :length]
    assert torch.equal(early.seen[:, length:], first)  # the sequence, shown twice
    by_hand = sum(int(first[r, j] == first[r, j + 1]) for r in range(16) for j in range(length - 1)) / (
        16 * (length - 1)
    )
    assert score == pytest.approx(by_hand) and score < 0.1


def test_only_ordinary_tokens_are_drawn_and_nothing_to_score_is_none(tok):
    model = Lookback(1, tok.get_vocab_size())
    copy_accuracy(model, tok, sequences=64, length=20, seed=3)
    assert model.seen.max().item() < min(special_token_ids(tok).values())
    assert copy_accuracy(model, tok, sequences=0) is None
    assert copy_accuracy(model, tok, length=1) is None
