"""Bits per byte of a model on held-out corpus text: the language-modelling number that compares across
models and tokenizers.

    bits per byte = total NLL in nats / (ln 2 * UTF-8 bytes of the text)

The end-of-text tokens that separate documents are not text: they count neither in the NLL nor in the
bytes (a model is not judged on guessing where the next document starts). Per-token loss depends on how
much text one token holds; per byte it does not, so a model with a 4k vocabulary and one with a 50k
vocabulary compare, and so do a base model and its fine-tuned descendants, whose drift on web text is
the "alignment tax".

The arithmetic is pretraining's own (`components.train.pretrain.evaluate` over the rows of
`components.train.packing.val_rows`), so the base model's number here is the `val_bpb` its training run
logged when the windows are the same (same seq_len and at least as many tokens).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from components.tokenizer.bpe import eot_id
from components.train.packing import NotEnoughTokensError, TokenStream, val_rows
from components.train.pretrain import evaluate, token_byte_lengths
from components.train.trainer import Runtime


@dataclass
class BitsPerByte:
    bpb: float  # NLL of the text tokens in bits per UTF-8 byte
    loss: float  # mean NLL per predicted token in nats, end-of-text targets included (pretrain's val/loss)
    rows: int  # windows of seq_len + 1 tokens evaluated
    seq_len: int
    tokens: int  # tokens predicted: rows * seq_len

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def corpus_bits_per_byte(
    model: nn.Module,
    tok: Tokenizer,
    tokens_dir: str | Path,
    *,
    max_tokens: int,
    seq_len: int | None = None,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
) -> BitsPerByte:
    """Bits per byte of ``model`` on the first ``max_tokens`` tokens of the shards in ``tokens_dir``
    (a tokenize stage's ``val/``), read as consecutive windows of ``seq_len`` predicted tokens.

    ``seq_len`` defaults to the model's context length; it shrinks to fit a split shorter than one
    window. The shards must come from ``tok`` (same vocabulary size and end-of-text id), else the
    per-token NLLs mean nothing and a ValueError says so."""
    stream = TokenStream.from_dir(tokens_dir)
    if len(stream) < 2:
        raise NotEnoughTokensError(
            f"{tokens_dir} holds {len(stream)} tokens; bits per byte needs at least 2 (one to predict)"
        )
    if (stream.vocab_size, stream.eot_id) != (tok.get_vocab_size(), eot_id(tok)):
        raise ValueError(
            f"the tokens in {tokens_dir} (vocab_size {stream.vocab_size}, eot_id {stream.eot_id}) do not "
            f"come from the model's tokenizer (vocab_size {tok.get_vocab_size()}, eot_id {eot_id(tok)})"
        )
    context = model.config.context_length
    T = min(seq_len or context, context, len(stream) - 1)
    ids, weights = val_rows(stream, seq_len=T, n_rows=max(1, max_tokens // T))
    param = next(model.parameters())
    runtime = Runtime(rank=0, world_size=1, device=param.device, dtype=dtype)
    token_bytes = torch.tensor(token_byte_lengths(tok, model.config.vocab_size), device=param.device)
    loss, bpb = evaluate(model, ids, weights, token_bytes, runtime, batch_size)
    rows = int(weights.sum())
    return BitsPerByte(bpb=bpb, loss=loss, rows=rows, seq_len=T, tokens=rows * T)


__all__ = ["BitsPerByte", "corpus_bits_per_byte"]
