"""The `pii` stage's config and declaration: light (no libphonenumber, no pyarrow), so that a pipeline
config loads and validates fast; `components.data.pii` is the code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from components.core.config import StageConfig
from components.data.filter_spec import filter_spec

PIIType = Literal["email", "phone", "ipv4", "ipv6"]
PII_TYPES: tuple[str, ...] = ("email", "phone", "ipv4", "ipv6")  # also the order drop reasons are picked in
# Used when a document gives no hint (no or an unmapped language, no country-code TLD): the largest
# web languages' countries. International numbers (+CC ...) are found whatever the region.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")


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
        import phonenumbers  # here, not at the top: only a config that names regions pays for it

        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166 codes such as US, GB, DE")
        return regions


SPEC = filter_spec("pii", PIIConfig)
