"""The `quality` stage's config and declaration, without the stage's code (`components.data.quality`), so that
a pipeline config loads and validates fast. The rules' config models live here too, with the word lists
their defaults name; the rules themselves (`components.data.quality_rules`) run on document shards and
import pyarrow with them. Thresholds and how each fraction is counted: see `quality_rules`."""

from __future__ import annotations

from pydantic import Field

from components.core.config import StageConfig, StrictModel
from components.data.filter_spec import filter_spec

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "‣", "◦", "⁃", "●", "○", "▪", "■", "·", "-", "–", "*")
ELLIPSES = ("...", "…")
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


def _frac(description: str, default: float) -> float | None:
    return Field(default, ge=0, le=1, description=description + " None switches the rule off.")


class GopherRepetitionConfig(StrictModel):
    """Gopher's repetition removal (Rae et al. 2021, table A1). Drop reasons are the field names."""

    enabled: bool = Field(True, description="False switches the whole block off.")
    dup_para_frac: float | None = _frac("Max fraction of paragraphs that repeat an earlier one.", 0.30)
    dup_para_char_frac: float | None = _frac("Max fraction of characters in repeated paragraphs.", 0.20)
    dup_line_frac: float | None = _frac("Max fraction of lines that repeat an earlier one.", 0.30)
    dup_line_char_frac: float | None = _frac("Max fraction of characters in repeated lines.", 0.20)
    top_2gram_char_frac: float | None = _frac("Max character share of the top word 2-gram.", 0.20)
    top_3gram_char_frac: float | None = _frac("Max character share of the top word 3-gram.", 0.18)
    top_4gram_char_frac: float | None = _frac("Max character share of the top word 4-gram.", 0.16)
    dup_5gram_char_frac: float | None = _frac("Max character share of duplicated 5-grams.", 0.15)
    dup_6gram_char_frac: float | None = _frac("Max character share of duplicated 6-grams.", 0.14)
    dup_7gram_char_frac: float | None = _frac("Max character share of duplicated 7-grams.", 0.13)
    dup_8gram_char_frac: float | None = _frac("Max character share of duplicated 8-grams.", 0.12)
    dup_9gram_char_frac: float | None = _frac("Max character share of duplicated 9-grams.", 0.11)
    dup_10gram_char_frac: float | None = _frac("Max character share of duplicated 10-grams.", 0.10)


class GopherQualityConfig(StrictModel):
    """Gopher's quality filter (Rae et al. 2021, section A.1.1). Words as defined in the module doc.

    The stop-word rule is English: it drops every document in a language without these words. The
    quality stage runs on whatever languages language ID kept, so set `min_stop_words: null` (or
    list the language's own stop words) when keeping other languages.
    """

    enabled: bool = Field(True, description="False switches the whole block off.")
    min_words: int | None = Field(50, ge=0, description="Drop with fewer words (too_few_words).")
    max_words: int | None = Field(100_000, ge=0, description="Drop with more words (too_many_words).")
    min_mean_word_length: float | None = Field(
        3, ge=0, description="Drop when the mean word length (characters) is below (short_mean_word_length)."
    )
    max_mean_word_length: float | None = Field(
        10, ge=0, description="Drop when the mean word length is above (long_mean_word_length)."
    )
    max_hash_ratio: float | None = Field(0.1, ge=0, description="Max '#' characters per word (hash_ratio).")
    max_ellipsis_ratio: float | None = Field(
        0.1, ge=0, description="Max ellipses ('...' or '…') per word (ellipsis_ratio)."
    )
    max_bullet_lines_frac: float | None = _frac(
        f"Max fraction of lines starting with a bullet, one of {' '.join(BULLETS)} (bullet_lines). "
        "'-' counts, as in datatrove: trafilatura writes list items as '- item', so a page that is one "
        "long list is dropped.",
        0.90,
    )
    max_ellipsis_lines_frac: float | None = _frac(
        "Max fraction of lines ending with an ellipsis (ellipsis_lines).", 0.30
    )
    min_alpha_words_frac: float | None = _frac(
        "Min fraction of words that contain a letter (alpha_words).", 0.80
    )
    min_stop_words: int | None = Field(
        2, ge=0, description="Min number of distinct `stop_words` present, case-insensitive (stop_words)."
    )
    stop_words: list[str] = Field(
        default_factory=lambda: list(GOPHER_STOP_WORDS), description="Gopher's English stop words."
    )


class C4Config(StrictModel):
    """C4's line and page rules (Raffel et al. 2020, plus the rules of its code), as FineWeb uses them:
    lines are removed from kept documents; a few findings drop the whole document."""

    enabled: bool = Field(True, description="False switches the whole block off.")
    max_word_length: int | None = Field(
        1000, ge=1, description="Remove lines with a whitespace-separated word longer than this."
    )
    remove_citations: bool = Field(True, description="Strip Wikipedia-style markers: [1], [edit], ...")
    require_terminal_punctuation: bool = Field(
        False,
        description="Remove lines that do not end in . ? ! \" ' (or end in '...'). Off by default, as in "
        "FineWeb: it removes too much (headings, list items, captions).",
    )
    min_words_per_line: int | None = Field(3, ge=1, description="Remove lines with fewer words.")
    remove_javascript_lines: bool = Field(True, description="Remove lines that mention 'javascript'.")
    policy_phrases: list[str] = Field(
        default_factory=lambda: list(POLICY_PHRASES),
        description="Remove lines containing any of these (lowercase) phrases; [] switches it off.",
    )
    drop_lorem_ipsum: bool = Field(True, description="Drop the document on 'lorem ipsum' (lorem_ipsum).")
    drop_curly_bracket: bool = Field(True, description="Drop the document on a '{' (curly_bracket).")
    min_sentences: int | None = Field(
        5, ge=0, description="Drop the document if fewer sentences remain (too_few_sentences)."
    )


class FineWebQualityConfig(StrictModel):
    """FineWeb's own rules (Penedo et al. 2024), applied after C4 has removed lines."""

    enabled: bool = Field(True, description="False switches the whole block off.")
    min_line_punct_frac: float | None = _frac(
        "Min fraction of lines ending in a sentence terminal (. ! ? and the other scripts' marks, "
        "`FINEWEB_TERMINAL`) (line_punct_frac).",
        0.12,
    )
    short_line_length: int = Field(30, ge=0, description="A line of at most this many characters is short.")
    max_short_line_frac: float | None = _frac("Max fraction of short lines (short_line_frac).", 0.67)
    max_dup_line_char_frac: float | None = _frac(
        "Max fraction of characters in lines that repeat an earlier line (dup_line_char_frac).", 0.01
    )
    max_newline_per_word: float | None = Field(
        0.3,
        ge=0,
        description="Max line breaks per word (newline_per_word); line breaks are counted between "
        "non-blank lines, so blank lines do not add to them.",
    )


class QualityConfig(StageConfig):
    """Heuristic quality filtering: Gopher repetition, Gopher quality, C4, FineWeb (in this order)."""

    gopher_repetition: GopherRepetitionConfig = Field(
        default_factory=GopherRepetitionConfig, description="Repeated paragraphs, lines and n-grams."
    )
    gopher_quality: GopherQualityConfig = Field(
        default_factory=GopherQualityConfig, description="Length, word shapes, symbols, stop words."
    )
    c4: C4Config = Field(default_factory=C4Config, description="C4 line removal and page rules.")
    fineweb: FineWebQualityConfig = Field(
        default_factory=FineWebQualityConfig, description="FineWeb's line-based rules."
    )
    samples_per_reason: int = Field(
        5, ge=0, description="Dropped documents per reason logged to MLflow (PII scrubbed)."
    )


SPEC = filter_spec("quality", QualityConfig)
