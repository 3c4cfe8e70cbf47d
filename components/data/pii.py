"""PII: find e-mail addresses, public IP addresses and phone numbers; anonymise, drop or count them.

FineWeb replaces e-mails and public IPv4 addresses with fixed dummy values. We add IPv6 and phone
numbers, and avoid the known weak spots: a dotted version string such as `2.0.0.1` is a valid IPv4
address, and dates, prices, years and plain numbers look like phone numbers to a naive pattern.

What counts as PII (each detector is a regex that proposes candidates, then a check that decides):

- **email**: `local@domain.tld` (unicode letters allowed; the @ may be percent-encoded as `%40`, as
  in URLs). Our own dummy `email@example.com` is not counted, so anonymising twice changes nothing.
  Obfuscated forms ("anna [at] example [dot] com") are not detected.
- **ipv4**: a dotted quad that `ipaddress` accepts (no leading zeros) and calls *global*: private,
  loopback, link-local, shared (100.64/10), documentation/test-net, multicast, reserved and broadcast
  addresses are kept. A dotted quad is a **version**, not an address, when
  (a) it is glued to a letter (`v1.4.2.10`, `build1.2.3.4`),
  (b) it goes on with another `.number` (`1.2.3.4.5`) or a `-letter` suffix (`1.2.3.4-beta`),
  (c) the word before it is a version word (version, ver, v, release, build, firmware, fw, revision,
      rev, patch, kernel, driver, bios) -- also across one filler word (is, was, number, no, of, to,
      from): "upgraded to release 2.0.8.11", "version number 1.2.3.4", or
  (d) it continues a list that started with a version ("version 1.2.3.4, 1.2.3.5 and 1.2.3.6").
  Limits: a public-looking version without such context ("upgraded to 7.0.2.15") is anonymised as an
  address -- replacing a version costs little, missing an address is a leak; and an address right
  after a version word ("the build 8.8.8.8 server") is kept as a version.
- **ipv6**: a colon-hex run with at least two colons that `ipaddress` accepts and calls global, not
  multicast, reserved or site-local (so `::1`, `fe80::/10`, ULA `fc00::/7`, documentation
  `2001:db8::/32` are kept); an IPv4-mapped address (`::ffff:8.8.8.8`) is judged by its IPv4. Times
  (`12:30:45`) and MAC addresses are not valid IPv6 and never match.
- **phone**: two finders, their spans merged where they overlap.
  (1) libphonenumber (Google's numbering plans, the `phonenumbers` package): its matcher with leniency
  VALID (the number exists in the plan; a national prefix the plan requires is there -- POSSIBLE, length
  only, would take any digit string of the right size) finds national numbers of the document's regions
  and international ones (+CC, with or without extension) whatever the region. Regions come from the
  document: its URL's country-code TLD (.de, .co.uk; not the generic .io, .co, .tv, ...) and its
  language (`LANGUAGE_REGIONS`: de -> DE, AT, CH; en -> US, GB; ...); a document with neither gets the
  stage's `phone_default_regions` (US, GB, DE, FR). Extensions ("ext. 123", "x123") are part of the span.
  (2) our patterns, for layouts whatever the region, also the fiction range 555 the plan rejects:
  international (`+44 (0)20 7946 0958`), North American (`(555) 123-4567`, `1-800-555-0199`), national
  with a trunk `0` and an area code (`030 1234567`, `030/1234567`, `06 12 34 56 78`; no dots, so
  `01.04.2019` stays a date), and 8..15 plain digits right after a phone word (tel, phone, fax, ...).
  Every candidate of either finder then passes the decoy guards (`phone_decoy_reason`): not bare digits
  without a phone word (an ID), not the tail of a longer digit sequence (IBAN, card, reference), not a
  price (currency before or after, a decimal part), a decimal, a ZIP+4 code, a range (`1990-2000`,
  `8963 - 8884`), a card layout, a version layout (`10.0.14978.3239`), not digits in threes
  (`377 125 286`) unless a phone word precedes in the sentence, not overlapping a date or a dotted quad,
  not after a version word or an identifier word (ISBN, order, invoice, ref, pp., ...), not a valid
  ISBN-13. Only texts with a run of at least 7 digits are looked at, and the matcher only parses the
  stretch around each run. Limits: national numbers of a region the document does not hint at are
  missed (the bench measures it: "no hint"); numbers written in threes without a phone word ("Reach us
  at 800 123 456") are taken for counts; 8-digit numbers written `1234-5678` (DK, NO) for ranges; a
  number that follows a pattern match after one space joins it within 15 digits
  ("+33 1 23 45 67 89 2019" stays whole).

Dummy values (`DUMMIES`) are themselves not PII by these rules: `email@example.com` (RFC 2606 domain,
FineWeb's choice), `192.0.2.1` (RFC 5737 TEST-NET-1), `2001:db8::1` (RFC 3849 documentation prefix)
and `555-0100` (the NANP range reserved for fiction; 7 digits, below the phone detector's minimum).

URLs: the `url` column is scanned too, but only after the host (path, query, fragment), where e-mails
(also percent-encoded, `anna%40example.com`) and numbers end up in query strings. The host itself is
kept: a server's name or address identifies a site, not a person, and later stages join on the URL.
In anonymise mode PII in the path/query is replaced in place; in drop mode it drops the document.

`scrub(text)` anonymises every type with the dummies, phone numbers in the national formats of every
region a hint can name: `log_samples` uses it, so no PII reaches MLflow.

`tests/bench/pii_recall.py` measures phone recall on libphonenumber's example numbers (14 regions,
three types, three formats, with and without extension) and the decoys left alone.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow.parquet as pq

from components.core.artifacts import Artifact
from components.core.stage import StageContext, stage
from components.data.documents import Block, documents_artifacts, filter_documents, load_labels
from components.data.pii_addresses import DUMMIES, Span, find_emails, find_ipv4, find_ipv6, resolve_spans
from components.data.pii_config import DEFAULT_PHONE_REGIONS, PII_TYPES, SPEC, PIIConfig
from components.data.pii_phones import SCRUB_PHONE_REGIONS, find_phones, phone_regions
from components.io.documents import Document, iter_documents, list_shards, ratio, read_documents

# --- detection and anonymisation -----------------------------------------------------------------

_FINDERS = {"email": find_emails, "ipv4": find_ipv4, "ipv6": find_ipv6}


def _find(text: str, types: Iterable[str], regions: Iterable[str]) -> list[Span]:
    found: list[Span] = []
    for kind in types:
        found += find_phones(text, regions) if kind == "phone" else _FINDERS[kind](text)
    return resolve_spans(found)


def detect(
    text: str, types: Iterable[str] = PII_TYPES, regions: Iterable[str] = DEFAULT_PHONE_REGIONS
) -> list[Span]:
    """Every PII value of the wanted types in `text`, as non-overlapping spans in text order; phone
    numbers in national format for `regions` (see `phone_regions`), international ones always."""
    return _find(text, types, regions) if text else []


def detect_in_url(
    url: str, types: Iterable[str] = PII_TYPES, regions: Iterable[str] = DEFAULT_PHONE_REGIONS
) -> list[Span]:
    """PII in a URL's path, query and fragment (never in the host; see the module docstring)."""
    if not url:
        return []
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3 if scheme_end >= 0 else 0)
    if path_start < 0:
        return []
    rest = url[path_start:]
    return [Span(s.start + path_start, s.end + path_start, s.type) for s in _find(rest, types, regions)]


def replace_spans(text: str, spans: list[Span]) -> str:
    parts, pos = [], 0
    for span in spans:
        parts += [text[pos : span.start], DUMMIES[span.type]]
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


def anonymise(
    text: str, types: Iterable[str] = PII_TYPES, regions: Iterable[str] = DEFAULT_PHONE_REGIONS
) -> str:
    return replace_spans(text, detect(text, types, regions))


def scrub(text: str) -> str:
    """Anonymise every PII type with the fixed dummies (what samples logged to MLflow go through), phone
    numbers in the national formats of every region a document could have hinted at."""
    return anonymise(text, PII_TYPES, SCRUB_PHONE_REGIONS) if text else text


# --- the stage ------------------------------------------------------------------------------------


# --- samples for MLflow, scrubbed ------------------------------------------------------------------


def log_samples(
    ctx: StageContext, docs: list[Document], name: str, limit: int = 20, chars: int = 600
) -> None:
    """A few documents as an MLflow text artifact, PII scrubbed first (no PII ever reaches MLflow)."""

    def scrubbed(value: Any) -> Any:  # metadata strings too: a title or a URL can carry an e-mail
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, list):
            return [scrubbed(v) for v in value]
        return value

    lines = []
    for doc in docs[:limit]:
        head = {
            k: scrubbed(v) for k, v in doc.items() if k not in {"text", "html"} and not isinstance(v, bytes)
        }
        text = scrub(str(doc.get("text") or doc.get("html") or ""))[:chars]
        lines.append(json.dumps({**head, "url": scrub(str(doc.get("url", ""))), "text": text}, default=str))
    ctx.tracker.log_text("\n".join(lines) + "\n", f"samples/{name}.jsonl")


def log_dropped_samples(
    ctx: StageContext,
    dropped: Artifact,
    per_reason: int,
    columns: list[str] | None = None,
    prefix: str = "dropped_",
) -> None:
    """The first `per_reason` dropped documents of each reason as `samples/<prefix><reason>.jsonl`
    (via `log_samples`, so PII is scrubbed). Reads only those rows, and only `columns` if given."""
    if per_reason <= 0:
        return
    for reason in sorted(ctx.store.listdir(dropped.uri)):
        reason_uri = ctx.store.join(dropped.uri, reason)
        docs: list[Document] = []
        for shard in sorted(list_shards(ctx.store, reason_uri)):
            with ctx.store.open(ctx.store.join(reason_uri, shard)) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=per_reason, columns=columns):
                    docs.extend(batch.to_pylist()[: per_reason - len(docs)])
                    break
            if len(docs) >= per_reason:
                break
        if docs:
            log_samples(ctx, docs, f"{prefix}{reason}", limit=per_reason)


class PIIBlock(Block):
    """Detects PII in `text` (and the URL), then anonymises, drops or only counts."""

    name = "pii"

    def __init__(self, config: PIIConfig):
        self.mode = config.mode
        self.types = tuple(config.types)
        self.scan_urls = config.scan_urls
        self.default_regions = tuple(config.phone_default_regions)
        self.counters: Counter = Counter()

    def process(self, doc: Document) -> str | None:
        text, url = doc.get("text"), doc.get("url")
        regions = phone_regions(doc.get("language"), url, self.default_regions)
        spans = detect(text, self.types, regions) if isinstance(text, str) else []
        scan_url = self.scan_urls and isinstance(url, str)
        url_spans = detect_in_url(url, self.types, regions) if scan_url else []
        if not spans and not url_spans:
            return None
        self.counters.update(s.type for s in spans)
        self.counters.update(f"url_{s.type}" for s in url_spans)
        self.counters["documents_with_pii"] += 1
        if self.mode == "drop":
            present = {s.type for s in spans + url_spans}
            return "contains_" + next(t for t in PII_TYPES if t in present)
        if self.mode == "anonymise":
            if spans:
                doc["text"] = replace_spans(text, spans)
            if url_spans:
                doc["url"] = replace_spans(url, url_spans)
        return None


def _make_blocks(config: PIIConfig) -> list[Block]:
    return [PIIBlock(config)]


def pii_truth(
    docs: Iterable[Document],
    labels: dict[str, dict],
    types: Iterable[str] = PII_TYPES,
    default_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
) -> dict:
    """Detector quality against the tiny world's labels, over the documents that enter the stage.

    recall: labelled PII values (of the wanted types, present in the input text) that no longer appear
    verbatim once the text is anonymised; precision: detected spans whose text is one of the document's
    labelled PII values; decoys_replaced: labelled decoy values present before and gone after. The same
    numbers describe all three modes (in drop mode, anonymising is what decides the drop). Phone regions
    come from each document's language and URL, as in the stage.
    """
    types, default_regions = tuple(types), tuple(default_regions)
    values, removed, absent = Counter(), Counter(), 0
    spans_found, spans_true = Counter(), Counter()
    decoys_present, decoys_replaced = Counter(), Counter()
    docs_pii = docs_flagged = docs_flagged_pii = 0
    for doc in docs:
        label = labels.get(doc.get("url") or "")
        text = doc.get("text")
        if label is None or not isinstance(text, str):
            continue
        spans = detect(text, types, phone_regions(doc.get("language"), doc.get("url"), default_regions))
        out = replace_spans(text, spans)
        truth = {p["value"] for p in label.get("pii") or [] if p["type"] in types and p["value"] in text}
        for p in label.get("pii") or []:
            if p["type"] not in types:
                continue
            if p["value"] not in text:
                absent += 1  # removed upstream (extraction cut the paragraph): not this stage's to find
                continue
            values[p["type"]] += 1
            removed[p["type"]] += p["value"] not in out
        for s in spans:
            spans_found[s.type] += 1
            spans_true[s.type] += text[s.start : s.end] in truth
        for d in label.get("decoys") or []:
            if d["value"] in text:
                decoys_present[d["type"]] += 1
                decoys_replaced[d["type"]] += d["value"] not in out
        docs_pii += bool(truth)
        docs_flagged += bool(spans)
        docs_flagged_pii += bool(spans) and bool(truth)

    metrics: dict[str, float | None] = {
        "recall": ratio(sum(removed.values()), sum(values.values())),
        "precision": ratio(sum(spans_true.values()), sum(spans_found.values())),
        "decoys_replaced": sum(decoys_replaced.values()),
        "decoys_present": sum(decoys_present.values()),
        "pii_values": sum(values.values()),
        "pii_values_absent_from_input": absent,
        "false_positives": sum(spans_found.values()) - sum(spans_true.values()),
        "documents_with_pii": docs_pii,
        "documents_flagged": docs_flagged,
        "documents_recall": ratio(docs_flagged_pii, docs_pii),
        "documents_precision": ratio(docs_flagged_pii, docs_flagged),
    }
    for t in types:
        metrics[f"recall.{t}"] = ratio(removed[t], values[t])
        metrics[f"precision.{t}"] = ratio(spans_true[t], spans_found[t])
        metrics[f"pii_values.{t}"] = values[t]
    for t, n in sorted(decoys_present.items()):
        metrics[f"decoys_replaced.{t}"] = decoys_replaced[t]
        metrics[f"decoys_present.{t}"] = n
    return metrics


def _has_column(ctx: StageContext, documents: Artifact, column: str) -> bool:
    """Whether the documents carry `column` (the language comes from the language stage, which a
    pipeline may leave out)."""
    for shard in list_shards(ctx.store, documents.uri):
        with ctx.store.open(ctx.store.join(documents.uri, shard)) as f:
            return column in pq.ParquetFile(f).schema_arrow.names
    return False


def _samples(ctx: StageContext, uris: list[str], want, limit: int) -> list[Document]:
    """Up to `limit` documents from the shards under `uris` for which `want(doc)` holds."""
    out: list[Document] = []
    for uri in uris:
        for shard in list_shards(ctx.store, uri):
            out += [d for d in read_documents(ctx.store, ctx.store.join(uri, shard)) if want(d)]
            if len(out) >= limit:
                return out[:limit]
    return out


def _log_samples(ctx: StageContext, config: PIIConfig, documents: Artifact) -> None:
    if not config.samples:
        return
    if config.mode == "drop":
        dropped = ctx.output_uri("dropped")
        uris = [ctx.store.join(dropped, reason) for reason in ctx.store.listdir(dropped)]
        docs = _samples(ctx, uris, lambda d: True, config.samples)
    elif config.mode == "anonymise":
        dummies = tuple(DUMMIES[t] for t in config.types)
        docs = _samples(
            ctx,
            [ctx.output_uri("documents")],
            lambda d: any(x in (d.get("text") or "") for x in dummies),
            config.samples,
        )
    else:  # audit: the untouched input documents that carry PII
        docs = _samples(ctx, [documents.uri], lambda d: bool(detect(d.get("text") or "")), config.samples)
    if docs:
        log_samples(ctx, docs, f"pii_{config.mode}")  # scrubbed there: raw PII never reaches MLflow


@stage(SPEC)
def pii(ctx: StageContext, config: PIIConfig, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    """Find e-mails, public IP addresses and phone numbers; anonymise them, drop the document or count."""
    documents = inputs["documents"]
    stats = filter_documents(ctx, documents, functools.partial(_make_blocks, config), desc="PII")
    ctx.log_metrics(stats.metrics())
    found = {t: stats.extra.get(t, 0) + stats.extra.get(f"url_{t}", 0) for t in config.types}
    ctx.log.info("%s: PII found %s in %d documents", config.mode, found, stats.extra["documents_with_pii"])
    headline: dict[str, float] = {
        "documents_out": stats.documents_out,
        "documents_with_pii": stats.extra.get("documents_with_pii", 0),
        "pii_found": sum(found.values()),
    }
    labels = load_labels(ctx.store, inputs.get("labels"))
    if labels:
        columns = ["url", "text", *(["language"] if _has_column(ctx, documents, "language") else [])]
        entering = iter_documents(ctx.store, documents.uri, columns=columns)
        truth = pii_truth(entering, labels, config.types, config.phone_default_regions)
        ctx.log_metrics({f"truth.{k}": v for k, v in truth.items()})
        ctx.tracker.log_dict(truth, "pii_truth.json")
        headline.update(
            pii_recall=truth["recall"],
            pii_precision=truth["precision"],
            pii_decoys_replaced=truth["decoys_replaced"],
        )
    ctx.report(**headline)
    _log_samples(ctx, config, documents)
    return documents_artifacts(ctx, stats)
