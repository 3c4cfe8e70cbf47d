"""What makes the tiny world's crawl dirty: junk text, near-duplicate word edits, PII and its decoys.

The generator (`crawl.py`) decides which pages get dirt; this module only makes it: placeholder, code and
binary bodies, broken markup, the blocklisted hosts, word edits that keep every fact and PII value intact,
and contact paragraphs whose PII (e-mails, phones, public IPs) sits beside look-alike decoys (private IPs,
versions, dates, prices) that a PII filter must leave alone.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable
from importlib import resources

from components.world import templates_en as en

# --- junk text -----------------------------------------------------------------------------------


def lorem(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(en.LOREM_WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def code_line(rng: random.Random) -> str:
    w = en.CODE_WORDS
    kind = rng.randrange(3)
    if kind == 0:
        return json.dumps(
            {
                rng.choice(w): rng.randint(0, 9999),
                rng.choice(w): [rng.randint(0, 99) for _ in range(3)],
                rng.choice(w): rng.choice([True, False, None]),
            }
        )
    if kind == 1:
        return (
            f"function {rng.choice(w)}({rng.choice(w)}) {{ return {rng.choice(w)}.{rng.choice(w)} || {{}}; }}"
        )
    key, other, value = rng.choice(w), rng.choice(w), rng.choice(w)
    return f'var {rng.choice(w)} = {{"{key}": {rng.randint(0, 99)}, "{other}": "{value}"}};'


def break_markup(document: str) -> str:
    """Unclosed paragraphs and list items, a stray closing tag, an unterminated div, no </body></html>."""
    document = document.replace("</p>", "").replace("</li>", "").replace("</article>", "")
    document = document.replace('<main id="content">', '<main id="content"><div class=wrapper><span>', 1)
    document = document.replace("</main>", "</span></b></main", 1)
    return document.replace("</body>\n</html>\n", "")


def fake_pdf(rng: random.Random) -> bytes:
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\nstream\n"
        + rng.randbytes(1500)
        + (b"\nendstream\n%%EOF\n")
    )


def fake_png(rng: random.Random) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.randbytes(1200) + b"IEND\xaeB`\x82"


def blocklisted_hosts() -> list[str]:
    text = (resources.files("components.data") / "blocklists" / "domains.txt").read_text(encoding="utf-8")
    hosts = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [h for h in hosts if h]


# --- near-duplicate edits ------------------------------------------------------------------------

# Edits never touch names or numbers, so a near duplicate states the same facts as its original.
# One-way maps and disjoint word sets, so that two edits can never cancel each other out.
_INSERTABLE = ("indeed", "truly", "certainly", "today", "perhaps", "clearly", "surely", "now", "usually")
_SYNONYM_PAIRS = (
    "big:large small:little old:ancient famous:well-known many:numerous often:frequently city:town "
    "visitors:tourists long:lengthy quiet:calm people:folks about:around work:labour warm:mild "
    "narrow:tight good:fine still:yet great:huge roughly:approximately streets:roads houses:homes "
    "country:nation wide:broad"
)
_SYNONYMS = dict(pair.split(":") for pair in _SYNONYM_PAIRS.split())
_DELETABLE = frozenset({"very", "also", "quite", "really", "just", "even", "always"})


def edit_words(lines: list[str], rate: float, rng: random.Random, protected: list[str]) -> list[str]:
    """Apply round(rate * words) (at least one) word edits: synonym swap, deletion or insertion.

    No edit lands inside a `protected` phrase (the facts' values, names) or a number, and only lowercase
    words are swapped or deleted, so a near duplicate states the same facts and PII as its original.
    """
    tokens = [line.split(" ") for line in lines]
    total = sum(len(t) for t in tokens)
    for _ in range(max(1, round(rate * total))):
        line = rng.choices(tokens, weights=[len(t) for t in tokens])[0]
        spans = _protected_spans(line, protected)
        pos = rng.randrange(len(line))
        word = line[pos]
        core = word.rstrip(".,;:!?")
        free = not any(first <= pos <= last for first, last in spans)
        op = rng.random()
        if op < 0.45 and free and core.islower() and core in _SYNONYMS:
            line[pos] = _SYNONYMS[core] + word[len(core) :]
        elif op < 0.6 and free and word in _DELETABLE and len(line) > 3:
            del line[pos]
        else:
            gaps = [g for g in range(1, len(line) + 1) if _safe_gap(line, g, spans)]
            if gaps:
                line.insert(rng.choice(gaps), rng.choice(_INSERTABLE))
    return [" ".join(t) for t in tokens]


def _protected_spans(line: list[str], phrases: list[str]) -> list[tuple[int, int]]:
    """(first, last) token indices of every occurrence of a protected phrase in a tokenised line."""
    text = " ".join(line)
    starts = list(itertools.accumulate((len(t) + 1 for t in line), initial=0))  # char offset of each token
    spans = []
    for phrase in phrases:
        at = text.find(phrase)
        while at >= 0:
            first = max(i for i, offset in enumerate(starts[:-1]) if offset <= at)
            last = max(i for i, offset in enumerate(starts[:-1]) if offset < at + len(phrase))
            spans.append((first, last))
            at = text.find(phrase, at + 1)
    return spans


def _safe_gap(line: list[str], gap: int, spans: list[tuple[int, int]]) -> bool:
    """May a word go between line[gap-1] and line[gap]? Not inside a protected phrase, a run of capitalised
    words ("Arin Velmo"), a quoted title or a number such as "+44 20 7946 0958"."""
    if any(first < gap <= last for first, last in spans):
        return False
    before = line[gap - 1]
    after = line[gap] if gap < len(line) else ""
    if before[:1].isupper() and after[:1].isupper():
        return False
    if after.startswith('"') or (before.startswith('"') and not before.endswith(('"', '".', '",'))):
        return False
    return not any(ch.isdigit() for ch in before[-1:] + after[:1])


# --- PII -----------------------------------------------------------------------------------------

PHONE_FORMATS = (
    lambda r: f"+44 20 7946 0{r.randint(0, 999):03d}",
    lambda r: f"(555) {r.randint(100, 999)}-{r.randint(0, 9999):04d}",
    lambda r: f"555-{r.randint(100, 999)}-{r.randint(0, 9999):04d}",
    lambda r: f"+1-555-0{r.randint(10, 99)}-{r.randint(0, 9999):04d}",
    lambda r: f"+49 30 {r.randint(10_000_000, 99_999_999)}",
    lambda r: f"030 {r.randint(1_000_000, 9_999_999)}",
    lambda r: "+33 1 " + " ".join(f"{r.randint(10, 99)}" for _ in range(4)),
)
# First octets of ordinary public unicast space (no 0/10/100.64/127/169.254/172.16/192.0.2/192.168/198.18/
# 198.51.100/203.0.113/224+), so every generated address really is public.
_PUBLIC_FIRST_OCTETS = (23, 31, 45, 51, 62, 77, 81, 85, 91, 93, 104, 141, 151, 176, 185, 212, 217)
_IPV6_PREFIXES = ("2a01:4f8", "2606:4700", "2001:41d0", "2a00:1450", "2620:fe")


def _ipv4_public(r: random.Random) -> str:
    return f"{r.choice(_PUBLIC_FIRST_OCTETS)}.{r.randint(1, 254)}.{r.randint(0, 255)}.{r.randint(1, 254)}"


def _ipv6(r: random.Random) -> str:
    groups = [f"{r.randint(1, 0xFFFF):x}" for _ in range(3)]
    if r.random() < 0.5:
        return f"{r.choice(_IPV6_PREFIXES)}:{groups[0]}:{groups[1]}::{groups[2]}"
    return f"{r.choice(_IPV6_PREFIXES)}:" + ":".join(f"{r.randint(1, 0xFFFF):x}" for _ in range(6))


def _private_ipv4(r: random.Random) -> str:
    return r.choice(
        (
            f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}",
        )
    )


def _version(r: random.Random) -> str:
    v = f"{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(1, 30)}"
    return v if r.random() < 0.5 else "v" + v


def _date(r: random.Random) -> str:
    y, m, d = r.randint(2015, 2024), r.randint(1, 12), r.randint(1, 28)
    return r.choice((f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}/{d:02d}/{y}"))


def _price(r: random.Random) -> str:
    return r.choice(
        (
            f"${r.randint(1, 9)},{r.randint(0, 999):03d}.{r.randint(0, 99):02d}",
            f"€{r.randint(5, 99)},{r.randint(0, 99):02d}",
            f"{r.randint(5, 99)}.{r.randint(0, 99):02d} USD",
        )
    )


def _number(r: random.Random) -> str:
    return f"{r.randint(1_000, 99_999):,}" if r.random() < 0.5 else str(r.randint(1990, 2020))


_PII_SLOTS = {"email": "email", "phone": "phone", "ipv4": "ipv4", "ipv6": "ipv6"}
_DECOY_SLOTS = {
    "private_ipv4": ("private_ipv4", _private_ipv4),
    "loopback_ipv4": ("loopback_ipv4", lambda r: r.choice(("127.0.0.1", f"127.0.{r.randint(0, 9)}.1"))),
    "version": ("version", _version),
    "date": ("date", _date),
    "price": ("price", _price),
    "number": ("number", _number),
}


def pii_paragraph(
    rng: random.Random, next_phone: Callable[[], str]
) -> tuple[str, str, list[dict[str, str]], list[dict[str, str]]]:
    """A contact paragraph: e-mail and phone sentences, an IP address sentence and two decoy sentences."""
    email_s = [s for s in en.PII_SENTENCES if "{email}" in s]
    addr_s = [s for s in en.PII_SENTENCES if "{ipv4}" in s]
    decoy_s = [s for s in en.PII_SENTENCES if not re.search(r"\{(email|phone|ipv4|ipv6)\}", s)]
    phone_s = [s for s in en.PII_SENTENCES if "{phone}" in s and "{email}" not in s]
    chosen = [rng.choice(email_s)]
    if "{phone}" not in chosen[0] or rng.random() < 0.3:
        chosen.append(rng.choice(phone_s))
    chosen += [rng.choice(addr_s), *rng.sample(decoy_s, 2)]
    pii: list[dict[str, str]] = []
    decoys: list[dict[str, str]] = []
    sentences = []
    for template in chosen:
        values: dict[str, str] = {}
        for slot in re.findall(r"\{(\w+)\}", template):
            if slot == "email":
                values[slot] = _email(rng)
            elif slot == "phone":
                values[slot] = next_phone()
            elif slot == "ipv4":
                values[slot] = _ipv4_public(rng)
            elif slot == "ipv6":
                values[slot] = _ipv6(rng)
            if slot in _PII_SLOTS:
                pii.append({"type": _PII_SLOTS[slot], "value": values[slot]})
            else:
                kind, make = _DECOY_SLOTS[slot]
                values[slot] = make(rng)
                decoys.append({"type": kind, "value": values[slot]})
        sentences.append(template.format(**values))
    return rng.choice(en.PII_HEADINGS), " ".join(sentences), pii, decoys


def _email(rng: random.Random) -> str:
    user = f"{rng.choice(en.EMAIL_USERS)}{rng.choice(('.', '_', ''))}{rng.randint(1, 99)}"
    return f"{user}@{rng.choice(en.EMAIL_DOMAINS)}"
