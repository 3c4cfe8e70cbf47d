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
- **phone**: international numbers (`+44 20 7946 0958`, `+1-555-010-0199`, `+33 1 23 45 67 89`,
  `+44 (0)20 7946 0958`; 8..15 digits as E.164 allows), North American numbers (`(555) 123-4567`,
  `555-123-4567`, `1-800-555-0199`), national numbers with a trunk `0` and an area code
  (`030 1234567`, `020 7946 0958`, `(030) 1234567`, `030/1234567`, `06 12 34 56 78`; 8..12 digits) and
  8..15 plain digits right after a phone word (tel, phone, fax, mobile, call, ...). Separators are
  single spaces, hyphens, dots (not for trunk-0 numbers, so `01.04.2019` stays a date) and slashes
  after the area code. Not phones: dates (`2024-03-15`, `15.03.2024`, `03/15/2024`), prices
  (`$1,299.99`, `€12,50`, `19.99 USD`), years, `10,499`, 7-digit local numbers without area code.
  Limit: a number that follows a phone number after one space joins it while the total stays within
  the digit limit (without a numbering plan "+33 1 23 45 67 89 2019" cannot be split); beyond the
  limit it is cut off.

Dummy values (`DUMMIES`) are themselves not PII by these rules: `email@example.com` (RFC 2606 domain,
FineWeb's choice), `192.0.2.1` (RFC 5737 TEST-NET-1), `2001:db8::1` (RFC 3849 documentation prefix)
and `555-0100` (the NANP range reserved for fiction; 7 digits, below the phone detector's minimum).

URLs: the `url` column is scanned too, but only after the host (path, query, fragment), where e-mails
(also percent-encoded, `anna%40example.com`) and numbers end up in query strings. The host itself is
kept: a server's name or address identifies a site, not a person, and later stages join on the URL.
In anonymise mode PII in the path/query is replaced in place; in drop mode it drops the document.

`scrub(text)` anonymises every type with the dummies: `log_samples` uses it, so no PII reaches MLflow.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from components.core.artifacts import Artifact
from components.core.config import StageConfig
from components.core.stage import StageContext, stage
from components.data.documents import (
    Block,
    Document,
    documents_artifacts,
    filter_documents,
    iter_documents,
    list_shards,
    load_labels,
    log_samples,
    read_documents,
)

PIIType = Literal["email", "phone", "ipv4", "ipv6"]
PII_TYPES: tuple[str, ...] = ("email", "phone", "ipv4", "ipv6")  # also the order drop reasons are picked in
DUMMIES: dict[str, str] = {
    "email": "email@example.com",
    "phone": "555-0100",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


@dataclass(frozen=True, order=True)
class Span:
    """One PII value found at text[start:end]."""

    start: int
    end: int
    type: str


# --- e-mail ------------------------------------------------------------------------------------

_DOMAIN = r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}"
# The @ may be percent-encoded, as in URLs and text pasted from them (`?to=anna%40example.com`); the
# local part is lazy so that it ends at the first @ or %40.
EMAIL = re.compile(rf"(?<![\w.%+-])[^\W_][\w.%+-]*?(?:@|%40){_DOMAIN}(?![\w-])")


def find_emails(text: str) -> list[Span]:
    """E-mail addresses; the regex only runs around each '@' or '%40', which most texts lack."""
    spans: list[Span] = []
    ats = _at_signs(text)
    at = next(ats, -1)
    while at >= 0:
        after = at + (1 if text[at] == "@" else 3)
        if not (at and _local_char(text[at - 1]) and text[after : after + 1].isalnum()):
            at = next(ats, -1)  # "@user", "a @ b": no address around this one; skip the regex
            continue
        # Back to where the local part starts (at most 64 characters, RFC 5321), then one anchored
        # match: the look-behind still sees what precedes `start`.
        start = at
        while start > 0 and at - start < 64 and _local_char(text[start - 1]):
            start -= 1
        m = EMAIL.match(text, start, min(len(text), at + 3 + 256))  # a domain has at most 253
        if m:
            if m.group().lower() != DUMMIES["email"]:
                spans.append(Span(m.start(), m.end(), "email"))
            while 0 <= at < m.end():
                at = next(ats, -1)
        else:
            at = next(ats, -1)
    return spans


def _local_char(c: str) -> bool:
    return c.isalnum() or c in "._%+-"


def _at_signs(text: str) -> Iterator[int]:
    """Positions of '@' and '%40' in text order (each string searched once: linear in the text)."""
    plain, encoded = text.find("@"), text.find("%40")
    while plain >= 0 or encoded >= 0:
        if encoded < 0 or 0 <= plain < encoded:
            yield plain
            plain = text.find("@", plain + 1)
        else:
            yield encoded
            encoded = text.find("%40", encoded + 1)


# --- IPv4 and the version rule --------------------------------------------------------------------

IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
VERSION_WORDS = frozenset(
    {"version", "versions", "ver", "v", "release", "releases", "build", "firmware", "fw", "revision", "rev"}
    | {"patch", "kernel", "driver", "bios"}
)
_FILLER_WORDS = frozenset({"is", "was", "number", "no", "nr", "of", "to", "from"})
# Words, and the marks that end a sentence (a '.' between or after digits is part of a number).
_WORD_OR_END = re.compile(r"[^\W\d_]+|[!?;\n]|(?<!\d)\.")
# What may stand between two versions of a list: "1.2.3.4, 1.2.3.5 and 1.2.3.6", "from 1.2 to 1.3".
_LIST_GAP = re.compile(r"\s*(?:,|/|&|-|\band\b|\bor\b|\bto\b|\bthrough\b|\bthen\b)?\s*(?:and\s+|or\s+)?")
_PRE_RELEASE = re.compile(r"-[^\W\d_]")


def _words_before(text: str, start: int, width: int = 60) -> list[str]:
    """The last two words before `start` in its own sentence, lower-cased."""
    words: list[str] = []
    tokens = _WORD_OR_END.findall(text, max(0, start - width), start)
    for i in range(len(tokens) - 1, -1, -1):
        token = tokens[i]
        if token == "." and i and tokens[i - 1].lower() in {"no", "nr", "ver", "rev", "v"}:
            continue  # "version no. 1.2.3.4": an abbreviation, not a sentence end
        if not token[0].isalpha():
            break
        words.insert(0, token.lower())
        if len(words) == 2:
            break
    return words


def _after_version_word(text: str, start: int) -> bool:
    words = _words_before(text, start)
    if not words:
        return False
    if words[-1] in VERSION_WORDS:
        return True
    return len(words) == 2 and words[-1] in _FILLER_WORDS and words[0] in VERSION_WORDS


def _ipv4_matches(text: str) -> Iterator[re.Match]:
    """IPV4 matches, found from each '.' between digits: a literal search is many times faster than
    letting the regex try every position of a long text."""
    dot = text.find(".")
    while dot >= 0:
        if dot and text[dot - 1].isdigit() and text[dot + 1 : dot + 2].isdigit():
            start = dot - 1
            while start > 0 and dot - start < 3 and text[start - 1].isdigit():
                start -= 1
            m = IPV4.match(text, start)  # the look-behind still sees the text before `start`
            if m:
                yield m
                dot = text.find(".", m.end())
                continue
        dot = text.find(".", dot + 1)


def is_public_ipv4(value: str) -> bool:
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:  # an octet > 255 or with a leading zero: not an address
        return False
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified)


def find_ipv4(text: str) -> list[Span]:
    """Public IPv4 addresses that are not version strings (rules (a)-(d) in the module docstring);
    (a) and the `.number` part of (b) are in the regex's look-arounds."""
    spans = []
    last_version_end = -1
    for m in _ipv4_matches(text):
        start, end = m.span()
        version = (
            _PRE_RELEASE.match(text, end) is not None
            or _after_version_word(text, start)
            or (last_version_end >= 0 and _LIST_GAP.fullmatch(text, last_version_end, start) is not None)
        )
        if version:
            last_version_end = end
            continue
        if is_public_ipv4(m.group()):
            spans.append(Span(start, end, "ipv4"))
    return spans


# --- IPv6 ----------------------------------------------------------------------------------------

# A run of hex digits, dots and colons with at least one colon; validated by `ipaddress`.
IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9A-Fa-f.]*+:[0-9A-Fa-f.:]*+(?!\w)")


_HEX_OR_DOT = frozenset("0123456789abcdefABCDEF.")


def _ipv6_matches(text: str) -> Iterator[re.Match]:
    """IPV6_CANDIDATE matches, found from each ':' (the leftmost colon of a run comes first)."""
    colon = text.find(":")
    while colon >= 0:
        start = colon
        while start > 0 and colon - start < 45 and text[start - 1] in _HEX_OR_DOT:
            start -= 1
        m = IPV6_CANDIDATE.match(text, start)
        if m and m.end() > colon:
            yield m
            colon = text.find(":", m.end())
        else:
            colon = text.find(":", colon + 1)


def is_public_ipv6(value: str) -> bool:
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    if addr.ipv4_mapped is not None:
        return is_public_ipv4(str(addr.ipv4_mapped))
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_site_local)


def find_ipv6(text: str) -> list[Span]:
    spans = []
    for m in _ipv6_matches(text):
        value = m.group()
        if value.count(":") < 2:
            continue
        end = m.end()
        # A sentence's full stop, or a single colon before a label ("at 2001:db8::1: ..."), is not part of it.
        while value.endswith("."):
            value, end = value[:-1], end - 1
        if value.endswith(":") and not value.endswith("::"):
            value, end = value[:-1], end - 1
        if is_public_ipv6(value):
            spans.append(Span(m.start(), end, "ipv6"))
    return spans


# --- phone numbers --------------------------------------------------------------------------------

_GROUP_SEP = re.compile(r"[^\d]+")
# +CC then groups (an optional "(0)" trunk marker, bracketed area codes), single separators between.
PHONE_INTL = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .\-\u00a0]?\(0\))?(?:[ .\-\u00a0]?(?:\(\d{1,5}\)|\d{1,5})){1,7}(?![\w]|[.\-]\d)"
)
# North American: optional 1, area code (bracketed or not), exchange, line.
PHONE_NANP = re.compile(
    r"(?<![\w+.\-/])(?:1[ .\-])?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?![\w]|[.\-/]\d)"
)
# National with a trunk 0 and an area code; no dots (dates), '/' only after the area code.
PHONE_TRUNK = re.compile(
    r"(?<![\w+.\-/])(?:\(0\d{1,4}\)[ \-]?|0\d{1,4}[ \-/])\d{2,8}(?:[ \-]\d{2,8}){0,3}(?![\w]|[.\-/,]\d)"
)
# Every phone number lies inside one such run of digits and separators; the patterns above only run
# inside runs with enough digits, which keeps the scan over ordinary text to a single cheap regex.
# (It starts at a digit: a pattern that starts with a plain character class is scanned much faster
# by `re`; a leading '+' or '(' is added back by hand.)
PHONE_RUN = re.compile(r"\d[\d \-.()/\u00a0]{5,}\d")
# A plain run of digits right after a phone word: "Tel. 0301234567", "phone: +4930123456".
PHONE_WORD_BEFORE = re.compile(
    r"\b(?:tel|telephone|phone|fax|mobile|mob|cell|call|dial|whatsapp)\b\.?:?\s{0,3}$", re.IGNORECASE
)
PHONE_PLAIN = re.compile(r"\+?\d{8,15}(?![\w]|[.,]\d)")


def _trim_digits(value: str, start: int, lo: int, hi: int) -> Span | None:
    """Accept a phone match whose digit count is in [lo, hi], dropping trailing groups that overshoot
    (a year or count that happened to follow the number after one space)."""
    while True:
        digits = sum(c.isdigit() for c in value)
        if digits <= hi:
            return Span(start, start + len(value), "phone") if digits >= lo else None
        seps = list(_GROUP_SEP.finditer(value))
        if not seps:
            return None
        value = value[: seps[-1].start()].rstrip("(")


def find_phones(text: str) -> list[Span]:
    spans = []
    for run in PHONE_RUN.finditer(text):
        if sum(c.isdigit() for c in run.group()) < 8:
            continue
        # Two characters past the run, so that the patterns' look-aheads see what follows it.
        lo, hi = run.start(), min(len(text), run.end() + 2)
        while lo > 0 and run.start() - lo < 2 and text[lo - 1] in "+(":
            lo -= 1
        for pattern, fewest, most in ((PHONE_INTL, 8, 15), (PHONE_NANP, 10, 11), (PHONE_TRUNK, 8, 12)):
            for m in pattern.finditer(text, lo, hi):
                span = _trim_digits(m.group(), m.start(), fewest, most)
                if span:
                    spans.append(span)
        plain = PHONE_PLAIN.match(text, lo, hi)
        if plain and PHONE_WORD_BEFORE.search(text[max(0, lo - 20) : lo]):
            spans.append(Span(plain.start(), plain.end(), "phone"))
    return spans


# --- detection and anonymisation -----------------------------------------------------------------

_FINDERS = {"email": find_emails, "ipv4": find_ipv4, "ipv6": find_ipv6, "phone": find_phones}


def _resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, earliest first, the longest at equal starts (an IPv6 address over the
    IPv4 address inside it)."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if not out or span.start >= out[-1].end:
            out.append(span)
    return out


def detect(text: str, types: Iterable[str] = PII_TYPES) -> list[Span]:
    """Every PII value of the wanted types in `text`, as non-overlapping spans in text order."""
    if not text:
        return []
    found: list[Span] = []
    for kind in types:
        found += _FINDERS[kind](text)
    return _resolve(found)


def detect_in_url(url: str, types: Iterable[str] = PII_TYPES) -> list[Span]:
    """PII in a URL's path, query and fragment (never in the host; see the module docstring)."""
    if not url:
        return []
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3 if scheme_end >= 0 else 0)
    if path_start < 0:
        return []
    rest = url[path_start:]
    found: list[Span] = []
    for kind in types:
        found += _FINDERS[kind](rest)
    return [Span(s.start + path_start, s.end + path_start, s.type) for s in _resolve(found)]


def replace_spans(text: str, spans: list[Span]) -> str:
    parts, pos = [], 0
    for span in spans:
        parts += [text[pos : span.start], DUMMIES[span.type]]
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


def anonymise(text: str, types: Iterable[str] = PII_TYPES) -> str:
    return replace_spans(text, detect(text, types))


def scrub(text: str) -> str:
    """Anonymise every PII type with the fixed dummies (what samples logged to MLflow go through)."""
    return anonymise(text) if text else text


# --- the stage ------------------------------------------------------------------------------------


class PIIConfig(StageConfig):
    """What the `pii` stage looks for and what it does with it."""

    mode: Literal["anonymise", "drop", "audit"] = Field(
        "anonymise",
        description="anonymise: replace each value with its type's fixed dummy (FineWeb's approach); "
        "drop: drop the document (reason pii.contains_<type>, first of email, phone, ipv4, ipv6); "
        "audit: only count.",
    )
    types: list[PIIType] = Field(
        default_factory=lambda: list(PII_TYPES),
        min_length=1,
        description="PII types to detect: email, phone, ipv4 (public only), ipv6 (global only).",
    )
    scan_urls: bool = Field(
        True,
        description="Also look in each URL's path, query and fragment (never the host); in anonymise mode "
        "the URL is rewritten there too.",
    )
    samples: int = Field(10, ge=0, description="Documents logged to MLflow as samples (scrubbed first).")


class PIIBlock(Block):
    """Detects PII in `text` (and the URL), then anonymises, drops or only counts."""

    name = "pii"

    def __init__(self, config: PIIConfig):
        self.mode = config.mode
        self.types = tuple(config.types)
        self.scan_urls = config.scan_urls
        self.counters: Counter = Counter()

    def process(self, doc: Document) -> str | None:
        text = doc.get("text")
        spans = detect(text, self.types) if isinstance(text, str) else []
        url = doc.get("url")
        url_spans = detect_in_url(url, self.types) if self.scan_urls and isinstance(url, str) else []
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


def pii_truth(docs: Iterable[Document], labels: dict[str, dict], types: Iterable[str] = PII_TYPES) -> dict:
    """Detector quality against the tiny world's labels, over the documents that enter the stage.

    recall: labelled PII values (of the wanted types, present in the input text) that no longer appear
    verbatim once the text is anonymised; precision: detected spans whose text is one of the document's
    labelled PII values; decoys_replaced: labelled decoy values present before and gone after. The same
    numbers describe all three modes (in drop mode, anonymising is what decides the drop).
    """
    types = tuple(types)
    values, removed, absent = Counter(), Counter(), 0
    spans_found, spans_true = Counter(), Counter()
    decoys_present, decoys_replaced = Counter(), Counter()
    docs_pii = docs_flagged = docs_flagged_pii = 0
    for doc in docs:
        label = labels.get(doc.get("url") or "")
        text = doc.get("text")
        if label is None or not isinstance(text, str):
            continue
        spans = detect(text, types)
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

    def ratio(a: int, b: int) -> float:
        return a / b if b else 1.0

    metrics: dict[str, float] = {
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


@stage(
    "pii",
    config=PIIConfig,
    inputs=("documents",),
    optional_inputs=("labels",),
    outputs=("documents", "dropped"),
    cpus=0,
    passthrough={"documents": "documents"},
)
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
        entering = iter_documents(ctx.store, documents.uri, columns=["url", "text"])
        truth = pii_truth(entering, labels, config.types)
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
