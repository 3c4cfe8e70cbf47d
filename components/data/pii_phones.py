"""PII detectors for phone numbers: our patterns, libphonenumber's matcher for the regions a document
hints at, and the decoy guards every candidate passes (`pii.py` says what counts as a phone number and
why)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import phonenumbers

from components.data.pii_addresses import Span, after_version_word, resolve_spans, words_before
from components.data.pii_config import DEFAULT_PHONE_REGIONS

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
    words = words_before(text, start)
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
    if after_version_word(text, start):
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
    spans = [
        s for s in resolve_spans(_pattern_phones(text)) if phone_decoy_reason(text, s.start, s.end) is None
    ]
    regions = tuple(regions)
    if regions:
        spans += _libphonenumber_phones(text, runs, regions)
    return _merge(spans)
