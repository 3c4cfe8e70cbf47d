"""Log-likelihood multiple choice: the summed continuation log-probs, acc and acc_norm, on stub models
whose log-probs are known exactly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from components.eval.multiple_choice import (
    MultipleChoiceItem,
    benchmark_items,
    continuation_logprobs,
    score_items,
)
from components.tokenizer.bpe import TokenizerConfig, encode_batch, eot_id, train_tokenizer


class Bigram(nn.Module):
    """forward(idx) -> (logits, None) with logits[b, t] = table[idx[b, t]]: the next token's distribution
    depends only on the current token, so every log-prob can be worked out by hand."""

    def __init__(self, table: torch.Tensor, context_length: int = 64):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.config = SimpleNamespace(context_length=context_length, vocab_size=table.shape[0])

    def forward(self, idx):
        return self.table[idx], None


def hand_logprob(table: torch.Tensor, context: list[int], continuation: list[int]) -> float:
    logp = torch.log_softmax(table.double(), dim=-1)
    seq = context + continuation
    return sum(float(logp[seq[i - 1], seq[i]]) for i in range(len(context), len(seq)))


def test_continuation_logprobs_are_the_summed_next_token_logprobs():
    torch.manual_seed(0)
    table = torch.randn(7, 7) * 2
    model = Bigram(table)
    contexts = [[1, 2, 3], [4], [5, 6, 0, 1, 2], [3, 3]]
    conts = [[4, 5], [6, 6, 6], [0], [2, 1, 0, 4]]
    got = continuation_logprobs(model, contexts, conts, batch_size=3)  # two batches, mixed lengths
    want = [hand_logprob(table, c, k) for c, k in zip(contexts, conts, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)
    # The same numbers one sequence at a time: right padding changes nothing before it.
    alone = [continuation_logprobs(model, [c], [k])[0] for c, k in zip(contexts, conts, strict=True)]
    assert got == pytest.approx(alone, abs=1e-5)


def test_a_too_long_sequence_loses_context_from_the_front():
    torch.manual_seed(1)
    table = torch.randn(5, 5)
    model = Bigram(table, context_length=4)
    got = continuation_logprobs(model, [[0, 1, 2, 3, 4]], [[2, 0]])
    # Only the last 2 context tokens fit: [3, 4] + [2, 0]; a bigram only needs the one before anyway.
    assert got[0] == pytest.approx(hand_logprob(table, [3, 4], [2, 0]), abs=1e-5)
    with pytest.raises(ValueError, match="does not fit the context_length 4"):
        continuation_logprobs(model, [[0]], [[1, 2, 3, 4]])


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A byte-level tokenizer with no merges: one ASCII character = one token."""
    config = TokenizerConfig(vocab_size=256 + len(TokenizerConfig().all_special_tokens()))
    return train_tokenizer(["Question: a b c\nAnswer: a b"], config)


def test_acc_and_acc_norm_disagree_when_the_choices_differ_in_length(byte_tokenizer):
    """A model that likes the letter 'a' (logit 5, every other token 0): a long run of a's costs more
    in total than one rare letter, but less per character. acc takes the short choice, acc_norm the
    long one."""
    tok = byte_tokenizer
    V = tok.get_vocab_size()
    a = encode_batch(tok, ["a"], append_eot=False)[0][0]
    table = torch.zeros(V, V)
    table[:, a] = 5.0
    model = Bigram(table)
    long, short = " " + "a" * 14, " b"
    items = [
        MultipleChoiceItem(
            "long-right", "Question: which?\nAnswer:", (short, long), answer_index=1, group="g1"
        ),
        MultipleChoiceItem(
            "short-right", "Question: which?\nAnswer:", (short, long), answer_index=0, group="g2"
        ),
    ]
    result = score_items(model, tok, items, prefix_ids=[eot_id(tok)])

    log_z = math.log(math.exp(5.0) + V - 1)
    log_a, log_other = 5.0 - log_z, -log_z
    want = [2 * log_other, log_other + 14 * log_a]  # " b" = space + b; the long one = space + 14 a's
    for detail in result.details:
        assert detail["logprobs"] == pytest.approx(want, abs=1e-4)
    assert want[0] > want[1] and want[0] / len(short) < want[1] / len(long)  # the case is what we claim
    assert [d["pick"] for d in result.details] == [0, 0]
    assert [d["pick_norm"] for d in result.details] == [1, 1]
    assert result.acc == 0.5 and result.acc_norm == 0.5
    assert result.by_group == {
        "g1": {"acc": 0.0, "acc_norm": 1.0, "items": 1.0},
        "g2": {"acc": 1.0, "acc_norm": 0.0, "items": 1.0},
    }


def test_benchmark_records_become_the_fixed_question_answer_format():
    records = [
        {
            "id": "country-03.capital",
            "question": "What is the capital of Ejon?",
            "choices": ["Zifos", "Thozusesh", "Tetun", "Ekronok"],
            "answer_index": 1,
            "answer": "Thozusesh",
        }
    ]
    (item,) = benchmark_items(records)
    assert item.prompt == "Question: What is the capital of Ejon?\nAnswer:"
    assert item.continuations == (" Zifos", " Thozusesh", " Tetun", " Ekronok")
    assert item.answer_index == 1 and item.group == "capital"


def test_an_answer_index_outside_the_choices_is_refused(byte_tokenizer):
    model = Bigram(torch.zeros(byte_tokenizer.get_vocab_size(), byte_tokenizer.get_vocab_size()))
    bad = MultipleChoiceItem("x.y", "Q", (" a", " b"), answer_index=2)
    with pytest.raises(ValueError, match=r"item x\.y: answer_index 2 is not one of its 2 choices"):
        score_items(model, byte_tokenizer, [bad])
