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
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from components.core.artifacts import Artifact
from components.core.config import StageConfig
from components.core.stage import StageContext, stage
from components.data.documents import Block, documents_artifacts, filter_documents, load_labels
from components.io.documents import Document, iter_documents, list_shards, ratio, read_documents

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
        if token == "." and i and tokens[i - 1].lower() in {"no", "nr", "ver", "rev", "v", "ref", "pp"}:
            continue  # "version no. 1.2.3.4", "pp. 491-7231": an abbreviation, not a sentence end
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


def _pattern_phones(text: str) -> list[Span]:
    """Our own patterns: the layouts of the module docstring, whatever the region (they also catch the
    NANP fiction range 555, which libphonenumber rightly calls invalid)."""
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


# --- phone numbers: libphonenumber and the document's region ---------------------------------------

# Where a document's numbers are most likely written in national format, by its language (fastText
# lid.176 codes). A language spoken in several countries names the few whose national formats differ
# most; a country-code TLD adds its own. Regions that share a plan (CA with US) need no entry.
LANGUAGE_REGIONS: dict[str, tuple[str, ...]] = {
    "en": ("US", "GB"),
    "de": ("DE", "AT", "CH"),
    "fr": ("FR", "BE", "CH"),
    "es": ("ES", "MX", "AR"),
    "it": ("IT",),
    "nl": ("NL", "BE"),
    "pt": ("PT", "BR"),
    "ja": ("JP",),
    "zh": ("CN", "TW"),
    "ko": ("KR",),
    "ru": ("RU",),
    "uk": ("UA",),
    "pl": ("PL",),
    "sv": ("SE",),
    "da": ("DK",),
    "no": ("NO",),
    "nb": ("NO",),
    "nn": ("NO",),
    "fi": ("FI",),
    "cs": ("CZ",),
    "sk": ("SK",),
    "hu": ("HU",),
    "ro": ("RO",),
    "bg": ("BG",),
    "el": ("GR",),
    "tr": ("TR",),
    "hr": ("HR",),
    "sl": ("SI",),
    "sr": ("RS",),
    "lt": ("LT",),
    "lv": ("LV",),
    "et": ("EE",),
    "he": ("IL",),
    "ar": ("SA", "EG"),
    "hi": ("IN",),
    "id": ("ID",),
    "ms": ("MY",),
    "th": ("TH",),
    "vi": ("VN",),
    "ca": ("ES",),
    "eu": ("ES",),
    "gl": ("ES",),
    "is": ("IS",),
    "ga": ("IE",),
}
# Used when a document gives no hint (no or an unmapped language, no country-code TLD): the largest
# web languages' countries. International numbers (+CC ...) are found whatever the region.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")
# Every region a hint can name: `scrub` looks with all of them, since what it cleans (samples bound for
# MLflow) comes without its document's language.
SCRUB_PHONE_REGIONS: tuple[str, ...] = tuple(
    dict.fromkeys(DEFAULT_PHONE_REGIONS + tuple(r for rs in LANGUAGE_REGIONS.values() for r in rs))
)
# Country-code TLDs that sites use as generic names: they say nothing about where the numbers are.
_GENERIC_CCTLDS = frozenset({"io", "co", "tv", "me", "ai", "fm", "ly", "to", "cc", "ws", "gg", "so", "am"})
_TLD_REGION = {"uk": "GB"}  # the one ccTLD that is not its ISO 3166 code


def url_region(url: str | None) -> str | None:
    """The region of a URL's country-code TLD (`shop.example.co.uk` -> GB), None for generic ones."""
    if not url:
        return None
    host = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return _tld_region(host.rstrip(".").rsplit(".", 1)[-1].lower())


@functools.lru_cache(maxsize=1024)
def _tld_region(tld: str) -> str | None:
    if len(tld) != 2 or not tld.isalpha() or tld in _GENERIC_CCTLDS:
        return None
    region = _TLD_REGION.get(tld, tld.upper())
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def phone_regions(
    language: str | None, url: str | None, default: tuple[str, ...] = DEFAULT_PHONE_REGIONS
) -> tuple[str, ...]:
    """Regions whose national formats to look for in a document: its domain's, then its language's;
    `default` when it has neither."""
    return _regions(url_region(url), (language or "").lower(), tuple(default))


@functools.lru_cache(maxsize=1024)
def _regions(domain: str | None, language: str, default: tuple[str, ...]) -> tuple[str, ...]:
    hinted = ((domain,) if domain else ()) + LANGUAGE_REGIONS.get(language, ())
    return tuple(dict.fromkeys(hinted)) or default


# The pre-filter: a number lies inside a run of digits and separators (libphonenumber's dashes too).
PHONE_CANDIDATE = re.compile(r"\d[\d \-.()/\u00a0\u2010-\u2015\u2212]{5,}\d")
_MIN_DIGITS = 7  # fewer are local numbers without an area code: not findable, not worth a parse
# How far past a run an extension may reach ("ext. 1234", "x12", "Durchwahl 12"); the window then
# runs on to the next space so that the matcher sees whole words.
_EXTENSION_REACH = 24
# Decoy guards for every phone candidate (`phone_decoy_reason`). A match of one of these kinds that
# overlaps a candidate makes it a decoy: dates (ISO, dotted, slashed; not a longer dotted run like
# `06.12.34.56.78`) and dotted quads without leading zeros (an IPv4 address or a version).
_DATE = re.compile(
    r"(?<![\d.\-/])(?:\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2(?:\d{4}|\d{2}))(?!\d|[.\-/]\d)"
)
_DOTTED_QUAD = re.compile(r"(?<![\w.])(?:[1-9]\d{0,2}|0)(?:\.(?:[1-9]\d{0,2}|0)){3}(?!\w|\.\d)")
_CURRENCY = r"(?:[$€£¥₹₩₽¢₺₴]|\b(?:USD|EUR|GBP|CHF|JPY|CNY|INR|BRL|AUD|CAD|SEK|NOK|DKK|PLN|MXN|Rs)\b\.?)"
_CURRENCY_BEFORE = re.compile(_CURRENCY + r"\s?$")
# After the number: a currency, or a decimal part ("12 345 678,50"; a phone number never has one).
_CURRENCY_OR_DECIMAL_AFTER = re.compile(r"\s?" + _CURRENCY + r"|[.,]\d|,-")
# One decimal mark and nothing else ("3.14159265", "(71.203795"): phone layouts group their digits.
_DECIMAL = re.compile(r"\(?\d+[.,]\d+\)?")
# A US ZIP+4 code; German numbers with a 4-digit subscriber part start with the trunk 0.
_ZIP_PLUS_4 = re.compile(r"[1-9]\d{4}-\d{4}")
# A range: two 4-digit groups joined by a dash ("1990-2000", "pp. 4762-9166"), or any spaced dash
# ("8963 - 8884"). Costs the 8-digit plans (DK, NO) written with one dash in the middle.
_RANGE = re.compile(r"\d{4}\s?[-\u2013]\s?\d{4}")
_SPACED_DASH = re.compile(r"\d\s[-\u2013\u2014]\s?\d|\d[-\u2013\u2014]\s\d")
# A payment card's layout (4 x 4 digits), and a version's: dots mixed with dashes ("9.37.864-88567")
# or a one-digit group after a dot ("10.0.14978.3239"; "1.800.555.0199" has its 1 first).
_CARD = re.compile(r"\d{4}([ \-])\d{4}\1\d{4}\1\d{1,4}")
_VERSION_LAYOUT = re.compile(r"^[^+]*(?:\d\.\d.*\d-\d|\d-\d.*\d\.\d|\d\.\d(?!\d))")
# Digits grouped in threes with one separator ("377 125 286", "315.097.852") read as a count; some
# plans write numbers so (ES/IT toll free "800 123 456", PL mobile "512 345 678"), so the text must
# say it is a phone number: a phone word earlier in the sentence, or `+`, a trunk 0 or a bracket.
_THOUSANDS = re.compile(r"[1-9]\d{0,2}([ .\u00a0])\d{3}(?:\1\d{3})+")
PHONE_CONTEXT = re.compile(
    r"\b(?:tel|tél|telefon|telephone|téléphone|teléfono|telefono|telefone|telefoon|phone|call|dial|fax"
    r"|mobile?|móvil|cellulare|cell|portable|handy|whatsapp|hotline|contact|kontakt|contacto|contatto"
    r"|tlf|tfn|puhelin|bel|ring|zadzwoń|komórka|infolinia|numer|número|numéro|nummer|numero)\b",
    re.IGNORECASE,
)
# A digit just before (one separator between): the match is the tail of a longer number (an IBAN,
# a card number, a grouped reference), not a phone number of its own.
_DIGIT_BEFORE = re.compile(r"\d[ .\-/\u00a0]?$")
# Words that name an identifier, not a number to call: "ISBN 0-306-40615-2", "Order no. 2015550123".
IDENTIFIER_WORDS = frozenset(
    {"isbn", "issn", "ean", "upc", "gtin", "sku", "doi", "order", "orders", "invoice", "receipt"}
    | {"tracking", "reference", "ref", "ticket", "case", "serial", "account", "iban", "customer", "item"}
    | {"article", "part", "model", "patent", "zip", "postcode", "plz", "pp", "page", "pages"}
    | {"bestellnummer", "rechnung", "seite", "seiten", "commande", "facture", "pedido"}
)
_ID_FILLERS = frozenset({"number", "no", "nr", "num", "id", "code"})


def _phone_windows(text: str, runs: list[re.Match]) -> list[tuple[int, int, bool]]:
    """Stretches of text around the candidate runs, merged: the matcher only parses these, a small
    part of a long page. Each starts one character early (a letter glued on rejects a match) and says
    whether all its runs start with '+' (then the region does not matter: one parse is enough)."""
    windows: list[tuple[int, int, bool]] = []
    for run in runs:
        if _DATE.fullmatch(run.group()) or _DOTTED_QUAD.fullmatch(run.group()):
            continue  # the guards would reject whatever the matcher found in it: skip the parse
        lo = run.start()
        while lo > 0 and run.start() - lo < 2 and text[lo - 1] in "+(":
            lo -= 1
        international = text[lo] == "+"
        lo = max(0, lo - 1)
        hi = min(len(text), run.end() + _EXTENSION_REACH)
        space = text.find(" ", hi)
        hi = len(text) if space < 0 or space - hi > _EXTENSION_REACH else space
        if windows and lo <= windows[-1][1]:
            last = windows[-1]
            windows[-1] = (last[0], max(last[1], hi), last[2] and international)
        else:
            windows.append((lo, hi, international))
    return windows


def _is_isbn13(digits: str) -> bool:
    if len(digits) != 13 or digits[:3] not in ("978", "979"):
        return False
    return sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0


def _after_identifier_word(text: str, start: int) -> bool:
    words = _words_before(text, start)
    if not words:
        return False
    if words[-1] in IDENTIFIER_WORDS:
        return True
    return len(words) == 2 and words[-1] in _ID_FILLERS and words[0] in IDENTIFIER_WORDS


def _overlaps(pattern: re.Pattern, text: str, start: int, end: int) -> bool:
    # 12 characters either side: enough to see a date or quad that begins before the match.
    nearby = pattern.finditer(text, max(0, start - 12), end + 12)
    return any(m.start() < end and m.end() > start for m in nearby)


def phone_decoy_reason(text: str, start: int, end: int) -> str | None:
    """Why a candidate phone number at text[start:end] is not one, or None. libphonenumber knows the
    numbering plans and our patterns the layouts; neither knows what else digits mean in running text."""
    value = text[start:end]
    before = text[max(0, start - 60) : start]
    if value.isdigit() and not PHONE_WORD_BEFORE.search(before[-20:]):
        return "bare_digits"  # an unformatted national number is an ID more often than a phone
    if _DIGIT_BEFORE.search(before[-2:]):
        return "longer_number"
    if _CURRENCY_BEFORE.search(before[-6:]) or _CURRENCY_OR_DECIMAL_AFTER.match(text, end):
        return "price"
    if _DECIMAL.fullmatch(value):
        return "decimal"
    if _ZIP_PLUS_4.fullmatch(value):
        return "zip_code"
    if _RANGE.fullmatch(value) or _SPACED_DASH.search(value):
        return "range"
    if _CARD.fullmatch(value):
        return "card"
    if _VERSION_LAYOUT.search(value):
        return "version"
    if _THOUSANDS.fullmatch(value) and not PHONE_CONTEXT.search(_sentence_before(before)):
        return "count"
    if _overlaps(_DATE, text, start, end):
        return "date"
    if _overlaps(_DOTTED_QUAD, text, start, end):
        return "ip_or_version"
    if _after_version_word(text, start):
        return "version"
    if _is_isbn13("".join(c for c in value if c.isdigit())):
        return "isbn"
    if _after_identifier_word(text, start):
        return "identifier"
    return None


def _sentence_before(before: str) -> str:
    """The part of `before` in the same sentence (after the last '. ', '!', '?' or line break)."""
    cut = max(before.rfind(". "), before.rfind("!"), before.rfind("?"), before.rfind("\n"))
    return before[cut + 1 :]


def _libphonenumber_phones(text: str, runs: list[re.Match], regions: tuple[str, ...]) -> list[Span]:
    """Valid numbers (libphonenumber's VALID leniency: the number exists in the region's plan, its
    national prefix is there where the plan requires it) in national format for each region, and in
    international format whatever the region; extensions are part of the match."""
    spans = []
    for lo, hi, international in _phone_windows(text, runs):
        window, wanted = text[lo:hi], regions[:1] if international else regions
        # Only short windows are cached: a merged window over a table of numbers would not repeat.
        match = _match_window if len(window) <= 256 else _match_window.__wrapped__
        for start, end in match(window, wanted):
            if phone_decoy_reason(text, lo + start, lo + end) is None:
                spans.append(Span(lo + start, lo + end, "phone"))
    return spans


@functools.lru_cache(maxsize=4096)  # a site's footer repeats its number on every page
def _match_window(window: str, regions: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """The matcher's (start, end) over `window` for each region in turn, until every digit of the
    window is inside a match (another region's parse would add nothing)."""
    found: dict[tuple[int, int], None] = {}
    for region in regions:
        for m in phonenumbers.PhoneNumberMatcher(window, region, leniency=phonenumbers.Leniency.VALID):
            found[(m.start, m.end)] = None
        if found and _all_digits_covered(window, found):
            break
    return tuple(found)


def _all_digits_covered(window: str, spans: Iterable[tuple[int, int]]) -> bool:
    covered = [False] * len(window)
    for start, end in spans:
        covered[start:end] = [True] * (end - start)
    return all(covered[i] for i, c in enumerate(window) if c.isdigit())


def _merge(spans: list[Span]) -> list[Span]:
    """Overlapping phone spans as one: what the patterns and the matcher found of the same number
    (the matcher's span has the extension, a pattern's may start at an earlier bracket)."""
    out: list[Span] = []
    for span in sorted(spans):
        if out and span.start < out[-1].end:
            out[-1] = Span(out[-1].start, max(out[-1].end, span.end), "phone")
        else:
            out.append(span)
    return out


def find_phones(text: str, regions: Iterable[str] = DEFAULT_PHONE_REGIONS) -> list[Span]:
    """Phone numbers: our patterns, and libphonenumber's matcher for `regions` (none: patterns only).
    Texts without a run of at least 7 digits, most of them, cost one regex scan."""
    runs = [r for r in PHONE_CANDIDATE.finditer(text) if sum(c.isdigit() for c in r.group()) >= _MIN_DIGITS]
    if not runs:
        return []
    # The patterns' own overlaps are settled as before (the earliest wins: "0958 2019" inside
    # "+44 20 7946 0958 2019" is not a second number); a match of the matcher's widens what it overlaps.
    spans = [s for s in _resolve(_pattern_phones(text)) if phone_decoy_reason(text, s.start, s.end) is None]
    regions = tuple(regions)
    if regions:
        spans += _libphonenumber_phones(text, runs, regions)
    return _merge(spans)


# --- detection and anonymisation -----------------------------------------------------------------

_FINDERS = {"email": find_emails, "ipv4": find_ipv4, "ipv6": find_ipv6}


def _find(text: str, types: Iterable[str], regions: Iterable[str]) -> list[Span]:
    found: list[Span] = []
    for kind in types:
        found += find_phones(text, regions) if kind == "phone" else _FINDERS[kind](text)
    return _resolve(found)


def _resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, earliest first, the longest at equal starts (an IPv6 address over the
    IPv4 address inside it)."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if not out or span.start >= out[-1].end:
            out.append(span)
    return out


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
    ctx: StageContext, dropped: Artifact, per_reason: int, columns: list[str] | None = None
) -> None:
    """The first `per_reason` dropped documents of each reason as `samples/dropped_<reason>.jsonl`
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
            log_samples(ctx, docs, f"dropped_{reason}", limit=per_reason)


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
    phone_default_regions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PHONE_REGIONS),
        description="Regions (ISO 3166 codes, as libphonenumber names them) whose national phone formats "
        "are looked for in a document that gives no hint of its own: neither a language with known regions "
        "(de -> DE, AT, CH; en -> US, GB; ...) nor a country-code TLD (.de, .co.uk). International numbers "
        "(+CC ...) are found in every document. An empty list: national formats only where hinted.",
    )
    samples: int = Field(10, ge=0, description="Documents logged to MLflow as samples (scrubbed first).")

    @field_validator("phone_default_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166 codes such as US, GB, DE")
        return regions


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
