"""Ingest: WARC records in, HTML documents out; damaged records are skipped and counted."""

from __future__ import annotations

import gzip
import io
import itertools
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from components.core.artifacts import Artifact
from components.core.config import ConfigError
from components.data.ingest import (
    ByteRange,
    IngestConfig,
    decode_html,
    ingest_file,
    member_after,
    plan_ranges,
    read_pages,
    resolve_warc_files,
    starts_record,
)

PAGE = "<html><head><title>{t}</title></head><body><p>{t} is a page about Velmora.</p></body></html>"


def response(writer: WARCWriter, url: str, body: bytes, content_type: str, status: str = "200 OK") -> None:
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
    writer.write_record(record)


def build_warc(path: Path, gzipped: bool = True) -> list[tuple[int, int]]:
    """Ten records of every kind ingest meets; returns each record's (offset, length) in the file."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gzipped)
    spans = []

    def mark(fn, *args, **kwargs):
        start = buf.tell()
        fn(*args, **kwargs)
        spans.append((start, buf.tell() - start))

    mark(writer.write_record, writer.create_warcinfo_record("test.warc", {"software": "test"}))
    for i in range(3):
        mark(response, writer, f"http://a.example/{i}", PAGE.format(t=f"Page {i}").encode(), "text/html")
    get = io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
    req = writer.create_warc_record("http://a.example/0", "request", payload=get)
    mark(writer.write_record, req)
    mark(response, writer, "http://a.example/doc.pdf", b"%PDF-1.4 binary", "application/pdf")
    cp1252 = PAGE.format(t="Café Zürich – naïve").encode("cp1252")
    mark(response, writer, "http://b.example/latin", cp1252, "text/html; charset=ISO-8859-1")
    greek = PAGE.format(t="Ελληνικά ok").encode()
    mark(response, writer, "http://b.example/wrong", greek, "text/html; charset=cp1252")
    mark(response, writer, "http://b.example/bin", bytes(range(256)) * 8, "text/html")
    mark(response, writer, "http://b.example/404", b"not found", "text/html", status="404 Not Found")
    path.write_bytes(buf.getvalue())
    return spans


def read_all(path: Path, config: IngestConfig | None = None) -> tuple[list, Counter]:
    counts: Counter = Counter()
    with open(path, "rb") as f:
        pages = list(read_pages(f, config or IngestConfig(), counts))
    return pages, counts


@pytest.mark.parametrize("gzipped", [True, False])
def test_reads_html_responses_and_counts_the_rest(tmp_path, gzipped):
    path = tmp_path / ("c.warc.gz" if gzipped else "c.warc")
    build_warc(path, gzipped)
    pages, counts = read_all(path)
    assert [p.url for p in pages] == [
        "http://a.example/0",
        "http://a.example/1",
        "http://a.example/2",
        "http://b.example/latin",
        "http://b.example/wrong",
    ]
    assert counts["records"] == 10 and counts["responses"] == 8
    assert counts["skipped_not_html"] == 1
    assert counts["skipped_binary"] == 1
    assert counts["skipped_status"] == 1
    assert counts["skipped_warcinfo_record"] == 1 and counts["skipped_request_record"] == 1
    assert counts["corrupt_records"] == 0
    latin, wrong = pages[3], pages[4]
    assert "Café Zürich – naïve" in latin.html and latin.charset == "cp1252"
    assert "Ελληνικά" in wrong.html and wrong.charset == "utf-8"  # declared cp1252, really UTF-8
    assert counts["charset_mismatch"] == 1


@pytest.mark.parametrize("gzipped", [True, False])
def test_corrupt_record_in_the_middle_is_skipped(tmp_path, gzipped):
    path = tmp_path / ("c.warc.gz" if gzipped else "c.warc")
    spans = build_warc(path, gzipped)
    data = bytearray(path.read_bytes())
    start, length = spans[2]  # the second HTML page
    # Overwrite the middle of that record (inside its gzip member / its WARC header block).
    lo = start + (length // 3 if gzipped else 0)
    data[lo : lo + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    pages, counts = read_all(path)
    assert counts["corrupt_records"] == 1
    assert [p.url for p in pages][:2] == ["http://a.example/0", "http://a.example/2"]
    assert len(pages) == 4  # everything else survived


def test_truncated_file_keeps_what_came_before(tmp_path):
    path = tmp_path / "c.warc.gz"
    spans = build_warc(path)
    start, length = spans[6]  # the cp1252 page, cut in half
    path.write_bytes(path.read_bytes()[: start + length // 2])
    pages, counts = read_all(path)
    assert [p.url for p in pages] == [f"http://a.example/{i}" for i in range(3)]
    assert counts["corrupt_records"] == 1


def test_body_size_cap(tmp_path):
    path = tmp_path / "c.warc.gz"
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    response(writer, "http://big.example/", PAGE.format(t="x" * 300_000).encode(), "text/html")
    response(writer, "http://small.example/", PAGE.format(t="small").encode(), "text/html")
    path.write_bytes(buf.getvalue())
    pages, counts = read_all(path, IngestConfig(max_body_mb=0.1))
    assert [p.url for p in pages] == ["http://small.example/"]
    assert counts["skipped_too_large"] == 1


def test_decode_html_rules():
    assert decode_html("naïve".encode(), None) == ("naïve", "utf-8")
    assert decode_html("naïve".encode("cp1252"), "iso-8859-1") == ("naïve", "cp1252")
    meta = b'<html><head><meta charset="windows-1252"></head><body>caf\xe9</body></html>'
    assert decode_html(meta, None)[0].endswith("café</body></html>")
    text, charset = decode_html("Grüße aus Köln, schöne Straße".encode("latin-1"), None)
    assert "Köln" in text and charset  # guessed with no declaration at all
    assert decode_html(b"plain ascii", "no-such-charset") == ("plain ascii", "utf-8")


def test_ingest_file_writes_shards_and_resumes(tmp_path):
    path = tmp_path / "c.warc.gz"
    build_warc(path)
    out, done = tmp_path / "docs", tmp_path / "done"
    kwargs = dict(store_root=str(tmp_path), out_uri=str(out), done_uri=str(done))
    kwargs["config"] = IngestConfig(shard_docs=2)
    counts = ingest_file((0, (str(path), 0, None)), **kwargs)
    assert counts["documents"] == 5 and counts["shards"] == 3
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert set(table.column_names) >= {"id", "url", "html", "charset", "warc_record_id"}
    assert len(set(table.column("id").to_pylist())) == 5
    # A rerun finds the file's marker and does not read it again.
    path.write_bytes(b"garbage")
    assert ingest_file((0, (str(path), 0, None)), **kwargs) == counts


def big_warc(path: Path, records: int = 300) -> tuple[list[str], int]:
    """A gzipped WARC of `records` pages with incompressible bodies (so the file is large enough to
    split at small `split_mb`); returns the urls and the offset of a decoy: the gzip magic bytes inside a
    record's member (stored uncompressed), where no record starts."""
    import random

    rng = random.Random(3)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    writer.write_record(writer.create_warcinfo_record("big.warc", {"software": "test"}))
    urls, decoy = [], -1
    for i in range(records):
        noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(3000))
        body = f"<html><body><p>Page {i}.</p><p>{noise}</p></body></html>".encode()
        urls.append(f"http://big.example/{i}")
        if i != 40:
            response(writer, urls[-1], body, "text/html")
            continue
        raw = io.BytesIO()  # this record's member stored at level 0, so its body's bytes appear as is
        response(WARCWriter(raw, gzip=False), urls[-1], body + b"\x1f\x8b\x08 decoy", "text/html")
        member = gzip.compress(raw.getvalue(), compresslevel=0, mtime=0)
        decoy = buf.tell() + member.index(b"\x1f\x8b\x08", 3)
        buf.write(member)
    path.write_bytes(buf.getvalue())
    return urls, decoy


def test_a_large_gzipped_warc_is_split_at_record_members(tmp_path):
    """Byte ranges of ~64 KiB meet where a record's gzip member starts; read one by one they give every
    page exactly once, in order, as the whole file does -- and a plain WARC is never split."""
    path = tmp_path / "big.warc.gz"
    urls, decoy = big_warc(path)
    size = path.stat().st_size
    split_mb = 64 / 1024
    tasks = plan_ranges([str(path)], split_mb)
    assert len(tasks) == pytest.approx(size / 2**16, abs=1.5) and len(tasks) > 5
    assert tasks[0][1] == 0 and tasks[-1][2] == size
    assert all(a[2] == b[1] for a, b in itertools.pairwise(tasks))  # ranges meet
    with open(path, "rb") as f:
        for _, start, _ in tasks:
            assert starts_record(f, start)
        assert not starts_record(f, decoy)  # magic bytes, but no record: the split looks past them
        assert member_after(f, decoy, size) > decoy

    seen, counts = [], Counter()
    with open(path, "rb") as f:
        for _, start, end in tasks:
            seen += [p.url for p in read_pages(ByteRange(f, start, end), IngestConfig(), counts)]
    assert seen == urls and counts["corrupt_records"] == 0

    out = tmp_path / "docs"
    for index, task in enumerate(tasks):
        kwargs = dict(store_root=str(tmp_path), out_uri=str(out), done_uri=str(tmp_path / "done"))
        ingest_file((index, task), config=IngestConfig(split_mb=split_mb), **kwargs)
    assert pq.read_table(out).column("url").to_pylist() == urls  # shard names keep the file's order

    plain = tmp_path / "big.warc"
    with gzip.open(path) as f:
        plain.write_bytes(f.read())
    assert plan_ranges([str(plain)], split_mb) == [(str(plain), 0, None)]
    # One gzip stream for the whole file: no member to split at, so one range, still read whole.
    single = tmp_path / "single.warc.gz"
    single.write_bytes(gzip.compress(plain.read_bytes()))
    ranges = plan_ranges([str(single)], split_mb)
    assert [(a, b) for _, a, b in ranges] == [(0, single.stat().st_size)]


def test_resolve_warc_files_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"no-such\.warc\.gz does not exist"):
        resolve_warc_files(IngestConfig(paths=[str(tmp_path / "no-such.warc.gz")]), {}, None)
    with pytest.raises(ConfigError, match="ingest has no input"):
        resolve_warc_files(IngestConfig(), {}, None)
    (tmp_path / "a.warc.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "b.warc").write_bytes(b"")
    found = resolve_warc_files(IngestConfig(paths=[str(tmp_path / "*.warc*")]), {}, None)
    assert [Path(f).name for f in found] == ["a.warc.gz", "b.warc"]
    from components.core.artifacts import ArtifactStore

    crawl = Artifact(uri=str(tmp_path), kind="crawl", digest="x")
    found = resolve_warc_files(IngestConfig(), {"crawl": crawl}, ArtifactStore(tmp_path))
    assert [Path(f).name for f in found] == ["a.warc.gz", "b.warc"]


def test_a_directory_in_ingest_paths_means_every_warc_file_below_it(tmp_path):
    crawl = tmp_path / "crawl"
    (crawl / "2026" / "12").mkdir(parents=True)
    for name in ("b.warc.gz", "2026/12/a.warc", "notes.txt", "2026/index.html"):
        (crawl / name).write_bytes(b"")
    found = resolve_warc_files(IngestConfig(paths=[str(crawl)]), {}, None)
    assert [Path(f).relative_to(crawl).as_posix() for f in found] == ["2026/12/a.warc", "b.warc.gz"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty does not exist or matches no WARC file"):
        resolve_warc_files(IngestConfig(paths=[str(empty)]), {}, None)
