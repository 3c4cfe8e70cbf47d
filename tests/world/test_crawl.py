"""The tiny-world crawl: WARC structure, determinism, labels, and that every curation stage has real work."""

from __future__ import annotations

import gzip
import hashlib
import html
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from warcio.archiveiterator import ArchiveIterator

from components.data.language import LanguageConfig, load_model, model_file
from components.world.benchmark import benchmark_items
from components.world.crawl import CrawlConfig, generate_crawl
from components.world.knowledge import KnowledgeBase, KnowledgeConfig, entity_type
from components.world.languages import SUPPORTED_LANGUAGES, language_pack
from components.world.pages import compose_entity_page

REPO = Path(__file__).resolve().parents[2]
GOPHER_STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
# Reserved for documentation: a generated "public" address must never fall in them.
DOCUMENTATION_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


def smoke_config(**overrides: Any) -> CrawlConfig:
    """A crawl of a few hundred pages, like the pipeline's smoke config."""
    values: dict[str, Any] = {
        "seed": 11,
        "pages": 400,
        "warc_files": 3,
        "knowledge": KnowledgeConfig(countries=4, cities_per_country=2, people=8, unknown_entities=6),
        "leaked_pages": 3,
        "benchmark_size": 60,
    }
    return CrawlConfig(**(values | overrides))


@pytest.fixture(scope="module")
def crawl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("crawl")
    config = smoke_config()
    started = time.perf_counter()
    stats = generate_crawl(config, out)
    seconds = time.perf_counter() - started
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    records: list[dict[str, Any]] = []
    for path in sorted(out.glob("*.warc.gz")):
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                records.append(
                    {
                        "file": path.name,
                        "type": rec.rec_type,
                        "id": rec.rec_headers.get_header("WARC-Record-ID"),
                        "uri": rec.rec_headers.get_header("WARC-Target-URI"),
                        "concurrent_to": rec.rec_headers.get_header("WARC-Concurrent-To"),
                        "status": rec.http_headers.get_statuscode() if rec.rec_type == "response" else None,
                        "http": dict(rec.http_headers.headers) if rec.http_headers else {},
                        "body": rec.content_stream().read(),
                    }
                )
    kb = KnowledgeBase.from_json((out / "knowledge.json").read_text())
    responses = {r["uri"]: r for r in records if r["type"] == "response"}
    return {
        "out": out,
        "config": config,
        "stats": stats,
        "seconds": seconds,
        "labels": labels,
        "by_id": {label["page_id"]: label for label in labels},
        "records": records,
        "responses": responses,
        "kb": kb,
    }


def select(crawl: dict[str, Any], **where: Any) -> list[dict[str, Any]]:
    return [label for label in crawl["labels"] if all(label[k] == v for k, v in where.items())]


def body_text(crawl: dict[str, Any], label: dict[str, Any]) -> str:
    return crawl["responses"][label["url"]]["body"].decode(label["charset"] or "utf-8")


def sha256s(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def shingle_set(text: str) -> set[tuple[str, ...]]:
    # Independent re-implementation of the documented label definition.
    words = text.lower().split()
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Share of the characters covered by the most frequent word n-gram (Gopher repetition)."""
    grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    gram, count = grams.most_common(1)[0]
    return count * sum(map(len, gram)) / sum(map(len, words))


def sentences_of(text: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+", text.replace("\n", " "))


# --- determinism and format ----------------------------------------------------------------------


def test_same_config_gives_byte_identical_files(crawl: dict[str, Any], tmp_path: Path) -> None:
    generate_crawl(crawl["config"], tmp_path / "again")
    assert sha256s(tmp_path / "again") == sha256s(crawl["out"])
    generate_crawl(smoke_config(seed=12), tmp_path / "other")
    other = sha256s(tmp_path / "other")
    for name, digest in sha256s(crawl["out"]).items():
        assert other[name] != digest, name


def test_output_does_not_depend_on_python_hash_seed(crawl: dict[str, Any], tmp_path: Path) -> None:
    # Iterating a set of strings would change with PYTHONHASHSEED; a fresh interpreter proves we never do.
    code = (
        "import sys; from pathlib import Path;"
        "from components.world.crawl import CrawlConfig, generate_crawl;"
        "generate_crawl(CrawlConfig.model_validate_json(sys.argv[1]), Path(sys.argv[2]))"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    config = crawl["config"].model_dump_json()
    subprocess.run([sys.executable, "-c", code, config, str(tmp_path / "sub")], check=True, env=env, cwd=REPO)
    assert sha256s(tmp_path / "sub") == sha256s(crawl["out"])


def test_files_written_atomically_and_named_like_segments(crawl: dict[str, Any]) -> None:
    names = sorted(p.name for p in crawl["out"].iterdir())
    assert names == [
        "crawl-00000.warc.gz",
        "crawl-00001.warc.gz",
        "crawl-00002.warc.gz",
        "knowledge.json",
        "labels.jsonl",
    ]
    assert crawl["stats"]["warc_bytes"] == sum((crawl["out"] / n).stat().st_size for n in names[:3])


def test_every_record_is_its_own_gzip_member_with_zero_mtime(crawl: dict[str, Any]) -> None:
    for path in sorted(crawl["out"].glob("*.warc.gz")):
        data = path.read_bytes()
        members = 0
        while data:
            assert data[:3] == b"\x1f\x8b\x08"
            assert data[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0 for reproducible files"
            d = zlib.decompressobj(wbits=31)
            d.decompress(data)
            assert d.eof
            data = d.unused_data
            members += 1
        assert members == sum(r["file"] == path.name for r in crawl["records"])
        assert gzip.decompress(path.read_bytes()).startswith(b"WARC/1.0\r\nWARC-Type: warcinfo")


def test_every_label_has_exactly_one_response_record(crawl: dict[str, Any]) -> None:
    responses = [r for r in crawl["records"] if r["type"] == "response"]
    counts = Counter(r["uri"] for r in responses)
    labels = crawl["labels"]
    assert len(responses) == len(labels)
    assert [label["page_id"] for label in labels] == sorted(label["page_id"] for label in labels)
    for label in labels:
        assert counts[label["url"]] == 1, label["url"]
        record = crawl["responses"][label["url"]]
        assert record["id"] == label["record_id"]
        assert record["file"] == label["warc_file"]
        assert int(record["status"]) == label["status"]
        assert record["http"]["Content-Type"] == label["content_type"]
        assert int(record["http"]["Content-Length"]) == len(record["body"])


def test_record_ids_and_dates_are_seeded_not_wall_clock(crawl: dict[str, Any]) -> None:
    ids = [r["id"] for r in crawl["records"]]
    assert len(set(ids)) == len(ids)
    uuid4 = re.compile(r"<urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}>")
    assert all(uuid4.fullmatch(i) for i in ids)
    first = crawl["out"] / "crawl-00000.warc.gz"
    with open(first, "rb") as f:
        dates = [rec.rec_headers.get_header("WARC-Date") for rec in ArchiveIterator(f)]
    assert dates[0].startswith("2024-03-01T00:")
    assert dates == sorted(dates)


def test_request_and_metadata_records_accompany_some_responses(crawl: dict[str, Any]) -> None:
    types = Counter(r["type"] for r in crawl["records"])
    assert types["warcinfo"] == 3
    n = len(crawl["labels"])
    assert 0.15 * n < types["request"] < 0.35 * n
    assert 0.04 * n < types["metadata"] < 0.18 * n
    response_ids = {r["id"] for r in crawl["records"] if r["type"] == "response"}
    for rec in crawl["records"]:
        if rec["type"] in ("request", "metadata"):
            assert rec["concurrent_to"] in response_ids
            assert rec["uri"] in crawl["responses"]
        if rec["type"] == "request":
            assert rec["http"]["User-Agent"].startswith("TinyWorldBot")


# --- categories and labels -----------------------------------------------------------------------


def test_category_counts_follow_the_config(crawl: dict[str, Any]) -> None:
    cfg: CrawlConfig = crawl["config"]
    classes = Counter(label["junk_class"] for label in select(crawl, category="junk"))
    for junk_class, fraction in cfg.junk.model_dump().items():
        assert classes[junk_class] == round(fraction * cfg.pages), junk_class
    kinds = Counter(label["duplicate_kind"] for label in select(crawl, category="duplicate"))
    assert kinds == {
        "exact": round(cfg.exact_duplicate_fraction * cfg.pages),
        "near": round(cfg.near_duplicate_fraction * cfg.pages),
    }
    assert len(select(crawl, category="leaked")) == cfg.leaked_pages
    hostile = Counter(label["junk_class"] for label in select(crawl, category="hostile"))
    assert hostile == {k: v for k, v in cfg.hostile.model_dump().items() if v}
    assert len(crawl["labels"]) == cfg.pages
    good = select(crawl, category="good")
    shares = Counter(label["language"] for label in good)
    total = sum(cfg.languages.values())
    for lang, weight in cfg.languages.items():
        assert abs(shares[lang] / len(good) - weight / total) < 0.01, lang
    assert crawl["stats"]["by_category"] == dict(
        sorted(Counter(x["category"] for x in crawl["labels"]).items())
    )


def test_label_schema(crawl: dict[str, Any]) -> None:
    keys = [
        "page_id",
        "url",
        "warc_file",
        "record_id",
        "status",
        "language",
        "category",
        "junk_class",
        "style",
        "entity_ids",
        "duplicate_of",
        "duplicate_kind",
        "edit_rate",
        "jaccard",
        "pii",
        "decoys",
        "contaminated_with",
        "charset",
        "declared_charset",
        "content_type",
        "main_text",
    ]
    categories = {"good", "junk", "duplicate", "leaked", "hostile"}
    for label in crawl["labels"]:
        assert list(label) == keys
        assert label["category"] in categories
        assert (label["junk_class"] is None) == (label["category"] in ("good", "duplicate", "leaked"))
        if label["category"] == "good":
            assert label["language"] in SUPPORTED_LANGUAGES and label["entity_ids"]


def test_main_text_is_what_the_page_shows(crawl: dict[str, Any]) -> None:
    for label in crawl["labels"]:
        if label["status"] != 200 or label["junk_class"] in ("binary", "non_html", "empty", "wrong_charset"):
            continue
        text = html.unescape(re.sub(r"<[^>]+>", "", body_text(crawl, label)))
        for line in label["main_text"].split("\n"):
            assert line in text, (label["page_id"], line)


def test_unknown_entities_appear_nowhere(crawl: dict[str, Any]) -> None:
    kb: KnowledgeBase = crawl["kb"]
    unknown = kb.name_tokens(unknown=True)
    assert len(unknown) >= 6
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, unknown)) + r")\b", re.IGNORECASE)
    everything = b"".join(p.read_bytes() for p in sorted(crawl["out"].glob("*.warc.gz")))
    everything_text = gzip.decompress(everything).decode("latin-1")
    assert not pattern.search(everything_text)
    labels_text = (crawl["out"] / "labels.jsonl").read_text()
    assert not pattern.search(labels_text)
    # The same search does find known names, so the check is not vacuous.
    known = re.compile(r"\b" + re.escape(kb.countries[0].name) + r"\b")
    assert known.search(everything_text)


def test_every_fact_is_stated_on_at_least_two_english_good_pages(crawl: dict[str, Any]) -> None:
    kb: KnowledgeBase = crawl["kb"]
    assert crawl["stats"]["min_english_pages_per_entity"] >= 2
    pages = [sentences_of(x["main_text"]) for x in select(crawl, category="good", language="en")]
    for fact in kb.facts():
        stating = sum(any(fact.subject in s and fact.value in s for s in page) for page in pages)
        assert stating >= 2, fact


def test_english_good_pages_pass_the_quality_filters(crawl: dict[str, Any]) -> None:
    for label in select(crawl, category="good", language="en") + select(crawl, category="leaked"):
        text = label["main_text"]
        words = [w for w in text.split() if re.search(r"\w", w)]
        lines = [line for line in text.split("\n") if line.strip()]
        assert 150 <= len(words) <= 600 or label["category"] == "leaked", (len(words), label["page_id"])
        assert len(words) >= 50
        assert 3 <= sum(map(len, words)) / len(words) <= 10
        assert len({w.lower().strip(".,;:!?") for w in words} & GOPHER_STOP_WORDS) >= 2
        assert len([s for s in sentences_of(text) if s.strip()]) >= 5
        assert "{" not in text and "lorem ipsum" not in text.lower()
        assert not re.search(r"javascript|cookie|privacy policy|terms of use", text, re.IGNORECASE)
        assert len(lines) == len(set(lines)), "FineWeb drops pages with duplicated lines"
        assert sum(line.rstrip()[-1] in '.!?"' for line in lines) / len(lines) >= 0.12
        assert sum(len(line) <= 30 for line in lines) / len(lines) <= 0.67, label["page_id"]
        assert text.count("\n") / len(words) <= 0.3


def test_each_junk_class_trips_the_rule_meant_for_it(crawl: dict[str, Any]) -> None:
    blocklist = {
        line.split("#")[0].strip()
        for line in (REPO / "components/data/blocklists/domains.txt").read_text().splitlines()
    } - {""}
    assert blocklist and all(h.endswith((".example", ".test")) for h in blocklist)
    for label in select(crawl, category="junk"):
        text, cls = label["main_text"], label["junk_class"]
        words = text.split()
        host = label["url"].split("/")[2]
        if cls == "spam":
            assert text.count("!") >= 10 and body_text(crawl, label).count('<a href="/go/') >= 8
        elif cls == "keyword_stuffing":
            assert top_ngram_char_fraction(words, 2) > 0.2  # Gopher's limit for the top 2-gram
        elif cls == "boilerplate":
            assert text == "" and "cookie" in body_text(crawl, label).lower()
        elif cls == "lorem_ipsum":
            assert "lorem ipsum" in text.lower()
        elif cls == "blocklisted_domain":
            assert host in blocklist and label["entity_ids"]
        elif cls == "banned_url_word":
            assert re.search(r"porn|xxx|sex|casino|adult|bet", label["url"])
        elif cls == "short":
            assert len(words) < 5
        elif cls == "gibberish":
            assert not {w.lower().strip(".") for w in words} & GOPHER_STOP_WORDS
        elif cls == "repetitive":
            lines = text.split("\n")
            assert 1 - len(set(lines)) / len(lines) > 0.3
        elif cls == "code_or_json":
            assert text.count("{") >= 10
        else:
            raise AssertionError(f"unexpected junk class {cls}")


# --- duplicates ----------------------------------------------------------------------------------


def test_exact_duplicates_repeat_the_main_text_at_another_url(crawl: dict[str, Any]) -> None:
    exact = select(crawl, duplicate_kind="exact")
    identical_bytes = 0
    for label in exact:
        original = crawl["by_id"][label["duplicate_of"]]
        assert original["category"] == "good"
        assert label["url"] != original["url"] and label["main_text"] == original["main_text"]
        assert label["jaccard"] == 1.0 and label["edit_rate"] == 0.0
        same = crawl["responses"][label["url"]]["body"] == crawl["responses"][original["url"]]["body"]
        identical_bytes += same
        assert same == (
            "utm_source=" in label["url"]
        )  # query-string variants are byte copies, mirrors are not
    assert 0 < identical_bytes < len(exact)


def test_near_duplicate_jaccard_labels_are_true_and_span_the_threshold(crawl: dict[str, Any]) -> None:
    near = select(crawl, duplicate_kind="near")
    for label in near:
        original = crawl["by_id"][label["duplicate_of"]]
        a, b = shingle_set(original["main_text"]), shingle_set(label["main_text"])
        assert abs(len(a & b) / len(a | b) - label["jaccard"]) < 1e-6
        assert label["jaccard"] < 1.0 and label["edit_rate"] in crawl["config"].near_duplicate_edit_rates
        assert crawl["responses"][label["url"]]["body"] != crawl["responses"][original["url"]]["body"]
        # Edits never change a fact: every fact value of the original is still there.
        kb: KnowledgeBase = crawl["kb"]
        for fact in kb.facts_about(kb.entity(original["entity_ids"][0])):
            assert (fact.value in original["main_text"]) <= (fact.value in label["main_text"]), fact
    above = sum(label["jaccard"] >= 0.8 for label in near)
    assert 0.3 * len(near) <= above <= 0.7 * len(near)


def test_distinct_good_pages_are_not_near_duplicates(crawl: dict[str, Any]) -> None:
    by_entity: dict[tuple[str, str], list[set[tuple[str, ...]]]] = {}
    for label in select(crawl, category="good"):
        key = (label["entity_ids"][0], label["language"])
        by_entity.setdefault(key, []).append(shingle_set(label["main_text"]))
    worst = 0.0
    for pages in by_entity.values():
        for i, a in enumerate(pages):
            for b in pages[i + 1 :]:
                worst = max(worst, len(a & b) / len(a | b))
    assert worst < 0.6, "two independent pages about one entity would look like near duplicates to dedup"


# --- PII -----------------------------------------------------------------------------------------


def test_pii_and_decoys_appear_verbatim_and_have_the_right_kind(crawl: dict[str, Any]) -> None:
    with_pii = [x for x in crawl["labels"] if x["pii"]]
    good_en = select(crawl, category="good", language="en")
    carriers = [x for x in good_en if x["pii"]]
    assert abs(len(carriers) - crawl["config"].pii_fraction * len(good_en)) <= 1
    assert all(x["category"] == "good" or x["duplicate_of"] for x in with_pii)
    seen: Counter[str] = Counter()
    for label in with_pii:
        page = body_text(crawl, label)
        for item in label["pii"] + label["decoys"]:
            assert item["value"] in page and item["value"] in label["main_text"], item
            seen[item["type"]] += 1
        for item in label["pii"]:
            if item["type"] in ("ipv4", "ipv6"):
                address = ipaddress.ip_address(item["value"])
                assert address.is_global, item
                assert not any(address in ipaddress.ip_network(net) for net in DOCUMENTATION_NETS)
            elif item["type"] == "email":
                assert re.fullmatch(r"[\w.]+@[\w.]+\.(com|org|net)", item["value"])
        for item in label["decoys"]:
            if item["type"] == "private_ipv4":
                assert ipaddress.ip_address(item["value"]).is_private
            elif item["type"] == "loopback_ipv4":
                assert ipaddress.ip_address(item["value"]).is_loopback
    assert set(seen) == {
        "email",
        "phone",
        "ipv4",
        "ipv6",
        "private_ipv4",
        "loopback_ipv4",
        "version",
        "date",
        "price",
        "number",
    }


def test_phone_numbers_come_in_every_international_format(crawl: dict[str, Any]) -> None:
    phones = {x["value"] for label in crawl["labels"] for x in label["pii"] if x["type"] == "phone"}
    formats = [
        r"\+44 20 7946 0\d{3}",
        r"\(555\) \d{3}-\d{4}",
        r"555-\d{3}-\d{4}",
        r"\+1-555-0\d{2}-\d{4}",
        r"\+49 30 \d{8}",
        r"030 \d{7}",
        r"\+33 1 \d\d \d\d \d\d \d\d",
    ]
    for fmt in formats:
        assert any(re.fullmatch(fmt, p) for p in phones), fmt


# --- contamination -------------------------------------------------------------------------------


def test_leaked_pages_carry_benchmark_items_verbatim(crawl: dict[str, Any]) -> None:
    cfg: CrawlConfig = crawl["config"]
    items = {i.id: i for i in benchmark_items(crawl["kb"], cfg.benchmark_seed, cfg.benchmark_size)}
    leaked = select(crawl, category="leaked")
    ids = [i for label in leaked for i in label["contaminated_with"]]
    assert len(ids) == len(set(ids)) == cfg.leaked_pages * cfg.leaked_items_per_page
    for label in leaked:
        for item_id in label["contaminated_with"]:
            assert items[item_id].render() in label["main_text"]
    for label in crawl["labels"]:
        if label["category"] != "leaked":
            assert not label["contaminated_with"]
            assert "Choices: A)" not in label["main_text"]


# --- hostile records -----------------------------------------------------------------------------


def test_hostile_records_are_what_their_labels_say(crawl: dict[str, Any]) -> None:
    for label in select(crawl, category="hostile"):
        record = crawl["responses"][label["url"]]
        body, ctype, cls = record["body"], record["http"]["Content-Type"], label["junk_class"]
        if cls == "binary":
            assert ctype.startswith("text/html") and len(body) > 1000
            with pytest.raises(UnicodeDecodeError):
                body.decode("utf-8")
        elif cls == "legacy_charset":
            assert f"charset={label['charset']}" in ctype and label["charset"] != "utf-8"
            assert f'<meta charset="{label["charset"]}">' in body.decode(label["charset"])
            with pytest.raises(UnicodeDecodeError):
                body.decode("utf-8")
            assert not label["main_text"].isascii()
        elif cls == "wrong_charset":
            assert ctype == "text/html; charset=utf-8" and label["charset"] == "windows-1252"
            with pytest.raises(UnicodeDecodeError):
                body.decode("utf-8")
            assert label["main_text"].split("\n")[1] in html.unescape(body.decode("windows-1252"))
        elif cls == "undeclared_charset":
            assert ctype == "text/html" and b"charset" not in body.lower()
            assert not body.decode("utf-8").isascii()
        elif cls == "malformed_html":
            assert b"</p>" not in body and b"</html>" not in body
        elif cls == "empty":
            assert body == b""
        elif cls == "non_html":
            assert body.startswith(b"%PDF-" if ctype == "application/pdf" else b"\x89PNG")
        elif cls == "redirect":
            assert label["status"] == 301 and record["http"]["Location"].startswith("https://")
        elif cls == "not_found":
            assert label["status"] == 404
        else:
            raise AssertionError(cls)


def test_huge_page_option(tmp_path: Path) -> None:
    config = smoke_config(pages=120, huge_page_mb=1.5, leaked_pages=0)
    stats = generate_crawl(config, tmp_path)
    assert stats["by_junk_class"]["huge"] == 1
    huge = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines() if '"huge"' in x]
    assert len(huge[0]["main_text"]) >= 1_500_000


# --- config --------------------------------------------------------------------------------------


def test_config_rejects_mistakes() -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        CrawlConfig(languages={"en": 1.0, "xx": 0.1})
    with pytest.raises(ValueError, match=r"(?i)extra"):
        CrawlConfig(pagez=3)
    with pytest.raises(ValueError):
        CrawlConfig(near_duplicate_edit_rates=[])
    with pytest.raises(ValueError, match="too small"):
        generate_crawl(CrawlConfig(pages=20), Path("/nonexistent-not-created"))


# --- pages in every language and style -----------------------------------------------------------


def test_every_language_and_style_renders_every_entity(crawl: dict[str, Any]) -> None:
    kb: KnowledgeBase = crawl["kb"]
    rng = random.Random(0)
    for code in SUPPORTED_LANGUAGES:
        pack = language_pack(code)
        for entity in kb.entities():
            for style in pack.styles_for(entity_type(entity.id)):
                _, blocks, ids = compose_entity_page(kb, entity, pack, style, rng)
                text = "\n".join(t for _, t in blocks)
                assert entity.name in text and ids[0] == entity.id
                assert "{" not in text and "}" not in text


# --- downstream tools can use the pages ----------------------------------------------------------


@pytest.fixture(scope="module")
def lid_model() -> Any:
    """fastText lid.176 as the language stage finds it: the checksummed asset that `gptrecipe assets`
    installs (`make install` runs it); a missing asset fails naming that command, it is not skipped."""
    return load_model(str(model_file(LanguageConfig())))


def test_language_id_recognises_every_language(crawl: dict[str, Any], lid_model: Any) -> None:
    good = select(crawl, category="good")
    sample = [x for x in good if x["language"] != "en"] + [x for x in good if x["language"] == "en"][:150]
    correct = 0
    for label in sample:
        labels, scores = lid_model.predict(label["main_text"].replace("\n", " "))
        correct += labels[0] == f"__label__{label['language']}" and scores[0] > 0.65
    assert correct / len(sample) >= 0.98
    assert {x["language"] for x in sample} == set(SUPPORTED_LANGUAGES)


def test_trafilatura_finds_the_facts_in_the_html(crawl: dict[str, Any]) -> None:
    import trafilatura

    kb: KnowledgeBase = crawl["kb"]
    english = select(crawl, category="good", language="en")
    styles = sorted({x["style"] for x in english})
    assert styles == ["biography", "encyclopedia", "facts", "forum", "news", "travel"]
    for style in styles:
        for label in [x for x in english if x["style"] == style][:6]:
            extracted = trafilatura.extract(body_text(crawl, label), favor_precision=True) or ""
            for fact in kb.facts_about(kb.entity(label["entity_ids"][0])):
                assert fact.value in extracted, (style, fact)
            assert "cookie" not in extracted.lower() and "All rights reserved" not in extracted


def test_generation_is_fast(crawl: dict[str, Any], tmp_path: Path) -> None:
    assert crawl["seconds"] < 3.0  # smoke: a few hundred pages
    started = time.perf_counter()
    stats = generate_crawl(CrawlConfig(), tmp_path)  # the tiny default: a few thousand pages
    assert time.perf_counter() - started < 10.0
    assert stats["pages"] == 3000
