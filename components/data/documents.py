"""Document shards and the machinery every curation stage shares.

Documents are Parquet shards (`components.io.documents` reads and writes them). A
curation stage is a list of **blocks** (datatrove-style): each block looks at one document, may add
or change fields (extraction fills `text`, language ID adds `language`), and either keeps it or
drops it *with a reason*. `filter_documents` runs the blocks over every shard as one Ray task per
shard (resumable per shard) and writes

    documents/part-*.parquet            what was kept (same shard names as the input)
    dropped/<reason>/part-*.parquet     what was dropped, per reason, with `drop_reason`

so every decision can be inspected. Stats (documents in/out, drops per reason, characters,
documents/s per CPU) come back for MLflow and the funnel.

Scores against ground truth are `ratio`s: a check with nothing to check (no labelled duplicate, no
prediction) has no score, None, which `ctx.report`/`log_metrics` leave out -- never a perfect 1.0.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from components.core.artifacts import Artifact, ArtifactStore
from components.core.parallel import parallel_map, resumable
from components.core.stage import StageContext
from components.io.documents import Document, iter_documents, list_shards, per_second, ratio, write_documents


class Block:
    """One curation step over documents. Subclasses set `name` and implement `process`.

    `process(doc)` returns None to keep the document (possibly after changing its fields) or a short
    drop reason such as "too_few_words"; the stage records it as `<block name>.<reason>`.
    Override `process_batch` when a whole batch is cheaper (a model that predicts many at once).
    """

    name = "block"

    def process(self, doc: Document) -> str | None:
        raise NotImplementedError

    def process_batch(self, docs: Sequence[Document]) -> list[str | None]:
        return [self.process(doc) for doc in docs]


def _schema_without(schema: pa.Schema, drop: Iterable[str]) -> pa.Schema:
    drop = set(drop)
    return pa.schema([f for f in schema if f.name not in drop])


# --- running blocks over shards -------------------------------------------------------------------


@dataclass
class FilterStats:
    """What one filter stage did, summed over shards."""

    documents_in: int = 0
    documents_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    cpu_seconds: float = 0.0
    drops: Counter = field(default_factory=Counter)  # "<block>.<reason>" -> count
    extra: Counter = field(default_factory=Counter)  # block-specific counters (failures by kind, ...)

    def add(self, shard: dict) -> None:
        for key in ("documents_in", "documents_out", "chars_in", "chars_out"):
            setattr(self, key, getattr(self, key) + shard[key])
        self.cpu_seconds += shard["seconds"]
        self.drops.update(shard["drops"])
        self.extra.update(shard.get("extra", {}))

    @property
    def docs_per_cpu_second(self) -> float | None:
        return per_second(self.documents_in, self.cpu_seconds)

    def metrics(self) -> dict[str, float | None]:
        rate = self.docs_per_cpu_second
        out: dict[str, float | None] = {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "documents_dropped": self.documents_in - self.documents_out,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "docs_per_s_per_cpu": None if rate is None else round(rate, 2),
        }
        out.update({f"dropped.{reason}": n for reason, n in sorted(self.drops.items())})
        out.update({f"count.{key}": n for key, n in sorted(self.extra.items())})
        return out


def _chars(doc: Document) -> int:
    text = doc.get("text")
    return len(text) if isinstance(text, str) else 0


def _run_shard(
    shard: str,
    *,
    store_root: str,
    in_uri: str,
    out_uri: str,
    dropped_uri: str,
    done_uri: str,
    make_blocks: Callable[[], list[Block]],
    drop_columns: tuple[str, ...],
    batch_size: int,
) -> dict:
    """Ray task: run the blocks over one shard; resumable (a finished shard leaves a marker)."""
    store = ArtifactStore(store_root)

    def compute() -> dict:
        started = time.process_time()
        with store.open(store.join(in_uri, shard)) as f:
            table = pq.read_table(f)
        docs = table.to_pylist()
        chars_in = sum(_chars(d) for d in docs)
        blocks = make_blocks()
        drops: Counter = Counter()
        dropped: dict[str, list[Document]] = {}
        alive = docs
        for block in blocks:
            survivors = []
            for start in range(0, len(alive), batch_size):
                batch = alive[start : start + batch_size]
                for doc, reason in zip(batch, block.process_batch(batch), strict=True):
                    if reason is None:
                        survivors.append(doc)
                    else:
                        label = f"{block.name}.{reason}"
                        drops[label] += 1
                        dropped.setdefault(label, []).append({**doc, "drop_reason": label})
            alive = survivors
        kept = [{k: v for k, v in d.items() if k not in drop_columns} for d in alive]
        out_schema = None if kept else _schema_without(table.schema, drop_columns)
        write_documents(store, store.join(out_uri, shard), kept, out_schema)
        for label, rows in dropped.items():
            write_documents(store, store.join(dropped_uri, label, shard), rows)
        extra: Counter = Counter()
        for block in blocks:
            extra.update(getattr(block, "counters", {}))
        return {
            "documents_in": len(docs),
            "documents_out": len(kept),
            "chars_in": chars_in,
            "chars_out": sum(_chars(d) for d in kept),
            "seconds": time.process_time() - started,
            "drops": dict(drops),
            "extra": dict(extra),
        }

    return resumable(store, store.join(done_uri, shard + ".json"), compute)


def filter_documents(
    ctx: StageContext,
    documents: Artifact,
    make_blocks: Callable[[], list[Block]],
    *,
    drop_columns: Sequence[str] = (),
    batch_size: int = 256,
    desc: str = "shards",
) -> FilterStats:
    """Run `make_blocks()` over every shard of `documents` (one Ray task per shard) and write the
    stage's `documents` and `dropped` outputs. `make_blocks` runs inside each task (so models load
    there) and must be picklable: a module-level function or a functools.partial of one."""
    shards = list_shards(ctx.store, documents.uri)
    out_uri, dropped_uri = ctx.output_uri("documents"), ctx.output_uri("dropped")
    ctx.store.makedirs(out_uri)
    ctx.store.makedirs(dropped_uri)
    work = functools.partial(
        _run_shard,
        store_root=ctx.store.root,
        in_uri=documents.uri,
        out_uri=out_uri,
        dropped_uri=dropped_uri,
        done_uri=ctx.scratch_uri("done"),
        make_blocks=make_blocks,
        drop_columns=tuple(drop_columns),
        batch_size=batch_size,
    )
    stats = FilterStats()
    for result in parallel_map(work, shards, progress=ctx.progress, desc=desc):
        stats.add(result)
    return stats


def documents_artifacts(ctx: StageContext, stats: FilterStats) -> dict[str, Artifact]:
    """The `documents` and `dropped` artifacts of a filter stage, with counts in their meta."""
    return {
        "documents": ctx.artifact(
            "documents",
            kind="documents",
            documents=stats.documents_out,
            documents_in=stats.documents_in,
            drops=dict(stats.drops),
        ),
        "dropped": ctx.artifact("dropped", kind="dropped_documents", documents=sum(stats.drops.values())),
    }


def filter_outputs(ctx: StageContext, stats: FilterStats, **headline: float | None) -> dict[str, Artifact]:
    """The end of a filter stage: its `documents_artifacts`, its metrics logged, and `headline` reported
    with the throughput (documents per CPU-second) after it."""
    outputs = documents_artifacts(ctx, stats)
    ctx.log_metrics(stats.metrics())
    ctx.report(**headline, docs_per_s_per_cpu=stats.docs_per_cpu_second)
    return outputs


def dropped_urls(store: ArtifactStore, dropped: Artifact) -> dict[str, str]:
    """url -> drop reason, for everything in a `dropped` artifact."""
    out = {}
    for reason in store.listdir(dropped.uri):
        for doc in iter_documents(store, store.join(dropped.uri, reason), columns=["url"]):
            out[doc["url"]] = reason
    return out


# --- ground truth (the tiny world's labels) -----------------------------------------------------


def load_labels(store: ArtifactStore, crawl: Artifact | None) -> dict[str, dict] | None:
    """url -> ground-truth label from a crawl artifact's labels.jsonl; None when there is none."""
    if crawl is None:
        return None
    uri = store.join(crawl.uri, "labels.jsonl")
    if not store.exists(uri):
        return None
    labels = {}
    with store.open(uri, "r") as f:
        for line in f:
            if line.strip():
                label = json.loads(line)
                labels[label["url"]] = label
    return labels


def precision_recall(predicted: set[str], actual: set[str]) -> dict[str, float | None]:
    """Precision/recall of `predicted` against `actual` (both sets of document URLs). An empty
    prediction has no precision and nothing to find no recall: None, not a perfect score."""
    tp = len(predicted & actual)
    return {
        "precision": ratio(tp, len(predicted)),
        "recall": ratio(tp, len(actual)),
        "predicted": len(predicted),
        "actual": len(actual),
    }
