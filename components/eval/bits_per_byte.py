"""Bits per byte of a model on held-out corpus text: the language-modelling number that compares across
models and tokenizers.

    bits per byte = total NLL in nats / (ln 2 * UTF-8 bytes of the text)

The end-of-text tokens that separate documents are not text: they count neither in the NLL nor in the
bytes (a model is not judged on guessing where the next document starts). Per-token loss depends on how
much text one token holds; per byte it does not, so a model with a 4k vocabulary and one with a 50k
vocabulary compare, and so do a base model and its fine-tuned descendants, whose drift on web text is
the "alignment tax".

Pretraining's validation runs the same arithmetic (`loss_and_bits_per_byte`, summed over its
workers, over the rows of `components.io.token_stream.val_rows`), so the base model's number here is
the `val_bpb` its training run logged when the windows are the same (same seq_len and at least as many
tokens).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from components.io.token_stream import NotEnoughTokensError, TokenStream, val_rows
from components.model.gpt import evaluating
from components.tokenizer.bpe import BYTE_SYMBOLS, decode, eot_id


@dataclass
class BitsPerByte:
    bpb: float  # NLL of the text tokens in bits per UTF-8 byte
    loss: float  # mean NLL per predicted token in nats, end-of-text targets included (pretrain's val/loss)
    rows: int  # windows of seq_len + 1 tokens evaluated
    seq_len: int
    tokens: int  # tokens predicted: rows * seq_len

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def token_byte_lengths(tok: Tokenizer, size: int) -> list[int]:
    """How many UTF-8 bytes each of `size` ids stands for: the length of its byte-level BPE string (one
    symbol per byte), 0 for special tokens and ids beyond the tokenizer (padding rows)."""
    byte_of = {symbol: b for b, symbol in enumerate(BYTE_SYMBOLS)}
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    out = []
    for i in range(size):
        piece = tok.id_to_token(i)
        if piece is None or i in special:
            out.append(0)
        elif all(ch in byte_of for ch in piece):
            out.append(len(piece))
        else:  # not a byte-level token; count what it decodes to
            out.append(len(decode(tok, [i]).encode("utf-8")))
    return out


def loss_and_bits_per_byte(
    model: nn.Module,
    ids: Tensor,
    weights: Tensor,
    token_bytes: Tensor,
    batch_size: int,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float | None]:
    """Loss (mean NLL per token, nats) and bits per byte of `model` on the rows `ids` (weighted by
    `weights`), on the device of `token_bytes` (UTF-8 bytes per id, `token_byte_lengths`).

    Bits per byte = NLL (nats) of the text tokens / (ln 2 * their UTF-8 bytes): independent of the
    tokenizer, so models with different vocabularies compare. End-of-text targets are not text: they
    count in the loss but neither in the NLL nor in the bytes of bits per byte (as nanochat does).
    `reduce` sums the four totals over workers (pretraining passes its all-reduce); None: one process."""
    with evaluating(model):
        sums = torch.zeros(4, dtype=torch.float64, device=token_bytes.device)  # nll, tokens, text nll, bytes
        for lo in range(0, len(ids), batch_size):
            batch = ids[lo : lo + batch_size].to(token_bytes.device)
            w = weights[lo : lo + batch_size].to(token_bytes.device)[:, None]
            x, y = batch[:, :-1], batch[:, 1:]
            with autocast():
                logits, _ = model(x)
            nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(y)
            nbytes = token_bytes[y]
            sums += torch.stack(
                [
                    (nll * w).sum(),
                    (w * torch.ones_like(nll)).sum(),
                    (nll * w * (nbytes > 0)).sum(),
                    (nbytes * w).sum(),
                ]
            ).double()
        sums = reduce(sums) if reduce else sums
    nll, tokens, text_nll, nbytes = sums.tolist()
    # Rows without a text byte (only end-of-text targets) have no bits per byte: None, not a number.
    return nll / tokens, text_nll / (math.log(2) * nbytes) if nbytes else None


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
    token_bytes = torch.tensor(token_byte_lengths(tok, model.config.vocab_size), device=param.device)
    autocast = (
        contextlib.nullcontext
        if dtype == torch.float32
        else partial(torch.autocast, param.device.type, dtype)
    )
    loss, bpb = loss_and_bits_per_byte(model, ids, weights, token_bytes, batch_size, autocast=autocast)
    rows = int(weights.sum())
    return BitsPerByte(bpb=bpb, loss=loss, rows=rows, seq_len=T, tokens=rows * T)


__all__ = ["BitsPerByte", "corpus_bits_per_byte", "loss_and_bits_per_byte", "token_byte_lengths"]
