"""Document shards: Parquet files, one row per document (`id`, `url`, `text`, metadata columns), and
the two number helpers every stage's stats use.

Scores against ground truth are `ratio`s: a check with nothing to check (no labelled duplicate, no
prediction) has no score, None, which `ctx.report`/`log_metrics` leave out -- never a perfect 1.0.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from components.core.artifacts import ArtifactStore

Document = dict[str, Any]


def ratio(part: float, whole: float) -> float | None:
    """`part / whole`, or None when `whole` is 0: a fraction of nothing measures nothing (a recall with
    nothing to find, a precision with nothing claimed), and is reported as no number rather than 1.0."""
    return part / whole if whole else None


def per_second(count: float, seconds: float) -> float | None:
    """A throughput: `count / seconds`, or None when nothing was processed or no time was measured."""
    return ratio(count, seconds) if count else None


# --- shard I/O ---------------------------------------------------------------------------------


def list_shards(store: ArtifactStore, uri: str) -> list[str]:
    return [n for n in store.listdir(uri) if n.endswith(".parquet")]


def count_documents(store: ArtifactStore, uri: str) -> int:
    """Rows of a documents directory, from the Parquet footers (no data read)."""
    total = 0
    for shard in list_shards(store, uri):
        with store.open(store.join(uri, shard)) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_documents(store: ArtifactStore, uri: str, columns: list[str] | None = None) -> list[Document]:
    with store.open(uri) as f:
        shard = pq.ParquetFile(f)
        if shard.metadata.num_rows == 0:
            # A shard whose documents were all dropped upstream keeps the schema of before the stage
            # that added e.g. `text`; selecting that column would fail, and there is nothing to read.
            return []
        return shard.read(columns=columns).to_pylist()


def iter_documents(store: ArtifactStore, artifact_uri: str, columns: list[str] | None = None):
    """Every document of a documents artifact, shard by shard (one shard in memory at a time)."""
    for name in list_shards(store, artifact_uri):
        yield from read_documents(store, store.join(artifact_uri, name), columns)


def write_documents(
    store: ArtifactStore, uri: str, docs: list[Document], schema: pa.Schema | None = None
) -> None:
    table = pa.Table.from_pylist(docs, schema=schema) if docs else (schema or pa.schema([])).empty_table()
    with store.atomic_write(uri) as f:
        pq.write_table(table, f, compression="zstd")
