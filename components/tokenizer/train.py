"""Tokenizer training stage: the curated corpus in, `tokenizer.json` out.

Trains the byte-level BPE of `components.tokenizer.bpe` on a deterministic sample of the `documents`
input, or -- with `tokenizer_path` -- copies and validates a given tokenizer instead. Either way it measures
bytes/token on held-out documents and writes

    tokenizer/tokenizer.json         the HuggingFace tokenizer (what transformers and vLLM load)
    tokenizer/tokenizer_meta.json    vocab size, special ids, token dtype, bytes/token, what it was trained on

**Sample.** Held-out documents are chosen by a hash of the document id (`split_position`, the same rule
the `tokenize` stage uses for its val split), so with `heldout_fraction >= tokenize.val_fraction` no
validation document is ever seen by the tokenizer. From the rest, every `stride`-th document is taken,
with `stride` set so that `max_train_docs` / `max_train_chars` are spread over the whole corpus rather than
filled from its first shards; the caps are also enforced exactly.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from components.core.artifacts import Artifact, ArtifactStore, scratch_dir
from components.core.config import ConfigError
from components.core.stage import StageContext, stage
from components.io.documents import list_shards, ratio
from components.io.token_shards import dtype_for_vocab
from components.tokenizer import bpe
from components.tokenizer.bpe import (
    BYTE_SYMBOLS,
    TokenizerError,
    bytes_per_token,
    decode,
    encode_batch,
    eot_id,
    load_tokenizer,
    special_token_ids,
)
from components.tokenizer.tokenize import read_shard_texts, split_position, vocab_size_of
from components.tokenizer.train_config import SPEC, TrainTokenizerConfig

TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer_meta.json"

# Shown split into tokens in the MLflow artifact `samples/tokenization.txt`: prose, numbers, other
# scripts, code, emoji and a literal special token (which must come out as plain bytes).
SAMPLE_SENTENCES = (
    "The capital of the country is a small city on the river, founded in the 12th century.",
    "In 2024 the population was 350,000; 3.14 + 2 = 5.14.",
    "Die Straße führt über die Brücke zum Museum. ¿Dónde está la biblioteca?",
    "Ελληνικά, русский, 日本語のテキスト, and an emoji 👍🏽.",
    "def main():\n    return {'ok': True}  # code\n",
    "A page that contains <|endoftext|> as text stays one document.",
)
FALLBACK_CHARS = 1_000_000  # training text kept to measure bytes/token when nothing was held out


# --- the corpus sample ---------------------------------------------------------------------------


@dataclass
class CorpusSample:
    """What `iter_training_texts` saw; filled in while training consumes the iterator."""

    documents: int = 0  # rows in the corpus
    stride: int = 1
    sampled: int = 0  # documents at sampled positions ...
    empty: int = 0  # ... of which had no text
    train_docs: int = 0
    train_chars: int = 0
    heldout: list[str] = field(default_factory=list)
    heldout_chars: int = 0
    # The first training texts: bytes/token is measured on them when the corpus is too small to hold out.
    fallback: list[str] = field(default_factory=list)
    fallback_chars: int = 0

    @property
    def measured(self) -> list[str]:
        return self.heldout or self.fallback


def _rows(store: ArtifactStore, uri: str) -> int:
    with store.open(uri) as f:
        return pq.ParquetFile(f).metadata.num_rows


def choose_stride(config: TrainTokenizerConfig, n_docs: int, mean_chars: float) -> int:
    """Take every stride-th document so the sample fits the caps, spread evenly over the corpus."""
    stride = 1
    if config.max_train_docs:
        stride = max(stride, math.ceil(n_docs / config.max_train_docs))
    if config.max_train_chars and mean_chars > 0:
        stride = max(stride, math.ceil(n_docs * mean_chars / config.max_train_chars))
    return stride


def iter_training_texts(
    store: ArtifactStore, uri: str, config: TrainTokenizerConfig, sample: CorpusSample
) -> Iterator[str]:
    """Yield the training texts, and collect the held-out ones into `sample` on the way."""
    shards = [store.join(uri, name) for name in list_shards(store, uri)]
    rows = [_rows(store, s) for s in shards]  # from the Parquet footers, no text read
    sample.documents = sum(rows)
    # The first shard's mean document length estimates the corpus's, without reading it all twice.
    first = [t for t in read_shard_texts(store, shards[0])[1] if t] if shards else []
    mean_chars = sum(map(len, first)) / len(first) if first else 0.0
    stride = sample.stride = choose_stride(config, sample.documents, mean_chars)

    def full() -> bool:
        return bool(
            (config.max_train_docs and sample.train_docs >= config.max_train_docs)
            or (config.max_train_chars and sample.train_chars >= config.max_train_chars)
        )

    start = 0  # global index of the shard's first document
    for shard, n in zip(shards, rows, strict=True):
        offset, start = -start % stride, start + n  # the shard's first sampled row
        if offset >= n:
            continue  # a sparse sample of a large corpus skips whole shards unread
        if full() and sample.heldout_chars >= config.max_heldout_chars:
            break
        keys, texts = read_shard_texts(store, shard)
        for key, text in zip(keys[offset::stride], texts[offset::stride], strict=True):
            sample.sampled += 1
            if not text:
                sample.empty += 1
                continue
            if split_position(key) < config.heldout_fraction:
                if sample.heldout_chars < config.max_heldout_chars:
                    sample.heldout.append(text)
                    sample.heldout_chars += len(text)
                continue
            if full():
                continue
            sample.train_docs += 1
            sample.train_chars += len(text)
            if sample.fallback_chars < FALLBACK_CHARS:
                sample.fallback.append(text)
                sample.fallback_chars += len(text)
            yield text


# --- a given tokenizer ---------------------------------------------------------------------------


def load_given_tokenizer(path: str) -> Tokenizer:
    """Load `tokenizer_path` (a local path or any fsspec URL), as a config error when it cannot be used."""
    try:
        if "://" in path and not path.startswith("file://"):
            with fsspec.open(path, "rb") as f, scratch_dir() as tmp:
                local = os.path.join(tmp, TOKENIZER_FILE)
                with open(local, "wb") as out:
                    out.write(f.read())
                return load_tokenizer(local)
        return load_tokenizer(path.removeprefix("file://"))
    except (OSError, TokenizerError) as e:
        raise ConfigError(f"train_tokenizer.tokenizer_path: {e}") from None


def check_lossless(tok: Tokenizer, texts: list[str], where: str) -> None:
    """Every text must decode back to itself: the token shards and the model's outputs rely on it."""
    for text in texts:
        back = decode(tok, encode_batch(tok, [text], append_eot=False)[0])
        if back != text:
            raise ConfigError(
                f"{where} does not round-trip text losslessly ({text[:60]!r} came back as {back[:60]!r}); "
                "gptrecipe needs a byte-level tokenizer without normalizer or unknown token"
            )


# --- reporting -----------------------------------------------------------------------------------

_BYTE_OF = {s: b for b, s in enumerate(BYTE_SYMBOLS)}


def token_bytes(tok: Tokenizer, token_id: int) -> bytes:
    """The UTF-8 bytes a token stands for (a single token may hold part of a character)."""
    piece = tok.id_to_token(token_id) or ""
    if token_id in special_token_ids(tok).values() or not all(c in _BYTE_OF for c in piece):
        return piece.encode()
    return bytes(_BYTE_OF[c] for c in piece)


def show_tokens(tok: Tokenizer, text: str) -> str:
    """How `text` splits: tokens between '│', spaces as '·', partial characters as hex bytes."""
    ids = encode_batch(tok, [text], append_eot=False)[0]
    pieces = []
    for i in ids:
        raw = token_bytes(tok, i)
        try:
            pieces.append(raw.decode("utf-8").replace(" ", "·").replace("\n", "\\n"))
        except UnicodeDecodeError:
            pieces.append("<" + " ".join(f"{b:02X}" for b in raw) + ">")
    bpt = ratio(len(text.encode()), len(ids))
    return (
        f"{text!r}\n  {len(ids)} tokens, {'n/a' if bpt is None else f'{bpt:.2f}'} bytes/token\n"
        f"  │{'│'.join(pieces)}│\n  ids: {ids}\n"
    )


# --- the stage -----------------------------------------------------------------------------------


@stage(SPEC)
def train_tokenizer(
    ctx: StageContext, config: TrainTokenizerConfig, inputs: dict[str, Artifact]
) -> dict[str, Artifact]:
    """Train the byte-level BPE tokenizer on the corpus (or validate a given one); bytes/token held out."""
    docs_uri = inputs["documents"].uri
    sample = CorpusSample()
    texts = iter_training_texts(ctx.store, docs_uri, config, sample)
    meta: dict[str, Any] = {}
    started = time.perf_counter()
    if config.tokenizer_path:
        tok = load_given_tokenizer(config.tokenizer_path)
        for _ in texts:  # only the held-out texts are needed, for bytes/token
            pass
        check_lossless(tok, [*SAMPLE_SENTENCES, *sample.measured[:100]], config.tokenizer_path)
        meta["source"] = config.tokenizer_path
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            tok = bpe.train_tokenizer(texts, config.tokenizer_config())
        if sample.train_docs == 0:
            raise ConfigError(
                f"train_tokenizer: the corpus {docs_uri} has no text to train on ({sample.documents} "
                f"documents, {sample.empty} of the {sample.sampled} sampled empty, {len(sample.heldout)} "
                "held out); check the curation funnel, or set train_tokenizer.tokenizer_path to use an "
                "existing tokenizer"
            )
        for w in caught:  # a corpus too small for vocab_size: the vocabulary came out smaller
            ctx.log.warning("%s", w.message)
        meta["source"] = "trained"
        meta["warnings"] = [str(w.message) for w in caught]
        meta["merges_learned"] = len(tok.get_vocab(with_added_tokens=False)) - 256
        meta["config"] = config.tokenizer_config().model_dump(mode="json", exclude={"tokenizer_path"})
    seconds = time.perf_counter() - started

    vocab_size = vocab_size_of(tok)
    bpt = None
    if sample.measured:
        bpt = bytes_per_token(tok, sample.measured)
    else:
        ctx.log.warning("train_tokenizer: the corpus has no non-empty document; bytes/token not measured")
    if not sample.heldout and sample.fallback:
        ctx.log.warning(
            "train_tokenizer: no document was held out (corpus too small for heldout_fraction=%s); "
            "bytes/token is measured on training text and is optimistic",
            config.heldout_fraction,
        )
    meta |= {
        "vocab_size": vocab_size,
        "eot_id": eot_id(tok),
        "special_tokens": special_token_ids(tok),
        "token_dtype": dtype_for_vocab(vocab_size).name,
        "bytes_per_token": bpt,
        "bytes_per_token_on": "heldout" if sample.heldout else ("train" if sample.fallback else None),
        "heldout_docs": len(sample.heldout),
        "heldout_bytes": sum(len(t.encode()) for t in sample.heldout),
        "corpus_docs": sample.documents,
        "sampled_docs": sample.sampled,
        "empty_docs": sample.empty,
        "stride": sample.stride,
        "train_docs": sample.train_docs if not config.tokenizer_path else 0,
        "train_chars": sample.train_chars if not config.tokenizer_path else 0,
        "seconds": round(seconds, 3),
    }

    out = ctx.output_uri("tokenizer")
    tok_json = tok.to_str(pretty=True)
    ctx.store.write_bytes(ctx.store.join(out, TOKENIZER_FILE), tok_json.encode())
    ctx.store.write_json(ctx.store.join(out, META_FILE), meta)

    ctx.tracker.log_text(tok_json, f"tokenizer/{TOKENIZER_FILE}")
    ctx.tracker.log_dict(meta, f"tokenizer/{META_FILE}")
    shown = "".join(show_tokens(tok, s) + "\n" for s in SAMPLE_SENTENCES)
    ctx.tracker.log_text(shown, "samples/tokenization.txt")
    ctx.log_metrics(
        {
            "train_docs": meta["train_docs"],
            "train_chars": meta["train_chars"],
            "heldout_docs": meta["heldout_docs"],
            "empty_docs": sample.empty,
            "train_seconds": seconds,
        }
    )
    ctx.report(vocab_size=vocab_size, bytes_per_token=bpt)
    return {
        "tokenizer": ctx.artifact(
            "tokenizer",
            kind="tokenizer",
            vocab_size=vocab_size,
            eot_id=meta["eot_id"],
            token_dtype=meta["token_dtype"],
            bytes_per_token=bpt,
            source=meta["source"],
        )
    }
