"""The `world` stage's config and declaration: light (no WARC writer, no page renderer), so that a
pipeline config loads and validates fast; `components.world.crawl` is the code."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from components.core.config import StageConfig, StrictModel
from components.core.stage import stage_spec
from components.world.knowledge import KnowledgeConfig
from components.world.languages import SUPPORTED_LANGUAGES


class JunkFractions(StrictModel):
    """Fraction of all pages that belong to each junk class."""

    spam: float = Field(0.02, ge=0, le=1, description="Ads, 'buy now', exclamation marks, link lists.")
    keyword_stuffing: float = Field(0.02, ge=0, le=1, description="The same search keywords over and over.")
    boilerplate: float = Field(
        0.02, ge=0, le=1, description="Nav, sidebar, cookie banner, footer; no article."
    )
    lorem_ipsum: float = Field(0.015, ge=0, le=1, description="Placeholder Latin text.")
    blocklisted_domain: float = Field(
        0.02, ge=0, le=1, description="Normal-looking entity page on a host from data/blocklists/domains.txt."
    )
    banned_url_word: float = Field(
        0.015, ge=0, le=1, description="Adult/gambling words in the URL host or path."
    )
    short: float = Field(0.015, ge=0, le=1, description="A page with a couple of words.")
    gibberish: float = Field(0.015, ge=0, le=1, description="Random letter strings, no real words.")
    repetitive: float = Field(0.015, ge=0, le=1, description="One line repeated many times.")
    code_or_json: float = Field(0.015, ge=0, le=1, description="Mostly JSON/JavaScript with braces.")


class HostileCounts(StrictModel):
    """How many records of each awkward kind the crawl carries (robustness tests of ingest/extraction)."""

    binary: int = Field(1, ge=0, description="Random bytes served as text/html; charset=utf-8.")
    legacy_charset: int = Field(
        2, ge=0, description="Pages in iso-8859-1 / windows-1252, charset declared in Content-Type and meta."
    )
    wrong_charset: int = Field(1, ge=0, description="windows-1252 bytes declared as utf-8.")
    undeclared_charset: int = Field(1, ge=0, description="Non-ASCII UTF-8 page with no charset anywhere.")
    malformed_html: int = Field(2, ge=0, description="Unclosed and stray tags around a normal article.")
    empty: int = Field(1, ge=0, description="HTTP 200 text/html with an empty body.")
    non_html: int = Field(2, ge=0, description="application/pdf and image/png responses, in turn.")
    redirect: int = Field(1, ge=0, description="HTTP 301 with a Location header and no body.")
    not_found: int = Field(1, ge=0, description="HTTP 404 with a small error page.")


class CrawlConfig(StrictModel):
    """The synthetic crawl. Defaults are the `tiny` size; the smoke config sets smaller numbers."""

    seed: int = Field(0, description="Seed of the knowledge base and every random choice in the crawl.")
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig, description="Entity counts.")
    pages: int = Field(3000, ge=20, description="Response records (pages) in the crawl, approximately.")
    warc_files: int = Field(4, ge=1, le=1000, description="Split the crawl into this many .warc.gz files.")
    languages: dict[str, float] = Field(
        default_factory=lambda: {"en": 0.7, "de": 0.08, "fr": 0.08, "es": 0.07, "it": 0.07},
        description="Share of good pages per language (normalised); codes from en, de, fr, es, it.",
    )
    junk: JunkFractions = Field(default_factory=JunkFractions, description="Junk page fractions per class.")
    exact_duplicate_fraction: float = Field(
        0.06, ge=0, le=0.5, description="Fraction of pages that are exact copies of good pages at other URLs."
    )
    near_duplicate_fraction: float = Field(
        0.08, ge=0, le=0.5, description="Fraction of pages that are word-edited copies of good pages."
    )
    near_duplicate_edit_rates: list[float] = Field(
        default_factory=lambda: [0.005, 0.01, 0.015, 0.03, 0.06, 0.12],
        description="Edit rates (edited words / words) drawn in turn; the default puts about half of the "
        "near duplicates at word-5-gram Jaccard >= 0.8 and half below.",
    )
    pii_fraction: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Fraction of good English pages that carry a contact paragraph with PII.",
    )
    leaked_pages: int = Field(
        6, ge=0, description="English quiz pages that contain benchmark items verbatim."
    )
    leaked_items_per_page: int = Field(4, ge=1, le=20, description="Benchmark items on each leaked page.")
    benchmark_seed: int = Field(0, description="Seed of benchmark_items(); evaluation must use the same one.")
    benchmark_size: int = Field(
        200, ge=1, description="n of benchmark_items(); leaked items come from these."
    )
    hostile: HostileCounts = Field(default_factory=HostileCounts, description="Hostile record counts.")
    request_record_fraction: float = Field(
        0.25, ge=0, le=1, description="Fraction of responses preceded by a WARC request record."
    )
    metadata_record_fraction: float = Field(
        0.1, ge=0, le=1, description="Fraction of responses followed by a WARC metadata record."
    )
    huge_page_mb: float = Field(0.0, ge=0, le=512, description="Add one page of about this many MB; 0 = off.")
    crawl_start: str = Field(
        "2024-03-01T00:00:00", description="WARC-Date of the first record (UTC); later records follow it."
    )
    reference_articles_per_entity: int = Field(
        5,
        ge=1,
        description="Encyclopedia articles per entity in knowledge/reference.jsonl (model_quality's "
        "reference text).",
    )

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SUPPORTED_LANGUAGES))
        if unknown:
            raise ValueError(f"unsupported language(s) {unknown}; choose from {list(SUPPORTED_LANGUAGES)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("language shares must be >= 0 and not all zero")
        return value

    @field_validator("near_duplicate_edit_rates")
    @classmethod
    def _rates(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < r <= 1 for r in value):
            raise ValueError("near_duplicate_edit_rates must be a non-empty list of rates in (0, 1]")
        return value

    @field_validator("crawl_start")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        datetime.fromisoformat(value)  # raises a ValueError that pydantic reports with the key
        return value


class WorldConfig(StageConfig):
    """The tiny world: an entity knowledge base and a synthetic crawl about it (`crawl.seed` seeds both)."""

    crawl: CrawlConfig = Field(
        default_factory=CrawlConfig,
        description="Knowledge base size, page count, language mix, junk/duplicate/PII/leaked/hostile "
        "pages and WARC layout; the defaults are the `tiny` size.",
    )


# What the crawl's bytes depend on besides the code it imports: the cache key must change when it does.


# What the crawl's bytes depend on besides the code it imports: the cache key must change when it does.
_WORLD_DATA = ("components/data/blocklists/domains.txt",)  # the blocklisted hosts it draws junk pages from

SPEC = stage_spec(
    "world",
    impl="components.world.crawl:world",
    config=WorldConfig,
    outputs=("crawl", "knowledge"),
    cpus=1,
    data_files=_WORLD_DATA,
)
