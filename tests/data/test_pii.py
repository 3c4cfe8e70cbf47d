"""PII: every type found in context, every decoy left alone, the version-vs-IP rule both ways, the three
modes, the truth metrics, and no PII in what reaches MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import phonenumbers
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from components.core.artifacts import Artifact, ArtifactStore
from components.core.stage import run_stage
from components.data.pii import PIIBlock, detect, detect_in_url, pii, pii_truth, scrub
from components.data.pii_addresses import DUMMIES
from components.data.pii_config import DEFAULT_PHONE_REGIONS, PII_TYPES, PIIConfig
from components.data.pii_phones import (
    LANGUAGE_REGIONS,
    SCRUB_PHONE_REGIONS,
    phone_decoy_reason,
    phone_regions,
    url_region,
)
from components.io.documents import write_documents
from components.world.crawl import CrawlConfig, generate_crawl


def found(text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in detect(text)]


# --- positives --------------------------------------------------------------------------------

POSITIVES = [
    ("email", "Questions can be sent to anna.12@example.com, or call us.", "anna.12@example.com"),
    ("email", "For bookings, write to press7@mail.example.com; the desk answers.", "press7@mail.example.com"),
    ("email", "Mail <o'neil_x+news@post.example.org> today", "neil_x+news@post.example.org"),
    ("email", "Kontakt: jürgen.müller@beispiel.de.", "jürgen.müller@beispiel.de"),
    ("ipv4", "This page is served from the address 91.227.169.217, and more.", "91.227.169.217"),
    ("ipv4", "Our mirror at 8.8.4.4 holds a copy.", "8.8.4.4"),
    ("ipv4", "Connect to 93.184.216.34:8080 now.", "93.184.216.34"),
    ("ipv4", "The last hop was 7.0.2.15.", "7.0.2.15"),  # sentence end: the full stop is not a 5th part
    (
        "ipv6",
        "and over IPv6 from 2001:41d0:ba:316e:2f0c:f891:6f5d:f67b.",
        "2001:41d0:ba:316e:2f0c:f891:6f5d:f67b",
    ),
    ("ipv6", "and over IPv6 from 2a01:4f8:1c:2b::3.", "2a01:4f8:1c:2b::3"),
    ("ipv6", "see [2606:4700::6810:85e5]:443 for details", "2606:4700::6810:85e5"),
    ("ipv6", "mapped as ::ffff:8.8.8.8 in the table", "::ffff:8.8.8.8"),
    ("phone", "call our office on +44 20 7946 0958.", "+44 20 7946 0958"),
    ("phone", "Readers abroad can also dial (555) 123-4567 during office hours.", "(555) 123-4567"),
    ("phone", "or by phone at 555-123-4567.", "555-123-4567"),
    ("phone", "or by phone at +1-555-010-0199.", "+1-555-010-0199"),
    ("phone", "dial +49 30 12345678 during office hours", "+49 30 12345678"),
    ("phone", "or call our office on 030 1234567.", "030 1234567"),
    ("phone", "dial +33 1 23 45 67 89 during office hours", "+33 1 23 45 67 89"),
    ("phone", "Tel: +44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
    ("phone", "Toll free: 1-800-555-0199!", "1-800-555-0199"),
    ("phone", "Portable : 06 12 34 56 78", "06 12 34 56 78"),
    ("phone", "Telefon 030/1234567 (Büro)", "030/1234567"),
    ("phone", "Fax (030) 1234567", "(030) 1234567"),
    ("phone", "Tel. 0301234567", "0301234567"),
    ("phone", "call +4930123456 today", "+4930123456"),
    ("phone", "US office 555.123.4567, open daily", "555.123.4567"),
]


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_pii_found_in_context(kind, text, value):
    assert found(text) == [(kind, value)]
    out = scrub(text)
    assert value not in out and DUMMIES[kind] in out
    assert out == text.replace(value, DUMMIES[kind])


def test_number_after_a_phone_number_is_cut_off_at_15_digits():
    # E.164 allows 15 digits: what would make it longer is not part of the number. (Within 15 digits a
    # following number cannot be told apart without a numbering plan: "+33 1 23 45 67 89 2019" stays whole.)
    text = "call +44 20 7946 0958 2019 was the year"
    assert found(text) == [("phone", "+44 20 7946 0958")]


# --- phone numbers from libphonenumber's examples, found through the document's region ------------

# libphonenumber's example numbers (example_number_for_type), as it formats them: national,
# international and E.164, with its own extension syntax; each in a document of that region's language
# or on its country-code TLD.
THIRD_PARTY_PHONES = [
    ("en", "https://www.example.com/", "(201) 555-0123 ext. 123"),
    ("en", "https://www.example.com/", "+1 201-555-0123 ext. 123"),
    ("en", "https://www.example.co.uk/", "0121 234 5678 x123"),
    ("en", "https://www.example.co.uk/", "+44 121 234 5678 x123"),
    ("de", "https://www.beispiel.de/", "030 123456"),
    ("de", "https://www.beispiel.de/", "030 123456 ext. 123"),
    ("de", "https://www.beispiel.de/", "01512 3456789"),
    ("de", "https://www.beispiel.de/", "+4915123456789"),
    ("fr", "https://www.exemple.fr/", "06 12 34 56 78 ext. 123"),
    ("es", "https://www.ejemplo.es/", "612 34 56 78"),
    ("es", "https://www.ejemplo.es/", "+34 612 34 56 78 ext. 123"),
    ("it", "https://www.esempio.it/", "02 1234 5678"),
    ("ja", "https://www.example.jp/", "090-1234-5678"),
    ("ja", "https://www.example.jp/", "+81 90-1234-5678 ext. 123"),
    ("pt", "https://www.exemplo.com.br/", "(11) 96123-4567"),
    ("en", "https://www.example.com.au/", "(02) 1234 5678 ext. 123"),
    ("en", "https://www.example.in/", "081234 56789"),
    ("sv", "https://www.exempel.se/", "08-12 34 56"),
    ("nl", "https://www.voorbeeld.nl/", "010 123 4567 ext. 123"),
    ("de", "https://www.beispiel.ch/", "078 123 45 67"),
    ("pl", "https://www.przyklad.pl/", "+48 512 345 678"),
]


@pytest.mark.parametrize(("language", "url", "number"), THIRD_PARTY_PHONES)
def test_third_party_numbers_found_with_their_extension(language, url, number):
    text = f"For bookings call {number} during office hours."
    doc = {"url": url, "text": text, "language": language}
    PIIBlock(PIIConfig()).process(doc)
    assert doc["text"] == "For bookings call 555-0100 during office hours."


def test_the_documents_region_decides_national_numbers():
    text = "Reserve con antelación: 612 34 56 78."  # a Spanish mobile number, national format
    out = "Reserve con antelación: 555-0100."
    generic = "https://www.ejemplo.example/contacto"

    def anonymised(language, url, config=None):
        doc = {"url": url, "text": text, "language": language}
        PIIBlock(config or PIIConfig()).process(doc)
        return doc["text"]

    assert anonymised("es", generic) == out  # from the language
    assert anonymised("en", "https://www.ejemplo.es/contacto") == out  # from the domain
    assert anonymised("de", generic) == text  # not a German number
    assert anonymised(None, generic) == text  # no hint: US, GB, DE, FR
    assert anonymised(None, generic, PIIConfig(phone_default_regions=["ES"])) == out
    # International numbers need no hint.
    doc = {"url": generic, "text": "Llame al +34 612 34 56 78.", "language": "de"}
    PIIBlock(PIIConfig()).process(doc)
    assert doc["text"] == "Llame al 555-0100."


def test_phone_regions_from_language_and_domain():
    assert phone_regions("de", "https://www.beispiel.example/") == ("DE", "AT", "CH")
    assert phone_regions("en", "https://shop.example.co.uk/basket") == ("GB", "US")
    assert phone_regions("EN", "https://www.example.com.au/") == ("AU", "US", "GB")
    assert phone_regions(None, "https://www.example.jp/contact") == ("JP",)
    assert phone_regions("la", "https://app.example.io/") == DEFAULT_PHONE_REGIONS  # unmapped, generic TLD
    assert phone_regions(None, None, ("NL",)) == ("NL",)
    assert url_region("https://8.8.8.8/x") is None and url_region("http://user@host.example.fr:8080/") == "FR"
    assert url_region("https://www.example.eu/") is None  # no such region in the plan
    hinted = {r for rs in LANGUAGE_REGIONS.values() for r in rs}
    assert hinted <= set(phonenumbers.SUPPORTED_REGIONS) and hinted <= set(SCRUB_PHONE_REGIONS)


def test_unknown_default_region_is_refused():
    with pytest.raises(ValidationError, match="XX"):
        PIIConfig(phone_default_regions=["DE", "XX"])


def test_digits_in_threes_need_a_phone_word():
    # "912 345 678" is a Madrid number and a count alike: only the text tells them apart.
    regions = ("ES",)
    assert [t for t, _ in found_in("Teléfono: 912 345 678", regions)] == ["phone"]
    assert found_in("Call 912 345 678 today", regions) == [("phone", "912 345 678")]
    assert found_in("La ciudad tiene 912 345 678 habitantes.", regions) == []
    assert found_in("Population: 912.345.678", regions) == []


def test_numbers_far_into_a_long_text_and_side_by_side():
    text = (
        "Lorem ipsum dolor sit amet. " * 400 + "Tel. 030 123456 ext. 12 oder 01512 3456789, Fax 030 654321."
    )
    assert [v for _, v in found_in(text, ("DE",))] == ["030 123456 ext. 12", "01512 3456789", "030 654321"]


def found_in(text: str, regions) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in detect(text, PII_TYPES, regions)]


# Numbers that libphonenumber accepts in some region's plan but that are something else: each guard
# with a real value. Checked with every region a hint can name (what `scrub` uses).
PHONE_DECOYS = [
    ("ISBN 0-306-40615-2 is out of print.", None),
    ("The book 978-3-16-148410-0 is out of print.", None),
    ("Your order no. 2015550123 has shipped.", None),
    ("Invoice 2024-001234 is attached.", None),
    ("Order #112-3456789-1234567 has shipped.", None),
    ("Bank details: DE54 5850 0024 3221 7724 42", None),
    ("Transfer the fee to 4938 2664 2850 1411 by Friday.", None),
    ("Your reference 6950 0194 9468 has shipped.", None),
    ("See pp. 4762-9166 for the proof.", None),
    ("The war lasted 8963 - 8884.", None),
    ("The city has 377 125 286 inhabitants.", None),
    ("A change of 315.097.852 since last year.", None),
    ("pi is 3.14159265, e is 2.718281828.", None),
    ("Coordinates (71.203795 145.270538) of the hut.", None),
    ("Ship to Springfield, IL 90210-1234.", None),
    ("Published 08-03-2010, revised since.", None),
    ("Windows 10.0.14978.3239 and 9.37.864-88567 are required.", None),
    ("Order 20240315 was placed on 15.03.2024 14:30 for 12 345 678,50 EUR.", None),
]


@pytest.mark.parametrize(("text", "_"), PHONE_DECOYS)
def test_phone_decoys_left_alone_in_every_region(text, _):
    assert found_in(text, SCRUB_PHONE_REGIONS) == []
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("text", "value", "reason"),
    [
        ("ISBN 0-306-40615-2", "0-306-40615-2", "identifier"),
        ("978-3-16-148410-0", "978-3-16-148410-0", "isbn"),
        ("order no. 2015550123", "2015550123", "bare_digits"),
        ("call 2015550123", "2015550123", None),  # a phone word makes bare digits a number to call
        ("IBAN DE54 5850 0024 3221", "0024 3221", "longer_number"),
        ("1990-2000", "1990-2000", "range"),
        ("4938 2664 2850 1411", "4938 2664 2850 1411", "card"),
        ("377 125 286 inhabitants", "377 125 286", "count"),
        ("pi 3.14159265", "3.14159265", "decimal"),
        ("IL 90210-1234", "90210-1234", "zip_code"),
        ("on 08-03-2010", "08-03-2010", "date"),
        ("Windows 10.0.14978.3239", "10.0.14978.3239", "version"),
        ("€ 1 234 567", "1 234 567", "price"),
        ("1 234 567,50 EUR", "1 234 567", "price"),
        ("Tel. 030 123456", "030 123456", None),
    ],
)
def test_phone_decoy_reasons(text, value, reason):
    start = text.index(value)
    assert phone_decoy_reason(text, start, start + len(value)) == reason


# --- decoys ----------------------------------------------------------------------------------

DECOYS = [
    # private, loopback, link-local, shared, documentation, multicast, broadcast, unspecified IPv4
    "Staff connect to the intranet at 10.164.213.96 while the test server listens on 127.0.0.1.",
    "The office printer has the internal address 172.23.36.23 on our local network.",
    "Router 192.168.103.188, link-local 169.254.10.20, CGNAT 100.64.0.1, test 192.0.2.44.",
    "Docs use 198.51.100.7 and 203.0.113.9; mDNS is 224.0.0.251; broadcast 255.255.255.255; any 0.0.0.0.",
    "Octets with leading zeros (010.001.002.003) or above 255 (300.1.2.3) are not addresses.",
    # IPv6 that is not global, and things with colons that are not IPv6
    "Loopback ::1, link-local fe80::1ff:fe23:4567:890a, ULA fd12:3456:789a::1, docs 2001:db8::8a2e:370:7334.",
    "Multicast ff02::1 and the unspecified address ::.",
    "Doors open at 12:30:45, the MAC is 00:1a:2b:3c:4d:5e, ratio 16:9, C++ std::vector and cafe::babe.",
    # versions
    "The guide was checked with version 2.0.0.1 of our app.",
    "Our booking tool was upgraded to release 2.0.8.11 on 2021-04-05.",
    "checked with version v4.8.7.21 of our app",
    "Firmware 7.0.2.15 and build 8.8.8.8 and rev 4.4.4.4 are out.",
    "The package v1.4.2.10 ships with 1.2.3.4.5 and 8.8.8.8-beta.",
    # dates, prices, years, plain numbers
    "The guide was last updated on 2024-03-15, 15.03.2024, 03/15/2024 and 01.04.2019.",
    "It costs $1,299.99 or €12,50 or 19.99 USD per person, lunch included.",
    "More than 10,499 readers visited this page; the archive goes back to the year 1990.",
    "Einwohner: 1.234.567; habitants : 1 234 567; population 12,345,678.",
    "ISBN 978-3-16-148410-0, ZIP 90210-1234, years 1990-2000, score 3-1, pi 3.14159265.",
    "Local numbers without an area code such as 555-0100 or 123-4567 are not matched.",
    # our own dummies
    "Write to email@example.com, call 555-0100, or see 192.0.2.1 and 2001:db8::1.",
]


@pytest.mark.parametrize("text", DECOYS)
def test_decoys_are_not_pii(text):
    assert found(text) == []
    assert scrub(text) == text


# --- the version rule, both ways ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "is_ip"),
    [
        ("upgraded to release 7.0.2.15 today", False),
        ("our mirror at 7.0.2.15 today", True),
        ("version number 8.8.4.4 is out", False),  # a filler word between
        ("version is 8.8.4.4", False),
        ("version 2 of the site runs at 8.8.4.4", True),  # the word before is "at"
        ("v8.8.4.4", False),
        ("V8.8.4.4", False),
        ("8.8.4.4.1 is a version", False),  # a fifth part
        ("8.8.4.4-rc1 is a version", False),
        ("8.8.4.4", True),
        ("from version 8.8.4.4 to 8.8.4.5", False),  # a list that started with a version
        ("versions 8.8.4.4, 8.8.4.5 and 8.8.4.6", False),
        ("We run version 3. Our DNS server is 8.8.4.4", True),  # the version word is in another sentence
        ("version 8.8.4.4 and the resolver at 9.9.9.9", None),  # first a version, then an address
    ],
)
def test_version_rule(text, is_ip):
    spans = found(text)
    if is_ip is None:
        assert spans == [("ipv4", "9.9.9.9")]
    else:
        assert bool(spans) is is_ip, spans


def test_scrub_is_idempotent_and_dummies_are_not_pii():
    text = " ".join(t for _, t, _ in POSITIVES)
    once = scrub(text)
    assert scrub(once) == once
    for value in DUMMIES.values():
        assert detect(value) == [] and detect(f"Contact: {value}.") == []


def test_url_pii_after_the_host_only():
    url = "https://8.8.8.8/contact?to=anna%40example.com&cc=tom@example.org&ip=93.184.216.34"
    assert [(s.type, url[s.start : s.end]) for s in detect_in_url(url)] == [
        ("email", "anna%40example.com"),
        ("email", "tom@example.org"),
        ("ipv4", "93.184.216.34"),
    ]
    assert detect_in_url("https://8.8.8.8/") == []  # the host is never PII
    assert detect_in_url("mailto-less-host.example") == []


# --- modes -----------------------------------------------------------------------------------

TEXT = "Write to anna.12@example.com or call +44 20 7946 0958. Server 91.227.169.217, intranet 10.0.0.1."


def test_anonymise_mode():
    block = PIIBlock(PIIConfig(mode="anonymise"))
    doc = {"url": "https://site.example/c?to=anna%40example.com", "text": TEXT}
    assert block.process(doc) is None
    assert doc["text"] == "Write to email@example.com or call 555-0100. Server 192.0.2.1, intranet 10.0.0.1."
    assert doc["url"] == "https://site.example/c?to=email@example.com"
    assert block.counters == {"email": 1, "phone": 1, "ipv4": 1, "url_email": 1, "documents_with_pii": 1}
    clean = {"url": "https://site.example/", "text": "Nothing to see, version 2.0.0.1."}
    assert block.process(clean) is None and clean["text"] == "Nothing to see, version 2.0.0.1."
    assert block.counters["documents_with_pii"] == 1


def test_drop_mode_names_the_first_type():
    block = PIIBlock(PIIConfig(mode="drop"))
    doc = {"url": "https://site.example/", "text": TEXT}
    assert block.process(doc) == "contains_email"
    assert doc["text"] == TEXT  # dropped as it was: the dropped output keeps the evidence
    assert block.process({"url": "u", "text": "Mirror at 8.8.8.8 only."}) == "contains_ipv4"
    assert block.process({"url": "u", "text": "Mirror at 10.8.8.8 only."}) is None
    assert block.process({"url": "https://a.example/?ip=8.8.8.8", "text": "clean"}) == "contains_ipv4"
    assert (
        PIIBlock(PIIConfig(mode="drop", scan_urls=False)).process({"url": "https://a.example/?ip=8.8.8.8"})
        is None
    )


def test_audit_mode_counts_only():
    block = PIIBlock(PIIConfig(mode="audit"))
    doc = {"url": "https://site.example/", "text": TEXT}
    assert block.process(doc) is None and doc["text"] == TEXT
    assert block.counters == {"email": 1, "phone": 1, "ipv4": 1, "documents_with_pii": 1}


def test_types_can_be_switched_off():
    block = PIIBlock(PIIConfig(mode="anonymise", types=["email"]))
    doc = {"url": "u", "text": TEXT}
    block.process(doc)
    assert "email@example.com" in doc["text"] and "+44 20 7946 0958" in doc["text"]


# --- truth metrics ---------------------------------------------------------------------------


def test_truth_metrics():
    labels = {
        "u1": {
            "pii": [
                {"type": "email", "value": "anna.12@example.com"},
                {"type": "phone", "value": "030 1234567"},
            ],
            "decoys": [
                {"type": "version", "value": "7.0.2.15"},
                {"type": "private_ipv4", "value": "10.0.0.1"},
            ],
        },
        # an unlabelled address (a detector "false positive") and a version taken for an IP
        "u2": {"pii": [], "decoys": [{"type": "version", "value": "8.8.4.4"}]},
        "u3": {"pii": [{"type": "email", "value": "cut@example.com"}], "decoys": []},
    }
    docs = [
        {"url": "u1", "text": "anna.12@example.com, 030 1234567, release 7.0.2.15, 10.0.0.1"},
        {"url": "u2", "text": "Our build server 8.8.4.4 is fine."},
        {"url": "u3", "text": "the contact paragraph was cut by extraction"},
        {"url": "unlabelled", "text": "x@example.com"},
    ]
    m = pii_truth(docs, labels)
    assert m["recall"] == 1.0 and m["pii_values"] == 2 and m["pii_values_absent_from_input"] == 1
    assert m["precision"] == 2 / 3 and m["false_positives"] == 1 and m["precision.ipv4"] == 0.0
    assert m["decoys_present"] == 3 and m["decoys_replaced"] == 1 and m["decoys_replaced.version"] == 1
    assert m["documents_with_pii"] == 1 and m["documents_flagged"] == 2 and m["documents_precision"] == 0.5


@pytest.mark.slow  # generates the full tiny crawl (a few seconds)
def test_tiny_world_targets(tmp_path):
    """The issue's target on the tiny world, with the labels' main text standing in for extraction."""
    generate_crawl(CrawlConfig(), tmp_path)
    labels = {}
    for line in (tmp_path / "labels.jsonl").read_text(encoding="utf-8").split("\n"):
        if line:
            label = json.loads(line)
            labels[label["url"]] = label
    docs = [{"url": u, "text": lab["main_text"]} for u, lab in labels.items()]
    m = pii_truth(docs, labels)
    assert m["pii_values"] > 500 and m["decoys_present"] > 300
    assert m["recall"] >= 0.99
    assert m["decoys_replaced"] == 0
    assert m["precision"] >= 0.99
    for kind in ("email", "phone", "ipv4", "ipv6"):
        assert m[f"pii_values.{kind}"] > 0 and m[f"recall.{kind}"] >= 0.99


# --- the stage, and nothing but scrubbed text in MLflow ---------------------------------------

PAGES = [
    ("https://travel.example/velmora", f"About Velmora. {TEXT}", ["anna.12@example.com", "+44 20 7946 0958"]),
    (
        "https://news.example/a?ref=tom%40example.org",
        "Tom wrote: reach me at tom_7@example.org or 555-123-4567.",
        [],
    ),
    ("https://wiki.example/arin", "Arin is a city. Release 2.0.0.1 shipped on 2024-03-15 for $1,299.99.", []),
    ("https://forum.example/t/1", "Ask (555) 820-5686, or the server 2a01:4f8:1c:2b::3.", []),
]


def _inputs(tmp_path: Path) -> dict[str, Artifact]:
    store = ArtifactStore(tmp_path / "in")
    docs = [{"id": f"d{i}", "url": u, "text": t, "title": f"Page: {t}"} for i, (u, t, _) in enumerate(PAGES)]
    write_documents(store, store.uri("docs", "part-00000.parquet"), docs[:2])
    write_documents(store, store.uri("docs", "part-00001.parquet"), docs[2:])
    pii_values = {
        PAGES[0][0]: [
            ("email", "anna.12@example.com"),
            ("phone", "+44 20 7946 0958"),
            ("ipv4", "91.227.169.217"),
        ],
        PAGES[1][0]: [("email", "tom_7@example.org"), ("phone", "555-123-4567")],
        PAGES[2][0]: [],
        PAGES[3][0]: [("phone", "(555) 820-5686"), ("ipv6", "2a01:4f8:1c:2b::3")],
    }
    decoys = {
        PAGES[0][0]: [("private_ipv4", "10.0.0.1")],
        PAGES[2][0]: [("version", "2.0.0.1"), ("date", "2024-03-15")],
    }
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    with open(crawl / "labels.jsonl", "w") as f:
        for i, (url, _, _) in enumerate(PAGES):
            label = {
                "page_id": f"p{i}",
                "url": url,
                "pii": [{"type": t, "value": v} for t, v in pii_values[url]],
                "decoys": [{"type": t, "value": v} for t, v in decoys.get(url, [])],
            }
            f.write(json.dumps(label) + "\n")
    return {
        "documents": Artifact(uri=store.uri("docs"), kind="documents", digest="docs"),
        "labels": Artifact(uri=str(crawl), kind="warc", digest="crawl"),
    }


def _all_pii(tmp_path: Path) -> list[str]:
    values = []
    for line in (tmp_path / "crawl" / "labels.jsonl").read_text().splitlines():
        values += [p["value"] for p in json.loads(line)["pii"]]
    return [*values, "tom%40example.org"]


@pytest.mark.parametrize("mode", ["anonymise", "drop", "audit"])
def test_stage_outputs_truth_and_scrubbed_mlflow_samples(tmp_path, tracking_uri, mode, run_env):
    inputs = _inputs(tmp_path)
    env = run_env
    record = run_stage(pii, PIIConfig(mode=mode), inputs, env)
    m = record.metrics
    assert m["documents_with_pii"] == 3 and m["pii_found"] == 7 + 1  # + the e-mail in a URL
    assert m["pii_recall"] == 1.0 and m["pii_precision"] == 1.0 and m["pii_decoys_replaced"] == 0

    kept = pq.read_table(record.outputs["documents"].uri).to_pylist()
    dropped_dir = Path(record.outputs["dropped"].uri)
    if mode == "anonymise":
        assert len(kept) == 4
        by_id = {d["id"]: d for d in kept}
        assert by_id["d0"]["text"] == "About Velmora. " + (
            "Write to email@example.com or call 555-0100. Server 192.0.2.1, intranet 10.0.0.1."
        )
        assert by_id["d1"]["url"] == "https://news.example/a?ref=email@example.com"
        assert by_id["d2"]["text"] == PAGES[2][1]
    elif mode == "drop":
        assert [d["id"] for d in kept] == ["d2"]
        reasons = sorted(p.name for p in dropped_dir.iterdir())
        assert reasons == ["pii.contains_email", "pii.contains_phone"]
        assert pq.read_table(dropped_dir / "pii.contains_phone").column("id").to_pylist() == ["d3"]
    else:
        assert [d["text"] for d in kept] == [t for _, t, _ in PAGES]

    client = MlflowClient(tracking_uri)
    run = client.get_run(record.mlflow_run_id)
    assert run.data.metrics["truth.recall"] == 1.0 and run.data.metrics["count.email"] >= 2
    sample_path = client.download_artifacts(record.mlflow_run_id, f"samples/pii_{mode}.jsonl", str(tmp_path))
    logged = Path(sample_path).read_text()
    assert len(logged.splitlines()) == 3  # the three documents that carry PII
    assert "email@example.com" in logged and "555-0100" in logged
    for value in _all_pii(tmp_path):
        assert value not in logged, value
