"""Ingest: WARC files -> Parquet document shards of HTML pages.

Reads one or many WARC files (gzipped or plain, local or any fsspec URL) as Ray tasks: one per file,
and a gzipped file larger than `split_mb` as several byte ranges, each its own task. A .warc.gz holds
one gzip member per record (the WARC standard's recommendation, Common Crawl's practice), so a range
can start at any member: the driver looks for the first member after each `split_mb` mark -- a gzip
header that really inflates to a `WARC/` record -- reading only a little around each mark, and the
ranges meet there. Thousands of files, or a few large ones, spread over every CPU of the cluster.

Keeps successful HTML responses, decodes their charset robustly, and writes shards of `shard_docs`
documents, so memory stays constant however large the crawl. A corrupt or truncated record is skipped
and counted: the reader resynchronises at the next gzip member (or `WARC/1.` line in a plain file) and
carries on.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from warcio.archiveiterator import ArchiveIterator

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.parallel import parallel_map, resumable
from components.core.stage import StageContext, stage
from components.data.ingest_config import SPEC, IngestConfig

log = logging.getLogger("gptrecipe.ingest")

WARC_SUFFIXES = (".warc", ".warc.gz")
GZIP_MAGIC = b"\x1f\x8b\x08"
# How far past a split mark the driver looks for a record's gzip member; a record compressed larger than
# this (ingest skips bodies over max_body_mb anyway) just makes its range longer.
SPLIT_SCAN_BYTES = 16 * 2**20
META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)
# WHATWG: these labels mean windows-1252 on the web.
LATIN1_LABELS = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii", "cp819"}

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("warc_file", pa.string()),
        ("warc_record_id", pa.string()),
        ("warc_date", pa.string()),
        ("http_status", pa.int32()),
        ("content_type", pa.string()),
        ("charset", pa.string()),
        ("html", pa.large_string()),
    ]
)


@dataclass
class Page:
    url: str
    record_id: str
    date: str
    status: int
    content_type: str
    charset: str
    html: str


# --- decoding --------------------------------------------------------------------------------


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in LATIN1_LABELS:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def looks_binary(body: bytes) -> bool:
    """NUL bytes or many control characters in the first 4 KiB: not text, whatever the header says."""
    head = body[:4096]
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return controls > 0.05 * max(len(head), 1)


def decode_html(body: bytes, declared: str | None) -> tuple[str, str]:
    """Decode an HTML body; returns (text, charset used).

    Valid UTF-8 wins over any declaration, because non-UTF-8 text is almost never valid UTF-8 by
    accident while wrong declarations are common. Then the HTTP header's charset, then the page's
    <meta charset>, then a statistical guess, and finally windows-1252 with replacement characters.
    """
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    meta = META_CHARSET.search(body[:4096])
    for label in (declared, meta.group(1).decode("ascii", "ignore") if meta else None):
        codec = _codec(label)
        if codec and codec != "utf-8":
            try:
                return body.decode(codec), codec
            except (UnicodeDecodeError, LookupError):
                continue
    from charset_normalizer import from_bytes

    guess = from_bytes(body[:65536]).best()
    if guess is not None:
        try:
            return body.decode(guess.encoding), guess.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    return body.decode("cp1252", errors="replace"), "cp1252"


def split_content_type(value: str | None) -> tuple[str, str | None]:
    if not value:
        return "", None
    mime, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip()
    return mime.strip().lower(), charset


# --- reading WARC files robustly -------------------------------------------------------------


def next_sync_point(f: IO[bytes], start: int, gzipped: bool) -> int | None:
    """Offset of the next place a record can start at or after `start`, or None at end of file."""
    marker = GZIP_MAGIC if gzipped else b"\nWARC/1."
    f.seek(start)
    carry, base = b"", start
    while chunk := f.read(1 << 20):
        data = carry + chunk
        i = data.find(marker)
        if i >= 0:
            return base - len(carry) + i + (0 if gzipped else 1)
        carry = data[-(len(marker) - 1) :]
        base += len(chunk)
    return None


def read_pages(f: IO[bytes], config: IngestConfig, counts: Counter) -> Iterator[Page]:
    """HTML pages of one WARC file; everything skipped is counted in `counts` by reason."""
    gzipped = f.read(3) == GZIP_MAGIC
    max_bytes = int(config.max_body_mb * 2**20)
    wanted = set(config.content_types)
    pos: int | None = 0
    while pos is not None:
        f.seek(pos)
        records = ArchiveIterator(f)
        try:
            for record in records:
                counts["records"] += 1
                page = None
                if record.rec_type == "response":
                    counts["responses"] += 1
                    page = _page(record, max_bytes, wanted, counts)
                elif record.rec_type:
                    counts[f"skipped_{record.rec_type}_record"] += 1
                if not _complete(record):
                    raise EOFError("record ends before its declared Content-Length")
                if page is not None:
                    yield page
            # warcio also ends quietly when a record's headers are cut off: make sure it stopped at
            # the real end of the file, not before unreadable bytes.
            f.seek(records.offset)
            if not f.read(1 << 16).strip():
                return
            raise EOFError("unreadable bytes after the last complete record")
        except Exception as e:  # anything the archive reader chokes on is one corrupt record
            counts["corrupt_records"] += 1
            log.warning("corrupt WARC record at byte %d: %s: %s", records.offset, type(e).__name__, e)
            pos = next_sync_point(f, records.offset + 1, gzipped)


def _complete(record: Any) -> bool:
    """Drain the record and say whether all of it was there: warcio treats a record cut short by a
    truncated file as a shorter record, so we compare with its declared length ourselves."""
    if not record.rec_type:
        return False
    raw = record.raw_stream
    while raw.read(1 << 16):
        pass
    return getattr(raw, "limit", 0) <= 0


def _page(record: Any, max_bytes: int, wanted: set[str], counts: Counter) -> Page | None:
    headers = record.http_headers
    if headers is None:
        counts["skipped_no_http_headers"] += 1
        return None
    try:
        status = int(headers.get_statuscode() or 0)
    except ValueError:
        status = 0
    if not 200 <= status < 300:
        counts["skipped_status"] += 1
        return None
    mime, declared = split_content_type(headers.get_header("Content-Type"))
    if mime not in wanted:
        counts["skipped_not_html"] += 1
        return None
    body = record.content_stream().read(max_bytes + 1)
    if len(body) > max_bytes:
        counts["skipped_too_large"] += 1
        return None
    if not body.strip():
        counts["skipped_empty"] += 1
        return None
    if looks_binary(body):
        counts["skipped_binary"] += 1
        return None
    html, charset = decode_html(body, declared)
    if declared and _codec(declared) not in (charset, None):
        counts["charset_mismatch"] += 1
    counts["bytes"] += len(body)
    record_id = record.rec_headers.get_header("WARC-Record-ID") or ""
    return Page(
        url=record.rec_headers.get_header("WARC-Target-URI") or "",
        record_id=record_id,
        date=record.rec_headers.get_header("WARC-Date") or "",
        status=status,
        content_type=mime,
        charset=charset,
        html=html,
    )


def doc_id(record_id: str, url: str) -> str:
    return record_id.removeprefix("<").removesuffix(">").removeprefix("urn:uuid:") or url


# --- splitting large files at gzip members ----------------------------------------------------------


class ByteRange:
    """Bytes `[start, end)` of an open file, as a file of their own (read, seek, tell): a task reads
    its range of a large WARC with the same reader as a whole file."""

    def __init__(self, f: IO[bytes], start: int, end: int):
        self.f, self.start, self.size, self.pos = f, start, end - start, 0

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = min(max(base + offset, 0), self.size)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data


def starts_record(f: IO[bytes], offset: int) -> bool:
    """Whether a gzip member starts at `offset` and inflates to a WARC record header (the three magic
    bytes also occur inside compressed data, about once per 16 MB)."""
    f.seek(offset)
    try:
        head = zlib.decompressobj(wbits=31).decompress(f.read(4096), 16)
    except zlib.error:
        return False
    return head.startswith(b"WARC/")


def member_after(f: IO[bytes], start: int, limit: int) -> int | None:
    """Offset of the first gzip member in `[start, limit)` that starts a WARC record, or None."""
    pos = start
    while pos is not None and pos < limit:
        pos = next_sync_point(f, pos, gzipped=True)
        if pos is None or pos >= limit:
            return None
        if starts_record(f, pos):
            return pos
        pos += 1
    return None


def split_points(f: IO[bytes], size: int, split_bytes: int) -> list[int]:
    """Where the ranges of one gzipped WARC of `size` bytes start: 0, then the first record member
    after every `split_bytes` mark. A mark with no member within `SPLIT_SCAN_BYTES` (a huge record, or
    a file compressed as one stream) adds no split: its range simply grows."""
    starts = [0]
    for mark in range(split_bytes, size, split_bytes):
        scan = min(split_bytes, SPLIT_SCAN_BYTES)
        found = member_after(f, max(mark, starts[-1] + 1), min(mark + scan, size))
        if found is not None:
            starts.append(found)
    return starts


def plan_ranges(files: list[str], split_mb: float) -> list[tuple[str, int, int | None]]:
    """(file, start, end) per task, in file order: a plain WARC or a small one whole (end None = to
    its end), a large gzipped one in ranges that meet at record members."""
    import fsspec

    split_bytes = max(int(split_mb * 2**20), 1)
    tasks: list[tuple[str, int, int | None]] = []
    for uri in files:
        fs, path = fsspec.core.url_to_fs(uri)
        size = fs.size(path)
        if size <= split_bytes:
            tasks.append((uri, 0, None))
            continue
        with fs.open(path, "rb") as f:
            if f.read(3) != GZIP_MAGIC:
                tasks.append((uri, 0, None))
                continue
            starts = split_points(f, size, split_bytes)
        tasks += [(uri, a, b) for a, b in zip(starts, [*starts[1:], size], strict=True)]
    return tasks


# --- one WARC file (or range of one) -> shards ------------------------------------------------------


def ingest_file(
    task: tuple[int, tuple[str, int, int | None]],
    *,
    store_root: str,
    out_uri: str,
    done_uri: str,
    config: IngestConfig,
) -> dict:
    """Ray task: one WARC file, or a byte range of one, into `part-<task>-<shard>.parquet` files;
    resumable per task."""
    import fsspec

    index, (warc_uri, start, end) = task
    store = ArtifactStore(store_root)

    def compute() -> dict:
        counts: Counter = Counter()
        rows: list[Page] = []
        shards = 0
        buffered = 0

        def flush() -> None:
            nonlocal shards, buffered
            if not rows:
                return
            table = pa.table(
                {
                    "id": [doc_id(p.record_id, p.url) for p in rows],
                    "url": [p.url for p in rows],
                    "warc_file": [warc_uri] * len(rows),
                    "warc_record_id": [p.record_id for p in rows],
                    "warc_date": [p.date for p in rows],
                    "http_status": [p.status for p in rows],
                    "content_type": [p.content_type for p in rows],
                    "charset": [p.charset for p in rows],
                    "html": [p.html for p in rows],
                },
                schema=SCHEMA,
            )
            with store.atomic_write(store.join(out_uri, f"part-{index:05d}-{shards:05d}.parquet")) as f:
                pq.write_table(table, f, compression="zstd")
            shards += 1
            rows.clear()
            buffered = 0

        fs, path = fsspec.core.url_to_fs(warc_uri)  # a user's file, wherever it is: not the store's
        with fs.open(path, "rb") as whole:
            f = whole if end is None else ByteRange(whole, start, end)
            for page in read_pages(f, config, counts):
                counts["documents"] += 1
                rows.append(page)
                buffered += len(page.html)
                # Bound memory by bytes too: a few huge pages should not fill a shard's worth of RAM.
                if len(rows) >= config.shard_docs or buffered > 256 * 2**20:
                    flush()
            flush()
        counts["shards"] = shards
        return dict(counts)

    return resumable(store, store.join(done_uri, f"{index:05d}.json"), compute)


def resolve_warc_files(config: IngestConfig, inputs: dict[str, Artifact], store: ArtifactStore) -> list[str]:
    """The WARC files to read, checked before any work starts."""
    import fsspec

    if config.paths:
        files: list[str] = []
        for spec in config.paths:
            fs, _ = fsspec.core.url_to_fs(spec)
            if any(c in spec for c in "*?["):
                matches = sorted(fs.glob(spec))
            elif fs.isdir(spec):  # a directory: every WARC file below it
                matches = sorted(m for m in fs.find(spec) if m.endswith(WARC_SUFFIXES))
            else:
                matches = [spec]
            protocol = spec.split("://", 1)[0] + "://" if "://" in spec else ""
            matches = [m if "://" in m or not protocol else protocol + m for m in matches]
            if not matches or not all(fs.exists(m) for m in matches):
                raise ConfigError(f"ingest.paths: {spec} does not exist or matches no WARC file")
            files.extend(matches)
        return files
    if "crawl" not in inputs:
        raise ConfigError("ingest has no input: set ingest.paths, or enable the world stage")
    crawl = inputs["crawl"].uri
    files = [store.join(crawl, n) for n in store.listdir(crawl) if n.endswith(WARC_SUFFIXES)]
    if not files:
        raise ConfigError(f"ingest: the crawl artifact {crawl} holds no .warc or .warc.gz file")
    return files


@stage(SPEC)
def ingest(ctx: StageContext, config: IngestConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Read WARC files; write their HTML responses as Parquet document shards."""
    files = resolve_warc_files(config, inputs, ctx.store)
    out_uri = ctx.output_uri("documents")
    ctx.store.makedirs(out_uri)
    work = functools.partial(
        ingest_file,
        store_root=ctx.store.root,
        out_uri=out_uri,
        done_uri=ctx.scratch_uri("done"),
        config=config,
    )
    tasks = plan_ranges(files, config.split_mb)
    ctx.log.info(
        "%d WARC files in %d tasks (files over %g MB in byte ranges)", len(files), len(tasks), config.split_mb
    )
    results = parallel_map(work, list(enumerate(tasks)), progress=ctx.progress, desc="WARC ranges")
    totals: Counter = Counter()
    for result in results:
        totals.update(result)
    ctx.log_metrics(dict(totals))
    ctx.report(
        documents=totals["documents"],
        corrupt_records=totals["corrupt_records"],
        warc_files=len(files),
        tasks=len(tasks),
    )
    return {
        "documents": ctx.artifact(
            "documents", kind="documents", documents=totals["documents"], shards=totals["shards"]
        )
    }
