"""The `url_filter` stage's config and declaration: light (no pyarrow, no libphonenumber), so that a pipeline
config loads and validates fast; `components.data.url_filter` is the code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.core.config import StageConfig
from components.data.filter_spec import filter_spec

ListKind = Literal["domains", "urls", "banned_words", "soft_banned_words", "banned_subwords"]
LIST_KINDS: tuple[ListKind, ...] = ("domains", "urls", "banned_words", "soft_banned_words", "banned_subwords")


class UrlFilterConfig(StageConfig):
    """Blocklists and banned words applied to each document's URL."""

    shipped_lists: list[ListKind] = Field(
        default_factory=lambda: list(LIST_KINDS),
        description="Which of our own lists (components/data/blocklists/<kind>.txt) to use; [] uses "
        "only the user's lists.",
    )
    domain_lists: list[str] = Field(
        default_factory=list,
        description="Extra domain list files (local paths or URLs), one domain per line as in UT1's "
        "`domains` files; a listed domain also blocks all its subdomains. Files are identified by path "
        "in the cache key: after editing one, rerun with --force (or give it a new name).",
    )
    url_lists: list[str] = Field(
        default_factory=list, description="Extra URL list files, one URL per line (scheme optional)."
    )
    banned_word_lists: list[str] = Field(
        default_factory=list, description="Extra hard-banned word files: one such URL token drops."
    )
    soft_banned_word_lists: list[str] = Field(
        default_factory=list, description="Extra soft-banned word files: `soft_word_threshold` of them drop."
    )
    banned_subword_lists: list[str] = Field(
        default_factory=list, description="Extra banned sub-word files, matched inside the normalised URL."
    )
    soft_word_threshold: int = Field(
        2, ge=1, description="Drop when at least this many different soft-banned words are URL tokens."
    )
    samples_per_reason: int = Field(
        5, ge=0, description="Dropped documents per reason logged to MLflow (PII scrubbed)."
    )

    def external_inputs(self) -> list[str]:
        lists = (self.domain_lists, self.url_lists, self.banned_word_lists, self.soft_banned_word_lists)
        return [*(p for group in lists for p in group), *self.banned_subword_lists]


SPEC = filter_spec("url_filter", UrlFilterConfig, data_files=("components/data/blocklists",))
