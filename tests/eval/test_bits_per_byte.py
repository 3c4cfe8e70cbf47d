"""Bits per byte over held-out token shards, against a hand computation on a stub model whose
per-token log-probs are known."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from components.eval.bits_per_byte import corpus_bits_per_byte
from components.io.token_shards import ShardWriter, read_shard
from components.tokenizer.bpe import TokenizerConfig, decode, encode_batch, eot_id, train_tokenizer

WORDS = ["the", "capital", "of", "ejon", "is", "thozusesh", "many", "visitors", "come", "in", "spring"]


class Unigram(nn.Module):
    """forward(idx) -> (logits, None): the same fixed distribution at every position."""

    def __init__(self, logits: torch.Tensor, context_length: int):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.config = SimpleNamespace(context_length=context_length, vocab_size=logits.shape[0])

    def forward(self, idx):
        return self.logits.expand(*idx.shape, -1), None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """An ASCII corpus in two val shards (documents end with end-of-text) and its tokenizer."""
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(40)]
    tok = train_tokenizer(docs, TokenizerConfig(vocab_size=300))
    root = tmp_path_factory.mktemp("bpb")
    ids = encode_batch(tok, docs)
    for i, part in enumerate([ids[:20], ids[20:]]):
        with ShardWriter(root / f"part-{i:05d}.bin", tok.get_vocab_size(), eot_id(tok)) as w:
            for doc in part:
                w.write(doc)
    return tok, root


def hand_bits_per_byte(tok, tokens: np.ndarray, logp: np.ndarray, n_targets: int) -> tuple[float, float]:
    """(loss, bpb) of predicting tokens[1 : n_targets + 1], counted directly: the NLL of every target for
    the loss, the NLL of the non-end-of-text targets over the UTF-8 bytes of the text they decode to."""
    eot = eot_id(tok)
    targets = tokens[1 : n_targets + 1]
    nll = -logp[targets]
    text = [t for t in targets.tolist() if t != eot]
    nbytes = len(decode(tok, text).encode("utf-8"))  # ASCII corpus: decoding pieces together is exact
    return float(nll.mean()), float(nll[targets != eot].sum() / (math.log(2) * nbytes))


def test_bits_per_byte_equals_the_hand_computation(corpus):
    tok, root = corpus
    V = tok.get_vocab_size()
    torch.manual_seed(0)
    logits = torch.randn(V) * 3
    model = Unigram(logits, context_length=32)
    logp = torch.log_softmax(logits.double(), dim=-1).numpy()
    tokens = np.concatenate([read_shard(p) for p in sorted(root.glob("*.bin"))]).astype(np.int64)
    assert (tokens == eot_id(tok)).sum() == 40

    result = corpus_bits_per_byte(model, tok, root, max_tokens=200, seq_len=16, batch_size=5)
    assert (result.rows, result.seq_len, result.tokens) == (12, 16, 192)  # 200 // 16 whole windows
    loss, bpb = hand_bits_per_byte(tok, tokens, logp, 192)
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.bpb == pytest.approx(bpb, rel=1e-5)


def test_windows_default_to_the_context_and_shrink_to_a_short_split(corpus, tmp_path):
    tok, root = corpus
    model = Unigram(torch.zeros(tok.get_vocab_size()), context_length=32)
    assert corpus_bits_per_byte(model, tok, root, max_tokens=100).seq_len == 32
    with ShardWriter(tmp_path / "part-00000.bin", tok.get_vocab_size(), eot_id(tok)) as w:
        w.write(encode_batch(tok, ["the capital of ejon"])[0])
    short = corpus_bits_per_byte(model, tok, tmp_path, max_tokens=1000)
    n = len(read_shard(tmp_path / "part-00000.bin"))
    assert (short.rows, short.seq_len) == (1, n - 1)
    # A uniform model pays ln V per token whatever the token.
    assert short.loss == pytest.approx(math.log(tok.get_vocab_size()), rel=1e-6)


def test_tokens_of_another_tokenizer_are_refused(corpus):
    _, root = corpus
    no_merges = 256 + len(TokenizerConfig().all_special_tokens())
    other = train_tokenizer(["something else"], TokenizerConfig(vocab_size=no_merges))
    model = Unigram(torch.zeros(other.get_vocab_size()), context_length=32)
    with pytest.raises(ValueError, match="do not come from the model's tokenizer"):
        corpus_bits_per_byte(model, other, root, max_tokens=100)
