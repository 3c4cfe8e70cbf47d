"""Phase 4 of the `dedup` stage: the true Jaccard of each fuzzy candidate pair (see `dedup.py`), and the
small file helpers every phase uses to hand arrays and columns to the next."""

from __future__ import annotations

import functools
import io
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.core.artifacts import ArtifactStore
from components.core.parallel import parallel_map, resumable
from components.core.stage import StageContext
from components.data.minhash import jaccard, shingle_hashes


def save_array(store: ArtifactStore, uri: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    store.write_bytes(uri, buf.getvalue())


def load_array(store: ArtifactStore, uri: str) -> np.ndarray:
    with store.open(uri) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def read_columns(store: ArtifactStore, uri: str, columns: list[str] | None = None) -> pa.Table:
    with store.open(uri) as f:
        return pq.read_table(f, columns=columns)


def shard_index(starts: np.ndarray | list[int], docs: Any) -> Any:
    """The shard holding each global document index, given each shard's first index (`starts`, sorted).
    An empty shard shares its start with the next one; the last shard with start <= doc holds it."""
    return np.searchsorted(starts, docs, side="right") - 1


# --- verification with the true Jaccard, per shard -------------------------------------------------


def shingle_shard(
    task: tuple[str, list[int]], *, store_root: str, in_uri: str, out_uri: str, ngram: int
) -> dict:
    """Ray task: the shingle hashes of some rows of one shard (those in unresolved fuzzy pairs)."""
    shard, rows = task
    store = ArtifactStore(store_root)

    def compute() -> dict:
        texts = read_columns(store, store.join(in_uri, shard), ["text"]).column("text").take(rows)
        hashes = [shingle_hashes(t, ngram) for t in texts.to_pylist()]
        table = pa.table(
            {"row": pa.array(rows, pa.int64()), "shingles": pa.array(hashes, pa.list_(pa.uint64()))}
        )
        with store.atomic_write(store.join(out_uri, shard)) as f:
            pq.write_table(table, f, compression="none")
        return {"rows": len(rows)}

    return resumable(store, store.join(out_uri, shard + ".json"), compute)


def verify_task(
    task: tuple[int, np.ndarray],
    *,
    store_root: str,
    shingles_uri: str,
    out_uri: str,
    shards: list[tuple[str, int]],
) -> dict:
    """Ray task: the true Jaccard of the pairs whose second (later) document lies in shard `task[0]`.

    Grouped by the later document because pairs are stars from each bucket's earliest document: a hub
    in the first shard can pair with copies all over the crawl, so a group by the first document grew
    with the crawl. A document is the later one of at most one pair per band (its bucket's hub), so
    a task holds at most (bands + 1) x the shard's rows shingle sets, whatever the crawl's size."""
    later, edges = task
    store = ArtifactStore(store_root)
    offsets = np.array([offset for _, offset in shards], dtype=np.int64)
    name = shards[later][0]

    def compute() -> dict:
        started = time.process_time()
        sets: dict[int, np.ndarray] = {}
        needed = np.unique(edges.ravel())
        for s in np.unique(shard_index(offsets, needed)).tolist():
            shard, offset = shards[s]
            table = read_columns(store, store.join(shingles_uri, shard))
            # Only this task's documents: a hub's shard table holds every candidate of that shard.
            table = table.filter(pa.array(np.isin(table.column("row").to_numpy() + offset, needed)))
            for row, hashes in zip(table.column("row").to_pylist(), table.column("shingles"), strict=True):
                sets[offset + row] = hashes.values.to_numpy()
        similarity = np.array([jaccard(sets[a], sets[b]) for a, b in edges.tolist()], dtype=np.float32)
        save_array(store, store.join(out_uri, name + ".npy"), similarity)
        return {"pairs": len(edges), "seconds": time.process_time() - started}

    result = resumable(store, store.join(out_uri, name + ".json"), compute)
    return {**result, "file": store.join(out_uri, name + ".npy")}


def verify_pairs(
    ctx: StageContext,
    edges: np.ndarray,
    in_uri: str,
    shards: list[tuple[str, int]],
    ngram: int,
) -> tuple[np.ndarray, float]:
    """The true Jaccard of each candidate pair (same order as `edges`) and the CPU seconds it took."""
    if not len(edges):
        return np.empty(0, dtype=np.float32), 0.0
    offsets = np.array([offset for _, offset in shards], dtype=np.int64)
    docs = np.unique(edges.ravel())
    shard_of = shard_index(offsets, docs)
    tasks = [
        (shards[s][0], (docs[shard_of == s] - offsets[s]).tolist()) for s in np.unique(shard_of).tolist()
    ]
    common = dict(store_root=ctx.store.root)
    shingles_uri = ctx.scratch_uri("shingles")
    parallel_map(
        functools.partial(shingle_shard, in_uri=in_uri, out_uri=shingles_uri, ngram=ngram, **common),
        tasks,
        progress=ctx.progress,
        desc="shingles for verification",
    )
    later_shard = shard_index(offsets, edges[:, 1])
    groups = [(s, edges[later_shard == s]) for s in np.unique(later_shard).tolist()]
    results = parallel_map(
        functools.partial(
            verify_task, shingles_uri=shingles_uri, out_uri=ctx.scratch_uri("verify"), shards=shards, **common
        ),
        groups,
        progress=ctx.progress,
        desc="verify pairs",
    )
    similarity = np.empty(len(edges), dtype=np.float32)
    for (s, _), result in zip(groups, results, strict=True):
        similarity[later_shard == s] = load_array(ctx.store, result["file"])
    return similarity, sum(r["seconds"] for r in results)
