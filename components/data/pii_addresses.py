"""PII detectors for e-mail and IP addresses (`pii.py` says what counts as PII and why), and `Span`,
what every detector returns."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


def resolve_spans(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, earliest first, the longest at equal starts (an IPv6 address over the
    IPv4 address inside it)."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if not out or span.start >= out[-1].end:
            out.append(span)
    return out


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


def words_before(text: str, start: int, width: int = 60) -> list[str]:
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


def after_version_word(text: str, start: int) -> bool:
    words = words_before(text, start)
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
            or after_version_word(text, start)
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
