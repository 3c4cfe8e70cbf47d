"""Tokenization stage: document shards in, token shards out, split into train and val by document.

One Ray task per document shard (resumable: a finished shard leaves a marker and is not encoded again
after a crash). Each task encodes its documents with `encode_batch(append_eot=True)`, so every document
ends with `<|endoftext|>`, and streams them into

    tokens/train/part-XXXXX.bin    token shards (`components.io.token_shards`; XXXXX = the document
    tokens/val/part-XXXXX.bin      shard's index), uint16 ids when the vocabulary fits, else uint32
    tokens/tokens_meta.json        counts per split, dtype, vocab size, eot id, tokenizer digest, shard map

A split with no document in a shard writes no file for it. Which split a document goes to depends only on
its id (`split_position`), so the split is stable: adding, removing or editing other documents never
moves a document between train and val. Empty documents are skipped and counted.

Too little data is refused here, where the token count is first known: fewer than `min_train_tokens`
train tokens fails the stage with the count found and the count needed, instead of letting pretraining
start on a corpus that cannot fill a few batches.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import xxhash
from tokenizers import Tokenizer

from components.core.artifacts import Artifact, ArtifactStore, scratch_dir, stage_in
from components.core.config import ConfigError
from components.core.parallel import parallel_map, resumable
from components.core.stage import StageContext, stage
from components.io.documents import list_shards, per_second, ratio
from components.io.token_shards import ShardWriter, dtype_for_vocab
from components.tokenizer.bpe import encode_batch, eot_id, load_tokenizer
from components.tokenizer.tokenize_config import SPEC, TokenizeConfig

SPLITS = ("train", "val")
META_FILE = "tokens_meta.json"
TOKENIZER_FILE = "tokenizer.json"
_SPLIT_SALT = b"gptrecipe/split/"


class CorpusTooSmallError(ConfigError):
    """The corpus yields fewer train tokens than `tokenize.min_train_tokens` (a fixable input problem)."""


# --- the split ------------------------------------------------------------------------------------


def document_keys(columns: dict[str, list[Any]]) -> list[str]:
    """What identifies each document of a shard's columns: its `id`, else its `url`, else its text."""
    n = len(columns["text"])
    candidates = [columns.get(name) or [None] * n for name in ("id", "url", "text")]
    return [str(next((v for v in values if v), "")) for values in zip(*candidates, strict=True)]


def split_position(key: str) -> float:
    """A document's fixed place in [0, 1), from a hash of its key: it goes to val when the place is
    below `val_fraction`. Depends on nothing but the key, so no other document can move it."""
    return xxhash.xxh3_64_intdigest(_SPLIT_SALT + key.encode()) / 2.0**64


# --- one document shard -------------------------------------------------------------------------

_TOKENIZERS: dict[str, Tokenizer] = {}  # per worker process: shards of one run share the loaded tokenizer


def _tokenizer(store: ArtifactStore, uri: str, digest: str) -> Tokenizer:
    if digest not in _TOKENIZERS:
        with stage_in(store.join(uri, TOKENIZER_FILE)) as path:
            _TOKENIZERS[digest] = load_tokenizer(path)
    return _TOKENIZERS[digest]


def vocab_size_of(tok: Tokenizer) -> int:
    """Largest id + 1, special tokens included (what every id in a shard is below)."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


def _limit_encoder_threads(cpus: float) -> None:
    """In a Ray task, size the Rust encoder's thread pool to the CPUs the task reserved (Ray sets
    OMP_NUM_THREADS for this reason but knows nothing of rayon). Only effective before the process's
    first encode; a pool already started keeps its size."""
    try:
        import ray

        in_worker = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:
        in_worker = False
    if in_worker:
        os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, int(cpus))))


@contextmanager
def _shard_writer(store: ArtifactStore, uri: str, vocab_size: int, eot: int) -> Iterator[ShardWriter]:
    """A ShardWriter for `uri` (written in place on a local store, uploaded from a temp file otherwise);
    a shard that received no token is not created."""
    if store.is_local:
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        writer = ShardWriter(uri, vocab_size=vocab_size, eot_id=eot)
        with writer:
            yield writer
            if writer.n_tokens == 0:
                writer.abort()
        return
    with scratch_dir("gptrecipe-tokens-") as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        with ShardWriter(local, vocab_size=vocab_size, eot_id=eot) as writer:
            yield writer
            if writer.n_tokens == 0:
                writer.abort()
        if os.path.exists(local):
            store.upload(Path(local), uri)


def read_shard_texts(store: ArtifactStore, uri: str) -> tuple[list[str], list[str | None]]:
    """(document keys, texts) of one document shard, reading only the columns needed."""
    with store.open(uri) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if "text" not in names:
            raise ConfigError(f"document shard {uri} has no `text` column (columns: {', '.join(names)})")
        columns = pf.read(columns=["text"] + [c for c in ("id", "url") if c in names]).to_pydict()
    return document_keys(columns), columns["text"]


def tokenize_shard(
    task: tuple[int, str],
    *,
    store_root: str,
    docs_uri: str,
    tokenizer_uri: str,
    tokenizer_digest: str,
    out_uri: str,
    done_uri: str,
    val_fraction: float,
    batch_docs: int,
    cpus: float = 1.0,
) -> dict[str, Any]:
    """Ray task: one document shard -> `train/part-<index>.bin` and `val/part-<index>.bin`; resumable."""
    index, shard = task
    store = ArtifactStore(store_root)
    name = f"part-{index:05d}.bin"

    def compute() -> dict[str, Any]:
        _limit_encoder_threads(cpus)
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        tok = _tokenizer(store, tokenizer_uri, tokenizer_digest)
        vocab_size, eot = vocab_size_of(tok), eot_id(tok)
        dtype = dtype_for_vocab(vocab_size)
        keys, texts = read_shard_texts(store, store.join(docs_uri, shard))
        counts = {f"{s}_{what}": 0 for s in SPLITS for what in ("docs", "tokens", "bytes")}
        empty = 0
        with (
            _shard_writer(store, store.join(out_uri, "train", name), vocab_size, eot) as train,
            _shard_writer(store, store.join(out_uri, "val", name), vocab_size, eot) as val,
        ):
            writers = {"train": train, "val": val}
            for start in range(0, len(texts), batch_docs):
                docs, splits = [], []
                stop = start + batch_docs
                for key, text in zip(keys[start:stop], texts[start:stop], strict=True):
                    if not text:
                        empty += 1
                        continue
                    docs.append(text)
                    splits.append("val" if split_position(key) < val_fraction else "train")
                ids = encode_batch(tok, docs, append_eot=True)  # one call: the Rust side parallelises it
                for split, writer in writers.items():
                    rows = [i for i, s in enumerate(splits) if s == split]
                    if not rows:
                        continue
                    n = sum(len(ids[i]) for i in rows)
                    # One array per batch: per-document writes would cost more than the encode itself.
                    flat = itertools.chain.from_iterable(ids[i] for i in rows)
                    writer.write(np.fromiter(flat, dtype, count=n))
                    counts[f"{split}_docs"] += len(rows)
                    counts[f"{split}_tokens"] += n
                    counts[f"{split}_bytes"] += sum(len(docs[i].encode()) for i in rows)
        return {
            "index": index,
            "source": shard,
            "name": name,
            **counts,
            "empty_docs": empty,
            "cpu_seconds": time.process_time() - cpu_started,
            "seconds": time.perf_counter() - wall_started,
        }

    return resumable(store, store.join(done_uri, f"{name}.json"), compute)


# --- the stage -----------------------------------------------------------------------------------


def check_enough_tokens(config: TokenizeConfig, totals: dict[str, int], docs_uri: str, shards: int) -> None:
    found, needed = totals["train_tokens"], config.min_train_tokens
    if found >= needed:
        return
    raise CorpusTooSmallError(
        f"tokenize: the corpus has {found:,} train tokens ({totals['train_docs']:,} train documents, "
        f"{totals['val_docs']:,} val, {totals['empty_docs']:,} empty, in {shards} shard(s) of {docs_uri}); "
        f"pretraining needs at least {needed:,} (tokenize.min_train_tokens, a few batches of "
        "batch_size x context_length) -- add data, or lower tokenize.min_train_tokens together with the "
        "pretraining batch"
    )


@stage(SPEC)
def tokenize(ctx: StageContext, config: TokenizeConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Encode document shards into uint16/uint32 token shards, split into train/val by document."""
    docs, tokenizer = inputs["documents"], inputs["tokenizer"]
    shards = list_shards(ctx.store, docs.uri)
    tok = _tokenizer(ctx.store, tokenizer.uri, tokenizer.digest)  # fail early on a bad tokenizer
    vocab_size, eot = vocab_size_of(tok), eot_id(tok)
    out_uri = ctx.output_uri("tokens")
    for split in SPLITS:
        ctx.store.makedirs(ctx.store.join(out_uri, split))
    work = functools.partial(
        tokenize_shard,
        store_root=ctx.store.root,
        docs_uri=docs.uri,
        tokenizer_uri=tokenizer.uri,
        tokenizer_digest=tokenizer.digest,
        out_uri=out_uri,
        done_uri=ctx.scratch_uri("done"),
        val_fraction=config.val_fraction,
        batch_docs=config.batch_docs,
        cpus=config.cpus_per_shard,
    )
    results = parallel_map(
        work, list(enumerate(shards)), cpus=config.cpus_per_shard, progress=ctx.progress, desc="shards"
    )
    keys = [f"{s}_{what}" for s in SPLITS for what in ("docs", "tokens", "bytes")] + ["empty_docs"]
    totals = {k: sum(r[k] for r in results) for k in keys}
    check_enough_tokens(config, totals, docs.uri, len(shards))
    if config.val_fraction > 0 and totals["val_tokens"] == 0:
        ctx.log.warning(
            "tokenize: the val split is empty (%d documents); val loss cannot be measured",
            totals["train_docs"],
        )

    tokens = totals["train_tokens"] + totals["val_tokens"]
    cpu_seconds = sum(r["cpu_seconds"] for r in results)
    rate = per_second(tokens, cpu_seconds)  # None (not reported) without a token or a measured second
    dtype = dtype_for_vocab(vocab_size)
    meta = {
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "eot_id": eot,
        "tokenizer_digest": tokenizer.digest,
        "val_fraction": config.val_fraction,
        "splits": {
            split: {
                "tokens": totals[f"{split}_tokens"],
                "documents": totals[f"{split}_docs"],
                "bytes": totals[f"{split}_bytes"],
                "shards": [f"{split}/{r['name']}" for r in results if r[f"{split}_tokens"]],
            }
            for split in SPLITS
        },
        "empty_docs": totals["empty_docs"],
        "sources": {r["name"]: r["source"] for r in results},
    }
    ctx.store.write_json(ctx.store.join(out_uri, META_FILE), meta)
    ctx.tracker.log_dict(meta, META_FILE)
    ctx.log_metrics(
        {
            "train_docs": totals["train_docs"],
            "val_docs": totals["val_docs"],
            "empty_docs": totals["empty_docs"],
            "shards": len(shards),
            "bytes_per_token": ratio(totals["train_bytes"] + totals["val_bytes"], tokens),
            "encode_cpu_seconds": cpu_seconds,
        }
    )
    ctx.report(
        train_tokens=totals["train_tokens"],
        val_tokens=totals["val_tokens"],
        documents=totals["train_docs"] + totals["val_docs"],
        tokens_per_s_per_cpu=None if rate is None else round(rate),
    )
    return {
        "tokens": ctx.artifact(
            "tokens",
            kind="tokens",
            dtype=dtype.name,
            vocab_size=vocab_size,
            eot_id=eot,
            train_tokens=totals["train_tokens"],
            val_tokens=totals["val_tokens"],
        )
    }
