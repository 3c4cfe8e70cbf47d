"""Phone PII recall on numbers from a third-party source, and the decoys the PII stage must leave alone.

    .venv/bin/python tests/bench/pii_recall.py
    .venv/bin/python tests/bench/pii_recall.py --decoys 5000 --seed 1

**Numbers.** libphonenumber's own example numbers (`phonenumbers.example_number_for_type`: fixed line,
mobile, toll free) for 14 regions, each formatted by libphonenumber in national, international and E.164
format, without and with an extension (123, written as libphonenumber writes it for the region, e.g.
" ext. 123"; E.164 has no extension syntax, so its number gets the national suffix), inside five
sentences. Each sentence is one document with the region's language and a URL on its country-code TLD,
as the pipeline sees them. A number counts as found when one phone span covers all of it, the extension
included. Recall is shown for four ways of picking the regions:

- lang+domain: the document's language and its URL's TLD (what the stage does);
- language: the language only (the URL is a .com);
- no hint: neither, so the stage's default regions (US, GB, DE, FR);
- patterns: our regexes alone, no libphonenumber (the detector before it; what the issue measured).

**Decoys.** What must never be replaced: the decoy sentences of tests/data/test_pii.py, the tiny world's
labelled decoys (its crawl generated here), and `--decoys` generated ones of 12 kinds (versions, dates,
prices, ISBNs, order numbers, IP addresses, ZIP codes, counts and decimals, ranges and times,
coordinates, bank numbers, IDs), each in a sentence, each checked under a random region's hints and
under `scrub`'s every-region search. A decoy counts as touched when anonymising changes its sentence.

**Throughput.** The PII block over the tiny world's main texts (language and URL from its labels), with
phone patterns only and with libphonenumber: documents per CPU-second, each the fastest of 3 runs.

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from components.data.pii import PIIBlock, anonymise, detect, pii_truth
from components.data.pii_config import DEFAULT_PHONE_REGIONS, PII_TYPES, PIIConfig
from components.data.pii_phones import SCRUB_PHONE_REGIONS, _match_window, phone_regions
from components.world.crawl import CrawlConfig, generate_crawl

ROOT = Path(__file__).resolve().parents[2]

# region, language, a URL on the region's country-code TLD
REGIONS = [
    ("US", "en", "https://www.example.us/contact"),
    ("GB", "en", "https://www.example.co.uk/contact"),
    ("DE", "de", "https://www.beispiel.de/kontakt"),
    ("FR", "fr", "https://www.exemple.fr/contact"),
    ("ES", "es", "https://www.ejemplo.es/contacto"),
    ("IT", "it", "https://www.esempio.it/contatti"),
    ("NL", "nl", "https://www.voorbeeld.nl/contact"),
    ("JP", "ja", "https://www.example.jp/contact"),
    ("BR", "pt", "https://www.exemplo.com.br/contato"),
    ("IN", "en", "https://www.example.in/contact"),
    ("AU", "en", "https://www.example.com.au/contact"),
    ("CH", "de", "https://www.beispiel.ch/kontakt"),
    ("SE", "sv", "https://www.exempel.se/kontakt"),
    ("PL", "pl", "https://www.przyklad.pl/kontakt"),
]
TYPES = {
    "fixed": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "toll_free": PhoneNumberType.TOLL_FREE,
}
FORMATS = {
    "national": PhoneNumberFormat.NATIONAL,
    "international": PhoneNumberFormat.INTERNATIONAL,
    "e164": PhoneNumberFormat.E164,
}
SENTENCES = (
    "For bookings call {n} during office hours.",
    "Telefon: {n}",
    "Our office ({n}) is open from 9 to 5.",
    "Questions? {n}, or write to us.",
    "Reach the front desk at {n}. We answer within a day.",
)
GENERIC_URL = "https://www.example.com/contact"
HINTS: dict[str, Callable[[str, str], tuple[str, ...]]] = {
    "lang+domain": lambda lang, url: phone_regions(lang, url),
    "language": lambda lang, url: phone_regions(lang, GENERIC_URL),
    "no hint": lambda lang, url: phone_regions(None, GENERIC_URL),
    "patterns": lambda lang, url: (),
}


# --- the numbers -----------------------------------------------------------------------------------


def formatted(region: str, kind: PhoneNumberType, fmt: PhoneNumberFormat, ext: bool) -> str | None:
    """libphonenumber's example number of `kind` for `region`, written by libphonenumber in `fmt`."""
    number = phonenumbers.example_number_for_type(region, kind)
    if number is None:
        return None
    text = phonenumbers.format_number(number, fmt)
    if not ext:
        return text
    with_ext = copy.copy(number)
    with_ext.extension = "123"
    if fmt != PhoneNumberFormat.E164:
        return phonenumbers.format_number(with_ext, fmt)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    return text + phonenumbers.format_number(with_ext, PhoneNumberFormat.NATIONAL)[len(national) :]


def found(text: str, start: int, end: int, regions: tuple[str, ...]) -> bool:
    return any(
        s.type == "phone" and s.start <= start and s.end >= end for s in detect(text, PII_TYPES, regions)
    )


def recall_table() -> None:
    hits: dict[str, Counter] = {h: Counter() for h in HINTS}
    totals: Counter = Counter()
    misses: list[str] = []
    for region, lang, url in REGIONS:
        for kind in TYPES.values():
            for fmt_name, fmt in FORMATS.items():
                for ext in (False, True):
                    number = formatted(region, kind, fmt, ext)
                    if number is None:
                        continue
                    for template in SENTENCES:
                        text = template.format(n=number)
                        start = text.index(number)
                        key = (region, fmt_name, ext)
                        totals[key] += 1
                        for hint, pick in HINTS.items():
                            ok = found(text, start, start + len(number), pick(lang, url))
                            hits[hint][key] += ok
                            if not ok and hint == "lang+domain":
                                misses.append(f"{region} {text!r}")

    def recall(hint: str, want: Callable[[tuple], bool]) -> str:
        n = sum(v for k, v in totals.items() if want(k))
        return f"{sum(v for k, v in hits[hint].items() if want(k)) / n:.3f}" if n else "-"

    print(f"Phone recall, libphonenumber example numbers, {sum(totals.values())} sentences")
    columns = [(f, e) for f in FORMATS for e in (False, True)]
    short = {"national": "nat", "international": "intl", "e164": "e164"}
    head = " ".join(f"{short[f] + ('+ext' if e else ''):>10}" for f, e in columns)
    print(f"\nlang+domain hints, by format ('+ext': with an extension)\n{'region':8}{head} {'all':>7}")
    for region, _, _ in REGIONS:
        cells = " ".join(
            f"{recall('lang+domain', lambda k, f=f, e=e, r=region: k == (r, f, e)):>10}" for f, e in columns
        )
        print(f"{region:8}{cells} {recall('lang+domain', lambda k, r=region: k[0] == r):>7}")
    cells = " ".join(f"{recall('lang+domain', lambda k, f=f, e=e: k[1:] == (f, e)):>10}" for f, e in columns)
    print(f"{'all':8}{cells} {recall('lang+domain', lambda k: True):>7}")

    print(f"\nby region and hint\n{'region':8}" + "".join(f"{h:>13}" for h in HINTS))
    for region, _, _ in REGIONS:
        print(f"{region:8}" + "".join(f"{recall(h, lambda k, r=region: k[0] == r):>13}" for h in HINTS))
    print(f"{'all':8}" + "".join(f"{recall(h, lambda k: True):>13}" for h in HINTS))
    print(f"{'  no ext':8}" + "".join(f"{recall(h, lambda k: not k[2]):>13}" for h in HINTS))
    print(f"{'  ext':8}" + "".join(f"{recall(h, lambda k: k[2]):>13}" for h in HINTS))
    for line in misses[:15]:
        print("  missed (lang+domain):", line)


# --- the decoys ------------------------------------------------------------------------------------


def _digits(r: random.Random, n: int) -> str:
    return "".join(str(r.randint(0, 9)) for _ in range(n))


def _isbn13(r: random.Random) -> str:
    body = "978" + _digits(r, 9)
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    return f"{body[:3]}-{body[3]}-{body[4:7]}-{body[7:]}-{check}"


def _isbn10(r: random.Random) -> str:
    body = _digits(r, 9)
    check = (11 - sum(int(d) * (10 - i) for i, d in enumerate(body)) % 11) % 11
    return f"{body[0]}-{body[1:4]}-{body[4:9]}-{'X' if check == 10 else check}"


def _date(r: random.Random) -> str:
    y, m, d, hh, mm = (
        r.randint(1950, 2030),
        r.randint(1, 12),
        r.randint(1, 28),
        r.randint(0, 23),
        r.randint(0, 59),
    )
    return r.choice(
        (
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}.{m:02d}.{y}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}/{m:02d}/{y}",
            f"{y}/{m:02d}/{d:02d}",
            f"{d:02d}-{m:02d}-{y}",
            f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:00",
            f"{d:02d}.{m:02d}.{y} {hh:02d}:{mm:02d}",
            f"{y}{m:02d}{d:02d}",
            f"{d}.{m}.{y % 100:02d}",
        )
    )


def _price(r: random.Random) -> str:
    big, cents = r.randint(1_000, 99_999_999), r.randint(0, 99)
    us, eu, fr = f"{big:,}", f"{big:,}".replace(",", "."), f"{big:,}".replace(",", " ")
    return r.choice(
        (
            f"${us}.{cents:02d}",
            f"€{eu},{cents:02d}",
            f"{eu},{cents:02d} €",
            f"{fr},{cents:02d} EUR",
            f"USD {us}.{cents:02d}",
            f"£ {fr}",
            f"R$ {eu},{cents:02d}",
            f"{us}.{cents:02d} USD",
            f"¥{big}",
            f"CHF {big}.-",
        )
    )


# kind -> (value maker, sentences it goes into)
DECOY_KINDS: dict[str, tuple[Callable[[random.Random], str], tuple[str, ...]]] = {
    "version": (
        lambda r: r.choice(
            (
                f"{r.randint(1, 20)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 999)}",
                f"v{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 99)}.{r.randint(1000, 9999)}",
                f"10.0.{r.randint(10000, 22999)}.{r.randint(100, 4999)}",
                f"{r.randint(1, 9)}.{r.randint(0, 99)}.{r.randint(0, 999)}-{r.randint(1000, 99999)}",
            )
        ),
        ("Tested with version {v} of the app.", "Windows {v} is required.", "Build {v} fixes the bug."),
    ),
    "date": (_date, ("Last updated on {v}.", "Published {v}, revised since.", "Der Termin ist am {v}.")),
    "price": (_price, ("It costs {v} per person.", "Total: {v}", "Prix : {v} TTC.")),
    "isbn": (
        lambda r: r.choice(
            (_isbn13(r), f"ISBN {_isbn13(r)}", f"ISBN {_isbn10(r)}", f"ISBN-13: {_isbn13(r)}")
        ),
        ("The book ({v}) is out of print.", "See {v} in the catalogue.", "Printed edition: {v}."),
    ),
    "order_number": (
        lambda r: r.choice(
            (
                f"order #{_digits(r, 3)}-{_digits(r, 7)}-{_digits(r, 7)}",
                f"order no. {r.randint(2000000000, 9999999999)}",
                f"invoice {r.randint(2015, 2025)}-{_digits(r, 6)}",
                f"Bestellnummer {r.randint(10**9, 10**11)}",
                f"ticket {_digits(r, 4)}-{_digits(r, 4)}-{_digits(r, 4)}",
                f"reference {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)}",
                f"#{r.randint(10**7, 10**10)}",
                f"tracking number 1Z{_digits(r, 3)}AA{_digits(r, 10)}",
            )
        ),
        ("Your {v} has shipped.", "Please quote {v} in any reply.", "We received {v} today."),
    ),
    "ip": (
        lambda r: r.choice(
            (
                f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}",
                f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}:{r.randint(1024, 65535)}",
                f"127.0.{r.randint(0, 9)}.1",
                f"203.0.113.{r.randint(1, 254)}",
                f"100.{r.randint(64, 127)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            )
        ),
        ("The printer is at {v} on the office network.", "Connect to {v} from inside.", "Gateway: {v}"),
    ),
    "zip": (
        lambda r: r.choice(
            (
                f"{r.randint(10000, 99999)}-{_digits(r, 4)}",
                f"{r.randint(10000, 99999)}",
                f"{_digits(r, 2)}-{_digits(r, 3)}",
            )
        ),
        ("Ship to Springfield, IL {v}.", "Postal code {v}", "Our address: 12 Main St, {v} Springfield."),
    ),
    "count": (
        lambda r: r.choice(
            (
                f"{r.randint(10**6, 10**9):,}",
                f"{r.randint(10**6, 10**9):,}".replace(",", "."),
                f"{r.randint(10**6, 10**9):,}".replace(",", " "),
                f"{r.randint(0, 9)}.{_digits(r, 8)}",
                f"{r.randint(10, 99)},{_digits(r, 7)}",
                f"+{r.randint(1, 99)}.{_digits(r, 2)}%",
            )
        ),
        ("The city has {v} inhabitants.", "Population: {v}", "A change of {v} since last year."),
    ),
    "range": (
        lambda r: r.choice(
            (
                f"{r.randint(1900, 2000)}-{r.randint(2001, 2024)}",
                f"{r.randint(1900, 2000)}–{r.randint(2001, 2024)}",
                f"{r.randint(6, 9):02d}:{r.choice('03')}0-{r.randint(17, 20)}:{r.choice('03')}0",
                f"pp. {r.randint(100, 4999)}-{r.randint(5000, 9999)}",
                f"{r.randint(1000, 9999)} - {r.randint(1000, 9999)}",
            )
        ),
        ("Open {v} on weekdays.", "The war lasted {v}.", "See {v} for the proof."),
    ),
    "coordinates": (
        lambda r: r.choice(
            (
                f"{r.uniform(-89, 89):.4f}, {r.uniform(-179, 179):.4f}",
                f"{r.uniform(0, 89):.6f} {r.uniform(0, 179):.6f}",
                f"{r.randint(0, 89)}° {r.randint(0, 59)}′ {r.randint(0, 59)}″ N",
            )
        ),
        ("The summit is at {v}.", "GPS: {v}", "Coordinates ({v}) of the hut."),
    ),
    "bank": (
        lambda r: r.choice(
            (
                f"DE{_digits(r, 2)} " + " ".join(_digits(r, 4) for _ in range(4)) + f" {_digits(r, 2)}",
                f"IBAN FR{_digits(r, 2)} " + " ".join(_digits(r, 4) for _ in range(4)) + f" {_digits(r, 3)}",
                f"4{_digits(r, 3)} {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)}",
                f"sort code {_digits(r, 2)}-{_digits(r, 2)}-{_digits(r, 2)}, account {_digits(r, 8)}",
            )
        ),
        ("Pay to {v}.", "Bank details: {v}", "Transfer the fee to {v} by Friday."),
    ),
    "identifier": (
        lambda r: r.choice(
            (
                f"SKU {_digits(r, 13)}",
                f"EAN {_digits(r, 13)}",
                f"doi:10.{r.randint(1000, 9999)}/{_digits(r, 7)}",
                f"PMID {r.randint(10**7, 4 * 10**7)}",
                f"case {r.randint(2015, 2025)}/{_digits(r, 6)}",
                f"serial {_digits(r, 4)}-{_digits(r, 4)}-{_digits(r, 4)}",
            )
        ),
        ("Cite {v} when you write.", "The item ({v}) is back.", "Label: {v}"),
    ),
}


def generated_decoys(n: int, seed: int) -> list[tuple[str, str]]:
    r = random.Random(seed)
    kinds = list(DECOY_KINDS)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        make, sentences = DECOY_KINDS[kind]
        out.append((kind, r.choice(sentences).format(v=make(r))))
    return out


def test_suite_decoys() -> list[str]:
    spec = importlib.util.spec_from_file_location("test_pii", ROOT / "tests" / "data" / "test_pii.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.DECOYS)


def decoy_report(n: int, seed: int, tiny_labels: dict[str, dict]) -> None:
    r = random.Random(seed + 1)
    cases = [("tests", text) for text in test_suite_decoys()] + generated_decoys(n, seed)
    touched_hint: Counter = Counter()
    touched_scrub: Counter = Counter()
    totals: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for kind, text in cases:
        _, lang, url = r.choice(REGIONS)
        totals[kind] += 1
        for counter, regions in (
            (touched_hint, phone_regions(lang, url)),
            (touched_scrub, SCRUB_PHONE_REGIONS),
        ):
            out = anonymise(text, PII_TYPES, regions)
            if out != text:
                counter[kind] += 1
                if len(examples[kind]) < 3 and not any(
                    line.startswith(repr(text)) for line in examples[kind]
                ):
                    examples[kind].append(f"{text!r} -> {out!r}")
    print(f"\nDecoys: {len(cases)} sentences ({len(cases) - n} from tests/data/test_pii.py, {n} generated)")
    print(f"{'kind':14}{'sentences':>10}{'touched (doc hints)':>21}{'touched (scrub: all regions)':>30}")
    for kind in totals:
        print(f"{kind:14}{totals[kind]:>10}{touched_hint[kind]:>21}{touched_scrub[kind]:>30}")
    print(
        f"{'all':14}{sum(totals.values()):>10}{sum(touched_hint.values()):>21}{sum(touched_scrub.values()):>30}"
    )
    for kind, lines in examples.items():
        for line in lines:
            print(f"  touched {kind}: {line}")

    docs = [
        {"url": u, "text": lab["main_text"], "language": lab["language"]} for u, lab in tiny_labels.items()
    ]
    m = pii_truth(docs, tiny_labels)
    print(
        f"\nTiny world ({len(docs)} pages, labels' main text): decoys present {m['decoys_present']}, "
        f"replaced {m['decoys_replaced']}; PII recall {m['recall']:.3f} (phone {m['recall.phone']:.3f}), "
        f"precision {m['precision']:.3f}"
    )


# --- throughput ------------------------------------------------------------------------------------


def throughput(tiny_labels: dict[str, dict]) -> None:
    docs = [
        {"url": u, "text": lab["main_text"] or "", "language": lab["language"]}
        for u, lab in tiny_labels.items()
    ]

    def patterns_only(doc: dict) -> None:  # the detector before libphonenumber: no regions at all
        detect(doc["text"], PII_TYPES, ())

    audit = PIIBlock(PIIConfig(mode="audit"))

    def block(doc: dict) -> None:
        audit.process(doc)

    def defaults_only(doc: dict) -> None:
        detect(doc["text"], PII_TYPES, DEFAULT_PHONE_REGIONS)

    print(f"\nThroughput over the tiny world's {len(docs)} main texts (CPU time, best of 3)")
    for name, run in (
        ("phone patterns only", patterns_only),
        ("+ libphonenumber, default regions", defaults_only),
        ("PII block (lang+domain hints)", block),
    ):
        best = float("inf")
        for _ in range(3):
            _match_window.cache_clear()  # no help from the previous run's parses
            t0 = time.process_time()
            for doc in docs:
                run(doc)
            best = min(best, time.process_time() - t0)
        print(f"  {name:36}{len(docs) / best:>10,.0f} docs/s")


def tiny_world_labels() -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        generate_crawl(CrawlConfig(), Path(tmp))
        lines = (Path(tmp) / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    return {lab["url"]: lab for lab in map(json.loads, lines) if lab.get("main_text") is not None}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decoys", type=int, default=2000, help="generated decoy sentences")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recall_table()
    labels = tiny_world_labels()
    decoy_report(args.decoys, args.seed, labels)
    throughput(labels)


if __name__ == "__main__":
    main()
