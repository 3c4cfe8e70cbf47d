"""Heuristic quality rules: Gopher repetition, Gopher quality, C4 and FineWeb, one block each.

The thresholds are the published ones (Gopher: Rae et al. 2021, table A1; C4: Raffel et al. 2020;
FineWeb: Penedo et al. 2024), every one a config field (the models live in `quality_config`, which
loads without pyarrow); `None` switches a single rule off and `enabled: false` a whole block. A rule
keeps a document whose measure lies AT its threshold; only beyond it is the document dropped (the
published thresholds read "<= 0.30", ">= 50 words", ...).

How we count. The published rules leave details open; these are ours, chosen after reading datatrove
(which FineWeb used) and written so that each fraction is well defined and lies in [0, 1]:

- **lines**: `text.splitlines()`, each stripped; blank lines are not lines. (datatrove keeps empty
  lines in some rules, which makes text with blank lines between paragraphs look like a list.)
- **paragraphs**: blocks separated by one or more blank lines, stripped; empty ones are not counted.
- **words**: whitespace-separated tokens with their leading and trailing punctuation and symbols
  removed ("(Paris)." -> "Paris", "don't" stays); a token left empty ("-", "|", "...") is not a word.
  This is Gopher's "words excluding punctuation-only tokens" without a language-specific tokenizer
  (datatrove uses NLTK's, which also splits "don't"); it works for every language we meet that puts
  spaces between words.
- **duplicate lines / paragraphs**: every occurrence after the first of a line (paragraph) that
  appeared before, compared after stripping; their characters are counted over the characters of all
  lines (paragraphs), whitespace at their ends excluded.
- **n-gram character fractions**, as datatrove: the characters inside the counted n-gram occurrences
  over all characters of the text (`len(text)`). An occurrence's characters are its words plus one
  space between consecutive words (punctuation between them does not count). A character covered by
  several counted occurrences counts once (Gopher: "taking care not to count characters that occur in
  overlapping n-grams more than once"), so a fraction never exceeds 1.
  - top n-gram (n = 2..4): the most frequent n-gram (of equals, the first to occur), if it occurs at
    least twice (one occurrence is not repetition; datatrove counts it too, which can drop a short text
    for its only n-gram); the characters of all its occurrences.
  - duplicated n-grams (n = 5..10): every occurrence of an n-gram that already occurred earlier in the
    text (the first occurrence is not counted, as in datatrove).
  n-grams are compared case-sensitively on the words defined above.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from components.data.documents import Block
from components.data.quality_config import (
    BULLETS,
    ELLIPSES,
    C4Config,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
)
from components.io.documents import Document

# --- text measures -----------------------------------------------------------------------------

# From the first letter/digit of a whitespace token to its last: strips punctuation at both ends in one
# C-level pass, and finds nothing in a token made only of punctuation and symbols.
_WORD = re.compile(r"[^\W_](?:\S*[^\W_])?")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")


@functools.lru_cache(maxsize=4)
def words(text: str) -> tuple[str, ...]:
    """Words as defined above: tokens stripped of edge punctuation; punctuation-only tokens dropped.
    Cached: the Gopher blocks ask for the words of the same text one after the other."""
    return tuple(_WORD.findall(text))


def lines(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [s for line in text.splitlines() if (s := line.strip())]


def paragraphs(text: str) -> list[str]:
    """Blocks of text between blank lines, stripped; empty ones dropped."""
    return [s for p in _PARAGRAPH_BREAK.split(text) if (s := p.strip())]


def duplicates(items: Iterable[str]) -> tuple[int, int, int, int]:
    """(number of items, number that repeat an earlier item, characters of all items, characters of
    the repeating items)."""
    seen: set[str] = set()
    n = dup = chars = dup_chars = 0
    for item in items:
        n += 1
        chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return n, dup, chars, dup_chars


def _ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(ws[i:] for i in range(n)), strict=False))


def _covered_chars(ws: Sequence[str], starts: Iterable[int], n: int) -> int:
    """Characters covered by the n-grams starting at `starts`: their words and the single spaces
    between words of one n-gram, each counted once however many n-grams overlap there."""
    words_covered, gaps_covered = bytearray(len(ws)), bytearray(len(ws))
    span, inner = b"\x01" * n, b"\x01" * (n - 1)
    for i in starts:
        words_covered[i : i + n] = span
        gaps_covered[i : i + n - 1] = inner  # gap k lies between word k and word k + 1
    return sum(len(w) for w, c in zip(ws, words_covered, strict=True) if c) + sum(gaps_covered)


def top_ngram_char_frac(ws: Sequence[str], n: int, text_length: int) -> float:
    """Share of the text's characters in the most frequent n-gram (0 when none occurs twice)."""
    grams = _ngrams(ws, n)
    if not grams or not text_length:
        return 0.0
    top, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    starts = [i for i, g in enumerate(grams) if g == top]
    return _covered_chars(ws, starts, n) / text_length


def dup_ngram_char_frac(ws: Sequence[str], n: int, text_length: int) -> float:
    """Share of the text's characters in n-grams that already occurred earlier in the text."""
    grams = _ngrams(ws, n)
    if len(set(grams)) == len(grams) or not text_length:
        return 0.0  # no n-gram repeats (the common case, found at C speed)
    seen: set[tuple[str, ...]] = set()
    starts = []
    for i, g in enumerate(grams):
        if g in seen:
            starts.append(i)
        else:
            seen.add(g)
    return _covered_chars(ws, starts, n) / text_length


def _text(doc: Document) -> str:
    text = doc.get("text")
    return text if isinstance(text, str) else ""


def _above(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def _below(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit


# --- Gopher repetition ---------------------------------------------------------------------------


class GopherRepetition(Block):
    """Drops documents that repeat paragraphs, lines or word n-grams too much (in that order)."""

    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig) -> None:
        self.config = config

    def process(self, doc: Document) -> str | None:
        c, text = self.config, _text(doc)
        for unit, items in (("para", paragraphs(text)), ("line", lines(text))):
            n, dup, chars, dup_chars = duplicates(items)
            if n and _above(dup / n, getattr(c, f"dup_{unit}_frac")):
                return f"dup_{unit}_frac"
            if chars and _above(dup_chars / chars, getattr(c, f"dup_{unit}_char_frac")):
                return f"dup_{unit}_char_frac"
        ws = words(text)
        if not ws:
            return None
        for n in (2, 3, 4):
            limit = getattr(c, f"top_{n}gram_char_frac")
            if limit is not None and top_ngram_char_frac(ws, n, len(text)) > limit:
                return f"top_{n}gram_char_frac"
        for n in range(5, 11):
            limit = getattr(c, f"dup_{n}gram_char_frac")
            frac = dup_ngram_char_frac(ws, n, len(text))
            if limit is not None and frac > limit:
                return f"dup_{n}gram_char_frac"
            if frac == 0:
                break  # no repeated n-gram, so no repeated longer one either
        return None


# --- Gopher quality ------------------------------------------------------------------------------


class GopherQuality(Block):
    """Drops documents whose length, word shapes, symbols or stop words do not look like prose."""

    name = "gopher_quality"

    def __init__(self, config: GopherQualityConfig) -> None:
        self.config = config
        self.stop_words = frozenset(w.lower() for w in config.stop_words)

    def process(self, doc: Document) -> str | None:
        c, text = self.config, _text(doc)
        ws = words(text)
        n = len(ws)
        if _below(n, c.min_words) or n == 0:
            return "too_few_words"
        if _above(n, c.max_words):
            return "too_many_words"
        mean_length = sum(map(len, ws)) / n
        if _below(mean_length, c.min_mean_word_length):
            return "short_mean_word_length"
        if _above(mean_length, c.max_mean_word_length):
            return "long_mean_word_length"
        if _above(text.count("#") / n, c.max_hash_ratio):
            return "hash_ratio"
        if _above(sum(text.count(e) for e in ELLIPSES) / n, c.max_ellipsis_ratio):
            return "ellipsis_ratio"
        ls = lines(text)
        if _above(sum(s.startswith(BULLETS) for s in ls) / len(ls), c.max_bullet_lines_frac):
            return "bullet_lines"
        if _above(sum(s.endswith(ELLIPSES) for s in ls) / len(ls), c.max_ellipsis_lines_frac):
            return "ellipsis_lines"
        with_letter = sum(1 for w in ws if w.isalpha() or any(ch.isalpha() for ch in w))
        if _below(with_letter / n, c.min_alpha_words_frac):
            return "alpha_words"
        if c.min_stop_words is not None:
            present = self.stop_words.intersection(w.lower() for w in ws)
            if len(present) < c.min_stop_words:
                return "stop_words"
        return None


# --- C4 ------------------------------------------------------------------------------------------

# Wikipedia-style markers, with the spaces before them ("big [1]." -> "big.").
CITATION = re.compile(r"\s*(?:\[\d*\]|\[edit\]|\[citation needed\])", re.IGNORECASE)
# A sentence ends at terminal punctuation (plus closing quotes/brackets) followed by whitespace; text
# after the last such point is a sentence too. "3.4 million" does not split; "Dr. Smith" does (NLTK's
# punkt, which datatrove uses, knows common abbreviations; we accept a slight overcount).
_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*\s+")
C4_TERMINAL = (".", "?", "!", '"', "'")


def count_sentences(line: str) -> int:
    """Sentences in one line, for C4's `min_sentences` (see `_SENTENCE_END`)."""
    return sum(1 for s in _SENTENCE_END.split(line) if s.strip())


class C4(Block):
    """C4's rules, line by line in C4's order. Kept documents get the cleaned text; the lines removed
    are counted per reason in `counters` (`c4.lines_removed.<reason>`).

    As in C4, the document-level checks ('lorem ipsum', '{') look only at lines that survived the line
    rules before them (word length, terminal punctuation, words per line). Words per line are counted
    after citation markers are stripped (so "[1] [2] [3]" is not a line of three words).
    """

    name = "c4"

    def __init__(self, config: C4Config) -> None:
        self.config = config
        self.policy = tuple(p.lower() for p in config.policy_phrases)
        self.counters: Counter = Counter()

    def _removed(self, reason: str) -> None:
        self.counters[f"c4.lines_removed.{reason}"] += 1

    def process(self, doc: Document) -> str | None:
        c = self.config
        kept: list[str] = []
        sentences = 0
        for raw in _text(doc).splitlines():
            line = raw.strip()
            if not line:
                continue
            too_long = c.max_word_length is not None and len(line) > c.max_word_length
            if too_long and any(len(w) > c.max_word_length for w in line.split()):
                self._removed("too_long_word")
                continue
            if c.remove_citations:
                line = CITATION.sub("", line).strip()
            if c.require_terminal_punctuation and (not line.endswith(C4_TERMINAL) or line.endswith("...")):
                self._removed("no_terminal_punctuation")
                continue
            if c.min_words_per_line is not None and len(line.split()) < c.min_words_per_line:
                self._removed("too_few_words")
                continue
            lower = line.lower()
            if c.drop_lorem_ipsum and "lorem ipsum" in lower:
                return "lorem_ipsum"
            if c.remove_javascript_lines and "javascript" in lower:
                self._removed("javascript")
                continue
            if c.drop_curly_bracket and "{" in line:
                return "curly_bracket"
            if any(p in lower for p in self.policy):
                self._removed("policy")
                continue
            sentences += count_sentences(line)
            kept.append(line)
        if c.min_sentences is not None and sentences < c.min_sentences:
            return "too_few_sentences"
        doc["text"] = "\n".join(kept)
        return None


# --- FineWeb -------------------------------------------------------------------------------------

# A line ends a sentence when its last character is one of Unicode's Sentence_Terminal marks (those of
# the scripts in common use), as in FineWeb's code (datatrove's TERMINAL_PUNCTUATION lists the same
# marks and rarer ones). Not closing quotes: a line ending in '."' does not count, as in FineWeb.
FINEWEB_TERMINAL = tuple("!.?։؝؞؟۔܀܁܂।॥၊။።፧፨។៕᠃᠉‼‽⁇⁈⁉。꓿꘎꘏︒﹒﹖﹗！．？｡")


class FineWebQuality(Block):
    """Drops list-like, unpunctuated and line-duplicating documents."""

    name = "fineweb"

    def __init__(self, config: FineWebQualityConfig) -> None:
        self.config = config

    def process(self, doc: Document) -> str | None:
        c, text = self.config, _text(doc)
        ls = lines(text)
        if not ls:
            return None  # nothing to measure; the stage drops empty documents itself
        if _below(sum(s.endswith(FINEWEB_TERMINAL) for s in ls) / len(ls), c.min_line_punct_frac):
            return "line_punct_frac"
        if _above(sum(len(s) <= c.short_line_length for s in ls) / len(ls), c.max_short_line_frac):
            return "short_line_frac"
        _, _, chars, dup_chars = duplicates(ls)
        if _above(dup_chars / chars, c.max_dup_line_char_frac):
            return "dup_line_char_frac"
        n_words = len(words(text))
        if n_words and _above((len(ls) - 1) / n_words, c.max_newline_per_word):
            return "newline_per_word"
        return None


# --- the end of the pass -------------------------------------------------------------------------


class NotEmpty(Block):
    """Drops documents left without text (C4 can remove every line when min_sentences is off)."""

    name = "quality"

    def process(self, doc: Document) -> str | None:
        return None if _text(doc).strip() else "empty"
