"""The `dedup` stage: exact and fuzzy (MinHash-LSH) deduplication, one kept document per cluster.

Two documents are duplicates when their normalised texts are equal (exact: a 128-bit hash of the text
after `minhash.normalize_text` -- lower-case, punctuation and symbols to spaces, whitespace collapsed)
or when they share a MinHash-LSH band (fuzzy: word 5-gram shingles, 14 bands x 8 rows = 112 64-bit
hashes by default, FineWeb's setting; a pair of Jaccard J is a candidate with probability
1 - (1 - J^8)^14: 0.9996 at J = 0.9, 0.92 at 0.8, 0.56 at 0.7, 0.21 at 0.6, 0.05 at 0.5, 0.003 at
0.35; the threshold (1/14)^(1/8) is 0.72).
Fuzzy candidates are then checked against their true shingle Jaccard (`minhash.verify_threshold`,
0.6 by default; see that field for why). Duplicate pairs join clusters by union-find; each cluster
keeps its **earliest** document -- the smallest (shard, row) in input order, shards sorted by name --
and drops the rest to `dropped/dedup.exact/` (same normalised text as the kept one) or
`dropped/dedup.near/`, each with `duplicate_of` (the kept document's id) and `drop_reason`. Kept
documents get `dup_cluster_size` (1 for a unique document).

How it runs, in five phases, each resumable (a killed stage redoes only unfinished pieces):

1. signatures -- one Ray task per input shard: normalised-text hash, MinHash signature and its band
   keys per document, written to `_work/signatures/<shard>` (Parquet: `exact_hi`, `exact_lo`,
   `band_00`..`band_NN`, `fuzzy`; row i is the shard's document i).
2. buckets -- one Ray task per band (and one for the exact hash), times `key_partitions`: reads that
   band's column from every signature file, sorts by key and emits candidate pairs from buckets with
   more than one document (a star from the bucket's earliest document). No process ever holds every
   signature, only one band (or a key range of one band).
3. clusters -- the stage (driver) merges the pairs: exact ones first, then fuzzy ones, by union-find
   over the documents that have any candidate at all.
4. verify (when `verify_threshold` is set; in `dedup_verify.py`) -- one task per shard reads the text of
   that shard's documents that are in an unresolved fuzzy pair and writes their shingle hashes; one task
   per shard then computes the true Jaccard of the pairs whose later document is in it.
5. write -- one Ray task per shard writes its kept and dropped documents.

Memory as the corpus grows (N documents, b bands, D documents with a duplicate candidate):

- signature files: N x (b + 2) x 8 bytes on disk (129 bytes per document with 14 bands, a flag
  included) -- the texts are never copied;
- one bucket task: about N x 16 bytes (a key and a document index per document) plus its sort's
  temporaries, about N x 48 bytes at peak; `key_partitions = P` divides both by P (each task keeps
  one key range), at the cost of reading the band column P times;
- the driver: O(D) <= O(N) -- the candidate pairs (about one per duplicate document: stars, not
  cliques), union-find (two ints per document) over only the D documents that have a candidate, the
  kept/dropped decisions and the kept documents' ids; never texts or signatures, and N-sized state
  only when ground-truth labels are scored (the entering urls);
- verification: per task, the shingle hashes of one shard's candidates and of their hubs: at most
  (b + 1) x the shard's rows, whatever N (a group by the hub's shard grew with the crawl: a hub in the
  first shard pairs with its copies everywhere).
"""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.parallel import parallel_map, resumable
from components.core.stage import StageContext, stage
from components.data.dedup_config import SPEC, DedupConfig, MinHashConfig
from components.data.dedup_verify import load_array, read_columns, save_array, shard_index, verify_pairs
from components.data.documents import FilterStats, documents_artifacts, load_labels
from components.data.minhash import (
    MinHasher,
    UnionFind,
    bucket_edges,
    candidate_probability,
    exact_hash,
    lsh_threshold,
    normalize_text,
)
from components.data.pii import log_dropped_samples
from components.io.documents import iter_documents, list_shards, per_second, ratio

EXACT, NEAR = "dedup.exact", "dedup.near"
EXACT_KEY = "exact"


# --- small helpers ------------------------------------------------------------------------------


def _band(i: int) -> str:
    return f"band_{i:02d}"


def _u64(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy().astype(np.uint64, copy=False)


# --- phase 1: signatures, one task per shard -------------------------------------------------------


def compute_signatures(texts: list[str | None], config: MinHashConfig) -> pa.Table:
    """The signature table of one shard: the exact hash, the band keys and whether the document has
    any word (documents without one take part in exact dedup only)."""
    hasher = MinHasher(config.ngram, config.bands, config.rows, config.seed)
    n = len(texts)
    exact = np.zeros((n, 2), dtype=np.uint64)
    bands = np.zeros((n, config.bands), dtype=np.uint64)
    fuzzy = np.zeros(n, dtype=bool)
    for i, text in enumerate(texts):
        normalized = normalize_text(text)
        exact[i] = exact_hash(normalized)
        if config.enabled:
            m = hasher.minhash(normalized.encode().split())
            if m is not None:
                bands[i] = hasher.band_keys(m.hashvalues)
                fuzzy[i] = True
    columns: dict[str, Any] = {"exact_hi": exact[:, 0], "exact_lo": exact[:, 1], "fuzzy": fuzzy}
    if config.enabled:
        columns |= {_band(b): bands[:, b] for b in range(config.bands)}
    return pa.table(columns)


def signature_shard(shard: str, *, store_root: str, in_uri: str, sig_uri: str, config: MinHashConfig) -> dict:
    """Ray task: the signature file of one shard; resumable (a finished shard leaves a marker)."""
    store = ArtifactStore(store_root)

    def compute() -> dict:
        started = time.process_time()
        table = read_columns(store, store.join(in_uri, shard), ["text"])
        texts = table.column("text").to_pylist()
        signatures = compute_signatures(texts, config)
        with store.atomic_write(store.join(sig_uri, shard)) as f:
            pq.write_table(signatures, f, compression="none")  # hashes do not compress
        return {
            "rows": len(texts),
            "chars": sum(len(t) for t in texts if t),
            "fuzzy": int(signatures.column("fuzzy").to_numpy().sum()),
            "seconds": time.process_time() - started,
        }

    return resumable(store, store.join(sig_uri, shard + ".json"), compute)


# --- phase 2: buckets, one task per band (and key range) --------------------------------------------


def bucket_task(
    task: tuple[str, int],
    *,
    store_root: str,
    sig_uri: str,
    shards: list[tuple[str, int]],
    partitions: int,
    edges_uri: str,
) -> dict:
    """Ray task: candidate pairs from one band's buckets (or the exact hash's), over every signature
    file; only keys with `key % partitions == part` when the band is split. Resumable."""
    key, part = task
    store = ArtifactStore(store_root)
    name = f"{key}-{part:03d}"

    def compute() -> dict:
        started = time.process_time()
        columns = ["exact_hi", "exact_lo"] if key == EXACT_KEY else [key, "fuzzy"]
        index_parts, key_parts = [], []
        for shard, offset in shards:
            table = read_columns(store, store.join(sig_uri, shard), columns)
            if key == EXACT_KEY:
                keys = np.stack([_u64(table, "exact_hi"), _u64(table, "exact_lo")])
                mask = np.ones(table.num_rows, dtype=bool)
            else:
                keys = _u64(table, key)[None, :]
                mask = table.column("fuzzy").to_numpy(zero_copy_only=False)
            if partitions > 1:
                mask &= keys[-1] % np.uint64(partitions) == np.uint64(part)
            rows = np.flatnonzero(mask)
            index_parts.append(rows.astype(np.int64) + offset)
            key_parts.append(keys[:, rows])
        index = np.concatenate(index_parts) if index_parts else np.empty(0, dtype=np.int64)
        keys = np.concatenate(key_parts, axis=1) if key_parts else np.empty((1, 0), dtype=np.uint64)
        edges = bucket_edges(index, *keys)
        save_array(store, store.join(edges_uri, name + ".npy"), edges)
        return {"edges": len(edges), "seconds": time.process_time() - started}

    result = resumable(store, store.join(edges_uri, name + ".json"), compute)
    return {**result, "key": key, "file": store.join(edges_uri, name + ".npy")}


# --- phase 3: clusters ----------------------------------------------------------------------------


@dataclass
class Clusters:
    """Union-find over the documents that have a candidate pair, by global index (input order)."""

    nodes: np.ndarray  # sorted global indices of every document in some pair
    uf: UnionFind = field(init=False)

    def __post_init__(self) -> None:
        self.uf = UnionFind(len(self.nodes))

    def local(self, docs: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.nodes, docs)

    def join(self, edges: np.ndarray) -> int:
        merged = 0
        for a, b in self.local(edges).tolist():
            merged += self.uf.union(a, b)
        return merged

    def unresolved(self, edges: np.ndarray) -> np.ndarray:
        """The pairs whose documents are not in one cluster yet."""
        find = self.uf.find
        keep = [find(a) != find(b) for a, b in self.local(edges).tolist()]
        return edges[np.array(keep, dtype=bool)] if len(edges) else edges

    def decisions(self) -> tuple[dict[int, int], dict[int, int]]:
        """(keeper of every document that had a candidate pair, size of each keeper's cluster). The
        keeper is the cluster's smallest global index: nodes are sorted, so the first one seen. A
        document whose every pair failed verification is its own keeper, in a cluster of one."""
        keeper_of_root: dict[int, int] = {}
        size: Counter = Counter()
        keeper: dict[int, int] = {}
        for i, doc in enumerate(self.nodes.tolist()):
            root = self.uf.find(i)
            keeper[doc] = keeper_of_root.setdefault(root, doc)
            size[keeper[doc]] += 1
        return keeper, dict(size)


def _load_edges(store: ArtifactStore, results: list[dict], keys: set[str]) -> np.ndarray:
    parts = [load_array(store, r["file"]) for r in results if r["key"] in keys]
    parts = [p for p in parts if len(p)]
    return np.unique(np.concatenate(parts), axis=0) if parts else np.empty((0, 2), dtype=np.int64)


def exact_groups(edges: np.ndarray) -> dict[int, int]:
    """doc -> the earliest document with the same normalised text (exact edges are stars from it)."""
    groups = {int(b): int(a) for a, b in edges.tolist()}
    groups.update({int(a): int(a) for a in edges[:, 0].tolist()})
    return groups


# --- phase 5: write, one task per shard ------------------------------------------------------------


def write_shard(
    task: tuple[str, dict[int, tuple[str, str]], dict[int, int]],
    *,
    store_root: str,
    in_uri: str,
    out_uri: str,
    dropped_uri: str,
    done_uri: str,
) -> dict:
    """Ray task: split one shard into kept and dropped documents. `task` = (shard, {row: (kept id,
    reason)} for dropped rows, {row: cluster size} for kept rows in a cluster). Resumable."""
    shard, drops, sizes = task
    store = ArtifactStore(store_root)

    def compute() -> dict:
        started = time.process_time()
        table = read_columns(store, store.join(in_uri, shard))
        n = table.num_rows
        size = np.ones(n, dtype=np.int32)
        for row, s in sizes.items():
            size[row] = s
        dropped_mask = np.zeros(n, dtype=bool)
        dropped_mask[list(drops)] = True
        table = table.append_column("dup_cluster_size", pa.array(size, pa.int32()))
        kept = table.filter(pa.array(~dropped_mask))
        with store.atomic_write(store.join(out_uri, shard)) as f:
            pq.write_table(kept, f, compression="zstd")
        counts: Counter = Counter()
        for reason in (EXACT, NEAR):
            rows = sorted(r for r, (_, why) in drops.items() if why == reason)
            if not rows:
                continue
            part = table.take(rows)
            part = part.append_column("duplicate_of", pa.array([drops[r][0] for r in rows], pa.string()))
            part = part.append_column("drop_reason", pa.array([reason] * len(rows), pa.string()))
            with store.atomic_write(store.join(dropped_uri, reason, shard)) as f:
                pq.write_table(part, f, compression="zstd")
            counts[reason] = len(rows)
        return {
            "documents_in": n,
            "documents_out": kept.num_rows,
            "chars_in": _chars(table),
            "chars_out": _chars(kept),
            "seconds": time.process_time() - started,
            "drops": dict(counts),
        }

    return resumable(store, store.join(done_uri, shard + ".json"), compute)


def _chars(table: pa.Table) -> int:
    if table.num_rows == 0:
        return 0
    return int(pc.sum(pc.fill_null(pc.utf8_length(table.column("text")), 0)).as_py() or 0)


def read_ids(task: tuple[str, list[int]], *, store_root: str, in_uri: str) -> list[str]:
    """Ray task: the ids of some rows of one shard (the kept documents that others point to)."""
    shard, rows = task
    store = ArtifactStore(store_root)
    return read_columns(store, store.join(in_uri, shard), ["id"]).column("id").take(rows).to_pylist()


# --- ground truth ----------------------------------------------------------------------------------


def dedup_truth(labels: dict[str, dict], urls: list[str], dropped: set[int]) -> dict[str, float | None]:
    """Scores against the tiny world's duplicate labels, over the documents that entered the stage.

    `urls[i]` is the url of entering document i (global index), `dropped` the indices this stage
    dropped. A ground-truth cluster is an original page plus its labelled copies, counting only the
    members that entered the stage. Recall over a set of copies: the fraction whose cluster was
    collapsed, i.e. the copy was dropped, or its original was dropped while the copy was kept.
    Precision: the fraction of dropped documents that belong to a ground-truth cluster with a kept
    member; any other drop (a unique page, or a whole cluster dropped) is a false positive.
    A recall over no labelled copy, or a precision with no labelled drop, is None (nothing to check).
    """
    index_of: dict[str, int] = {}
    for i, url in enumerate(urls):
        label = labels.get(url)
        if label is not None:
            index_of.setdefault(label["page_id"], i)
    cluster_of: dict[int, int] = {}  # document -> its original's index
    copies: list[tuple[int, int, dict]] = []  # (copy, original, label)
    for i, url in enumerate(urls):
        label = labels.get(url)
        original = index_of.get(label.get("duplicate_of") or "") if label else None
        if original is not None and original != i:
            copies.append((i, original, label))
            cluster_of[i] = cluster_of[original] = original
    members: dict[int, list[int]] = defaultdict(list)
    for doc, root in cluster_of.items():
        members[root].append(doc)

    def recall(selected: list[tuple[int, int, dict]]) -> float | None:
        collapsed = sum(copy in dropped or original in dropped for copy, original, _ in selected)
        return ratio(collapsed, len(selected))

    exact = [c for c in copies if c[2].get("duplicate_kind") == "exact"]
    near = [c for c in copies if c[2].get("duplicate_kind") == "near"]
    near80 = [c for c in near if (c[2].get("jaccard") or 0.0) >= 0.8]
    true_drops = sum(
        1 for d in dropped if d in cluster_of and any(m not in dropped for m in members[cluster_of[d]])
    )
    labelled_drops = sum(1 for d in dropped if d < len(urls) and urls[d] in labels)
    return {
        "truth.near_dup_recall_j80": recall(near80),
        "truth.near_dup_recall": recall(near),
        "truth.exact_dup_recall": recall(exact),
        "truth.dedup_precision": ratio(true_drops, labelled_drops),
        "truth.false_positives": labelled_drops - true_drops,
        "truth.near_dups_j80_in": len(near80),
        "truth.near_dups_in": len(near),
        "truth.exact_dups_in": len(exact),
    }


# --- the stage ------------------------------------------------------------------------------------


def _check_input(ctx: StageContext, documents: Artifact, shards: list[str]) -> None:
    if not shards:
        return
    with ctx.store.open(ctx.store.join(documents.uri, shards[0])) as f:
        names = set(pq.read_schema(f).names)
    missing = {"id", "text"} - names
    if missing:
        raise ConfigError(
            f"dedup: the input documents ({documents.uri}) have no {sorted(missing)} column; dedup needs "
            "extracted text (wire it after `extract`)"
        )


@stage(SPEC)
def dedup(ctx: StageContext, config: DedupConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Drop exact and near duplicates (MinHash-LSH), keeping the earliest document of each cluster."""
    documents = inputs["documents"]
    store = ctx.store
    mh = config.minhash
    shard_names = list_shards(store, documents.uri)
    _check_input(ctx, documents, shard_names)
    common = dict(store_root=store.root)
    timings: dict[str, float] = {}
    if mh.enabled:  # what the bands and rows settings imply: params, not measurements
        ctx.tracker.log_params(
            {
                "lsh.threshold": lsh_threshold(mh.bands, mh.rows),
                "lsh.p_candidate_j80": candidate_probability(0.8, mh.bands, mh.rows),
                "lsh.p_candidate_j50": candidate_probability(0.5, mh.bands, mh.rows),
            }
        )

    # 1. signatures
    started = time.perf_counter()
    sig_uri = ctx.scratch_uri("signatures")
    reused = sum(store.exists(store.join(sig_uri, s + ".json")) for s in shard_names)
    sigs = parallel_map(
        functools.partial(signature_shard, in_uri=documents.uri, sig_uri=sig_uri, config=mh, **common),
        shard_names,
        progress=ctx.progress,
        desc="signatures",
    )
    timings["signatures"] = time.perf_counter() - started
    offsets = np.cumsum([0] + [s["rows"] for s in sigs]).tolist()
    shards = [(name, offsets[i]) for i, name in enumerate(shard_names)]
    n_docs = offsets[-1]
    sig_cpu = sum(s["seconds"] for s in sigs)

    # 2. buckets
    started = time.perf_counter()
    keys = ([EXACT_KEY] if config.exact else []) + ([_band(b) for b in range(mh.bands)] if mh.enabled else [])
    tasks = [(key, part) for key in keys for part in range(mh.key_partitions)]
    buckets = parallel_map(
        functools.partial(
            bucket_task,
            sig_uri=sig_uri,
            shards=shards,
            partitions=mh.key_partitions,
            edges_uri=ctx.scratch_uri("buckets"),
            **common,
        ),
        tasks,
        progress=ctx.progress,
        desc="LSH buckets",
    )
    exact_edges = _load_edges(store, buckets, {EXACT_KEY})
    near_edges = _load_edges(store, buckets, set(keys) - {EXACT_KEY})
    timings["buckets"] = time.perf_counter() - started

    # 3. clusters (+ 4. verification of the fuzzy pairs that exact matches have not settled)
    started = time.perf_counter()
    clusters = Clusters(np.unique(np.concatenate([exact_edges.ravel(), near_edges.ravel()])))
    clusters.join(exact_edges)
    pending = clusters.unresolved(near_edges)
    verify_cpu = 0.0
    rejected = 0
    if mh.verify_threshold is not None and len(pending):
        verify_started = time.perf_counter()
        similarity, verify_cpu = verify_pairs(ctx, pending, documents.uri, shards, mh.ngram)
        accepted = similarity >= mh.verify_threshold
        rejected = int((~accepted).sum())
        ctx.log_metrics({"verify.candidate_jaccard_mean": float(similarity.mean())})
        pending = pending[accepted]
        timings["verify"] = time.perf_counter() - verify_started
    clusters.join(pending)
    keeper, sizes = clusters.decisions()
    groups = exact_groups(exact_edges) if config.exact else {}
    timings["clusters"] = time.perf_counter() - started - timings.get("verify", 0.0)

    # 5. write: who is dropped, for whom, and why
    started = time.perf_counter()
    starts = np.array(offsets[:-1], dtype=np.int64)
    clustered = np.fromiter(keeper, dtype=np.int64, count=len(keeper))  # ascending (nodes were sorted)
    located = list(zip(clustered.tolist(), shard_index(starts, clustered).tolist(), strict=True))
    needed: dict[int, list[int]] = defaultdict(list)  # shard -> rows of kept docs that others point to
    for doc, s in located:
        if keeper[doc] == doc and sizes[doc] > 1:
            needed[s].append(doc - offsets[s])
    id_lists = parallel_map(
        functools.partial(read_ids, in_uri=documents.uri, **common),
        [(shard_names[s], rows) for s, rows in sorted(needed.items())],
        desc="kept ids",
    )
    kept_id = {
        offsets[s] + row: ident
        for (s, rows), ids in zip(sorted(needed.items()), id_lists, strict=True)
        for row, ident in zip(rows, ids, strict=True)
    }
    drops: list[dict[int, tuple[str, str]]] = [{} for _ in shard_names]
    cluster_sizes: list[dict[int, int]] = [{} for _ in shard_names]
    for doc, s in located:
        kept = keeper[doc]
        if doc == kept:
            cluster_sizes[s][doc - offsets[s]] = sizes[doc]
        else:
            same_text = groups.get(doc, doc) == groups.get(kept, kept)
            drops[s][doc - offsets[s]] = (kept_id[kept], EXACT if same_text else NEAR)
    out_uri, dropped_uri = ctx.output_uri("documents"), ctx.output_uri("dropped")
    store.makedirs(out_uri)
    store.makedirs(dropped_uri)
    written = parallel_map(
        functools.partial(
            write_shard,
            in_uri=documents.uri,
            out_uri=out_uri,
            dropped_uri=dropped_uri,
            done_uri=ctx.scratch_uri("done"),
            **common,
        ),
        [(name, drops[i], cluster_sizes[i]) for i, name in enumerate(shard_names)],
        progress=ctx.progress,
        desc="write",
    )
    timings["write"] = time.perf_counter() - started

    stats = FilterStats()
    for result in written:
        stats.add(result)
    stats.cpu_seconds += sig_cpu + sum(b["seconds"] for b in buckets) + verify_cpu
    outputs = documents_artifacts(ctx, stats)
    cluster_count = sum(1 for s in sizes.values() if s > 1)
    signature_rate = per_second(n_docs, sig_cpu)  # None without a document or a measured second
    ctx.log_metrics(
        stats.metrics()
        | {f"time.{phase}_s": round(t, 3) for phase, t in timings.items()}
        | {
            "signatures_per_s_per_cpu": None if signature_rate is None else round(signature_rate, 1),
            "signature_shards_reused": reused,
            "signature_shards_computed": len(shard_names) - reused,
            "candidate_pairs.exact": len(exact_edges),
            "candidate_pairs.near": len(near_edges),
            "verify.rejected_pairs": rejected,
            "clusters": cluster_count,
            "largest_cluster": max(sizes.values(), default=1),
        }
    )
    ctx.report(
        documents_in=stats.documents_in,
        dropped_exact=stats.drops[EXACT],
        dropped_near=stats.drops[NEAR],
        docs_per_s_per_cpu=stats.docs_per_cpu_second,
    )
    labels = load_labels(store, inputs.get("labels"))
    if labels is not None:
        urls = [d["url"] for d in iter_documents(store, documents.uri, columns=["url"])]
        dropped = {doc for doc, kept in keeper.items() if doc != kept}
        truth = dedup_truth(labels, urls, dropped)
        ctx.log_metrics(truth)
        ctx.report(
            **{
                k: truth[k]
                for k in ("truth.near_dup_recall_j80", "truth.exact_dup_recall", "truth.dedup_precision")
            }
        )
    columns = ["id", "url", "duplicate_of", "drop_reason", "text"]
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason, columns=columns)
    return outputs
