"""Writing the tiny world's crawl: WARC records, the ground-truth label of each page, atomic file writes.

Record ids and WARC-Dates come from a seeded `RecordClock` (warcio never draws a uuid4 or reads the
clock), and gzip members carry mtime 0 (warcio compresses with zlib, whose gzip header has mtime 0), so
the same pages always give byte-identical files. Files appear under their final name only when complete.
"""

from __future__ import annotations

import io
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from components.world.pages import Page


class WarcSettings(Protocol):
    """What the WARC writer reads of the crawl's config (`components.world.crawl.CrawlConfig`, which
    imports this module: a protocol here keeps the two from importing each other)."""

    seed: int
    request_record_fraction: float
    metadata_record_fraction: float


_HTTP_REASONS = {200: "OK", 301: "Moved Permanently", 404: "Not Found"}
_USER_AGENT = "TinyWorldBot/1.0 (+https://gptrecipe.example/bot)"


class RecordClock:
    """Seeded WARC-Record-IDs and monotonically increasing WARC-Dates."""

    def __init__(self, rng: random.Random, start: datetime) -> None:
        self.rng = rng
        self.now = start

    def record_id(self) -> str:
        return f"<urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}>"

    def tick(self) -> datetime:
        self.now += timedelta(seconds=self.rng.randint(1, 40))
        return self.now


def _warc_headers(record_id: str, date: str, extra: dict[str, str]) -> dict[str, str]:
    """Seeded id and date, so warcio never draws a uuid4 or reads the clock. WARC-Type comes first, as in
    Common Crawl: warcio replaces the empty placeholder in place."""
    return {"WARC-Type": "", "WARC-Record-ID": record_id, "WARC-Date": date, **extra}


def _warc_date(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_warc(
    path: Path, pages: list[Page], cfg: WarcSettings, clock: RecordClock, rng: random.Random
) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        info = (
            f"software: gptrecipe tiny-world crawl\r\nformat: WARC File Format 1.0\r\n"
            f"isPartOf: tiny-world-{cfg.seed}\r\nrobots: obey\r\nhttp-header-user-agent: {_USER_AGENT}\r\n"
        ).encode()
        fields = {"WARC-Filename": path.name, "Content-Type": "application/warc-fields"}
        _write_record(
            writer, "", "warcinfo", _warc_headers(clock.record_id(), _warc_date(clock.tick()), fields), info
        )
        for page in pages:
            _write_page(writer, page, clock, rng, cfg)
    os.replace(tmp, path)


def _write_page(
    writer: WARCWriter, page: Page, clock: RecordClock, rng: random.Random, cfg: WarcSettings
) -> None:
    when = clock.tick()
    date = _warc_date(when)
    host = page.url.split("/")[2]
    target = "/" + page.url.split("/", 3)[3] if page.url.count("/") >= 3 else "/"
    if rng.random() < cfg.request_record_fraction:
        request = StatusAndHeaders(
            f"GET {target} HTTP/1.1",
            [
                ("Host", host),
                ("User-Agent", _USER_AGENT),
                ("Accept", "text/html,application/xhtml+xml"),
                ("Accept-Encoding", "identity"),
            ],
            is_http_request=True,
        )
        concurrent = {"WARC-Concurrent-To": page.record_id}
        _write_record(
            writer, page.url, "request", _warc_headers(clock.record_id(), date, concurrent), http=request
        )
    body = page.payload()
    headers = [
        ("Date", format_datetime(when.replace(tzinfo=UTC), usegmt=True)),
        ("Server", rng.choice(("nginx", "Apache", "cloudflare"))),
        ("Content-Type", page.content_type),
        ("Content-Length", str(len(body))),
        *page.extra_headers,
    ]
    response = StatusAndHeaders(f"{page.status} {_HTTP_REASONS[page.status]}", headers, protocol="HTTP/1.1")
    _write_record(writer, page.url, "response", _warc_headers(page.record_id, date, {}), body, http=response)
    if rng.random() < cfg.metadata_record_fraction:
        fields = f"fetchTimeMs: {rng.randint(20, 3000)}\r\ncharset-detected: {page.charset or 'unknown'}\r\n"
        extra = {"WARC-Concurrent-To": page.record_id, "Content-Type": "application/warc-fields"}
        _write_record(
            writer, page.url, "metadata", _warc_headers(clock.record_id(), date, extra), fields.encode()
        )


def _write_record(
    writer: WARCWriter,
    url: str,
    kind: str,
    warc_headers: dict[str, str],
    payload: bytes | None = None,
    http: StatusAndHeaders | None = None,
) -> None:
    """One record of `kind`; `payload` is its block after the HTTP headers (none for a request)."""
    block = {} if payload is None else {"payload": io.BytesIO(payload), "length": len(payload)}
    writer.write_record(
        writer.create_warc_record(url, kind, http_headers=http, warc_headers_dict=warc_headers, **block)
    )


def label(page: Page) -> dict[str, Any]:
    return {
        "page_id": page.page_id,
        "url": page.url,
        "warc_file": page.warc_file,
        "record_id": page.record_id,
        "status": page.status,
        "language": page.language,
        "category": page.category,
        "junk_class": page.junk_class,
        "style": page.style,
        "entity_ids": page.entity_ids,
        "duplicate_of": page.duplicate_of.page_id if page.duplicate_of else None,
        "duplicate_kind": page.duplicate_kind,
        "edit_rate": page.edit_rate,
        "jaccard": page.jaccard,
        "pii": page.pii,
        "decoys": page.decoys,
        "contaminated_with": page.contaminated_with,
        "charset": page.charset,
        "declared_charset": page.declared_charset,
        "content_type": page.content_type,
        "main_text": page.main_text,
    }


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
