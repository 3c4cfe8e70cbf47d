"""Document shards for the tokenizer stages' tests, written as the curation stages write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from components.core.artifacts import Artifact, ArtifactStore

# Words of the tiny world's prose, for documents made of random words.
_VOCABULARY = (
    "the of and to in is was for on that with as by at from city country river mountain people capital "
    "population language north south east west founded century harbour island village museum bridge "
    "Aldoria Brenmark Corvatha Dunmere Eskelund Faroth Gralvik Istria Jorvane"
)
WORDS = _VOCABULARY.split()


def write_corpus(root: Path, shards: list[list[dict[str, Any]]]) -> Artifact:
    """One Parquet shard (id, url, text) per list of documents under `root`; an Artifact pointing at them."""
    root.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("text", pa.string())])
    for i, docs in enumerate(shards):
        pq.write_table(pa.Table.from_pylist(docs, schema=schema), root / f"part-{i:05d}.parquet")
    return Artifact(uri=str(root), kind="documents", digest=ArtifactStore(root).digest(str(root)))
