"""Heuristic quality rules: how we count, and every rule at its threshold (just kept, just dropped).

Each rule is tested alone (the block's other rules switched off), on documents built here whose
measure lies exactly at the published threshold (kept) or one step beyond it (dropped).
"""

from __future__ import annotations

import pytest

from components.data.quality import QualityConfig, make_blocks
from components.data.quality_config import (
    C4Config,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
)
from components.data.quality_rules import (
    C4,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    NotEmpty,
    count_sentences,
    dup_ngram_char_frac,
    duplicates,
    lines,
    paragraphs,
    top_ngram_char_frac,
    words,
)


def unique(i: int) -> str:
    """A distinct 5-character word."""
    return f"w{i:04d}"


def only(config_cls, rule: str, **extra):
    """A block config with every rule but `rule` switched off."""
    fields = [
        name
        for name, field in config_cls.model_fields.items()
        if name != rule and field.annotation is not bool and "None" in str(field.annotation)
    ]
    return config_cls(**{name: None for name in fields}, **extra)


def decide(block, text: str) -> str | None:
    return block.process({"text": text})


# --- how we count ------------------------------------------------------------------------------


def test_words_strip_edge_punctuation_and_skip_symbols():
    text = "(Paris) is big, isn't it? — 3.4 million... #tag | e-mail: a@b.c ..."
    expected = ["Paris", "is", "big", "isn't", "it", "3.4", "million", "tag", "e-mail", "a@b.c"]
    assert list(words(text)) == expected
    assert words("") == () and words("-- | ...") == ()


def test_lines_and_paragraphs_ignore_blank_ones():
    text = "  one  \n\n\n two\n   \nthree\n"
    assert lines(text) == ["one", "two", "three"]
    assert paragraphs(text) == ["one", "two", "three"]
    assert paragraphs("a\nb\n\nc\n \n\nd") == ["a\nb", "c", "d"]


def test_duplicates_count_repeats_after_the_first():
    assert duplicates(["ab", "c", "ab", "ab", "de"]) == (5, 2, 9, 4)


def test_top_ngram_char_fraction_by_hand():
    ws = ["aa", "bb", "aa", "bb", "cc"]
    text = " ".join(ws)  # 14 characters
    # "aa bb" occurs twice: 2 x (2 + 1 + 2) characters.
    assert top_ngram_char_frac(ws, 2, len(text)) == pytest.approx(10 / 14)
    # Overlapping occurrences count each character once: "x x x x" has "x x" 3 times, covering all 7.
    assert top_ngram_char_frac(["x"] * 4, 2, 7) == pytest.approx(1.0)
    # An n-gram that occurs once is not repetition.
    assert top_ngram_char_frac(["a", "b", "c", "d"], 2, 7) == 0.0


def test_dup_ngram_char_fraction_by_hand():
    ws = ["a", "b", "c", "d", "e", "a", "b", "c", "d", "e", "f"]
    text = " ".join(ws)  # 21 characters
    # The second "a b c d e" repeats the first: 5 letters + 4 spaces, the first copy not counted.
    assert dup_ngram_char_frac(ws, 5, len(text)) == pytest.approx(9 / 21)
    assert dup_ngram_char_frac(ws, 6, len(text)) == 0.0


def test_sentences():
    assert count_sentences("It costs 3.4 million. Really? Yes!") == 3
    assert count_sentences('He said "stop." Then he left') == 2
    assert count_sentences("no terminal punctuation at all") == 1
    assert count_sentences("Dr. Smith came.") == 2  # no abbreviation list: a slight overcount


# --- Gopher repetition --------------------------------------------------------------------------


def repeated_lines(n_unique: int, n_dup: int, sep: str = "\n") -> str:
    """Ten-character lines; the duplicates repeat the first line."""
    items = [f"line {unique(i)}" for i in range(n_unique)] + [f"line {unique(0)}"] * n_dup
    return sep.join(items)


@pytest.mark.parametrize(
    ("rule", "sep", "keep", "drop"),
    [
        ("dup_line_frac", "\n", (70, 30), (69, 31)),  # 0.30 of lines vs 0.31
        ("dup_line_char_frac", "\n", (80, 20), (79, 21)),  # 0.20 of characters vs 0.21
        ("dup_para_frac", "\n\n", (70, 30), (69, 31)),
        ("dup_para_char_frac", "\n\n", (80, 20), (79, 21)),
    ],
)
def test_gopher_duplicate_lines_and_paragraphs(rule, sep, keep, drop):
    block = GopherRepetition(only(GopherRepetitionConfig, rule))
    assert decide(block, repeated_lines(*keep, sep)) is None
    assert decide(block, repeated_lines(*drop, sep)) == rule


def top_ngram_text(n: int, occurrences: int, fillers: int) -> str:
    """`occurrences` copies of one n-gram of 5-letter words, each followed by unique filler words."""
    gram = [f"g{i:04d}" for i in range(n)]
    ws: list[str] = []
    per_copy = fillers // occurrences
    for k in range(occurrences):
        ws += gram + [unique(k * 1000 + j) for j in range(per_copy + (1 if k < fillers % occurrences else 0))]
    return " ".join(ws)


def dup_ngram_text(n: int, fillers: int) -> str:
    """One n-gram of 5-letter words written twice, then unique filler words."""
    gram = [f"g{i:04d}" for i in range(n)]
    return " ".join(gram + [unique(9000)] + gram + [unique(j) for j in range(fillers)])


def boundary(build, measure, threshold: float, start: int) -> tuple[str, str, float, float]:
    """The two documents `build(k)`, `build(k + 1)` whose measure crosses `threshold` (measure falls
    as k grows): the first is just above it, the second at or just below."""
    k = start
    while measure(build(k + 1)) > threshold:
        k += 1
    high, low = build(k), build(k + 1)
    assert measure(high) > threshold >= measure(low), "no crossing found"
    return low, high, measure(low), measure(high)


@pytest.mark.parametrize(("n", "threshold"), [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_gopher_top_ngram_at_threshold(n, threshold):
    rule = f"top_{n}gram_char_frac"
    block = GopherRepetition(only(GopherRepetitionConfig, rule))

    def measure(text: str) -> float:
        return top_ngram_char_frac(words(text), n, len(text))

    keep, drop, at, above = boundary(lambda k: top_ngram_text(n, 5, k), measure, threshold, start=5)
    assert above - at < 0.01  # one filler word apart
    assert decide(block, keep) is None
    assert decide(block, drop) == rule


def test_gopher_top_ngram_exactly_at_threshold_is_kept():
    # 5 x "g0000 g0001" (11 characters) in 46 five-letter words: 55 / 275 = 0.20 exactly.
    text = top_ngram_text(2, 5, 36)
    assert len(text) == 275 and top_ngram_char_frac(words(text), 2, len(text)) == 0.2
    assert decide(GopherRepetition(only(GopherRepetitionConfig, "top_2gram_char_frac")), text) is None


@pytest.mark.parametrize(
    ("n", "threshold"), [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
)
def test_gopher_duplicated_ngrams_at_threshold(n, threshold):
    rule = f"dup_{n}gram_char_frac"
    block = GopherRepetition(only(GopherRepetitionConfig, rule))

    def measure(text: str) -> float:
        return dup_ngram_char_frac(words(text), n, len(text))

    keep, drop, at, above = boundary(lambda k: dup_ngram_text(n, k), measure, threshold, start=0)
    assert above - at < 0.01
    assert decide(block, keep) is None
    assert decide(block, drop) == rule


def test_gopher_repetition_defaults_drop_a_repeated_line_page():
    text = "\n".join(["Click here to subscribe to our newsletter."] * 30)
    assert decide(GopherRepetition(GopherRepetitionConfig()), text) == "dup_line_frac"


# --- Gopher quality -----------------------------------------------------------------------------


def prose(n_words: int, length: int = 5) -> list[str]:
    return [f"w{i:0{length - 1}d}" for i in range(n_words)]


def test_gopher_word_count_bounds():
    block = GopherQuality(only(GopherQualityConfig, "min_words"))
    assert decide(block, " ".join(prose(50))) is None
    assert decide(block, " ".join(prose(49)) + " — !") == "too_few_words"  # symbols are not words
    block = GopherQuality(only(GopherQualityConfig, "max_words"))
    assert decide(block, "word " * 100_000) is None
    assert decide(block, "word " * 100_001) == "too_many_words"


def test_gopher_mean_word_length_bounds():
    block = GopherQuality(only(GopherQualityConfig, "min_mean_word_length"))
    assert decide(block, " ".join(["abc"] * 50)) is None  # mean 3
    assert decide(block, " ".join(["abc"] * 49 + ["ab"])) == "short_mean_word_length"  # 2.98
    block = GopherQuality(only(GopherQualityConfig, "max_mean_word_length"))
    assert decide(block, " ".join(["a" * 10] * 50)) is None  # mean 10
    assert decide(block, " ".join(["a" * 10] * 49 + ["a" * 11])) == "long_mean_word_length"  # 10.02


@pytest.mark.parametrize(
    ("rule", "symbol"), [("max_hash_ratio", "#"), ("max_ellipsis_ratio", "..."), ("max_ellipsis_ratio", "…")]
)
def test_gopher_symbol_ratios(rule, symbol):
    block = GopherQuality(only(GopherQualityConfig, rule))
    reason = "hash_ratio" if symbol == "#" else "ellipsis_ratio"
    base = " ".join(prose(50))
    assert decide(block, base + f" {symbol}" * 5) is None  # 5 per 50 words = 0.1
    assert decide(block, base + f" {symbol}" * 6) == reason


def test_gopher_bullet_and_ellipsis_lines():
    block = GopherQuality(only(GopherQualityConfig, "max_bullet_lines_frac"))
    items = [f"{b} item {unique(i)}" for i, b in zip(range(91), ["•", "-", "*", "▪"] * 30, strict=False)]
    plain = [f"line {unique(i)}" for i in range(10)]
    assert decide(block, "\n".join(items[:90] + plain)) is None  # 90 of 100 lines
    assert decide(block, "\n".join(items[:91] + plain[:9])) == "bullet_lines"  # 91 of 100
    block = GopherQuality(only(GopherQualityConfig, "max_ellipsis_lines_frac"))
    trailing = [f"and so on {unique(i)}..." for i in range(31)]
    plain = [f"line {unique(i)}." for i in range(70)]
    assert decide(block, "\n".join(trailing[:30] + plain)) is None  # 30 of 100
    assert decide(block, "\n".join(trailing[:31] + plain[:69])) == "ellipsis_lines"  # 31 of 100


def test_gopher_words_with_letters():
    block = GopherQuality(only(GopherQualityConfig, "min_alpha_words_frac"))
    numbers = [str(1000 + i) for i in range(11)]
    assert decide(block, " ".join(prose(40) + numbers[:10])) is None  # 40 of 50 = 0.8
    assert decide(block, " ".join(prose(39) + numbers[:11])) == "alpha_words"  # 39 of 50


def test_gopher_stop_words_distinct_and_case_insensitive():
    block = GopherQuality(only(GopherQualityConfig, "min_stop_words"))
    assert decide(block, "The cat OF the hill") is None  # "the" and "of"
    assert decide(block, "the the the cat") == "stop_words"  # one distinct stop word
    # The stop-word list is configurable, e.g. German for a German corpus.
    german = GopherQuality(only(GopherQualityConfig, "min_stop_words", stop_words=["der", "und"]))
    assert decide(german, "Der Hund und die Katze") is None


def test_gopher_quality_defaults_keep_prose():
    text = " ".join(
        ["The river of the city flows with the water to the sea and that is all we have with us."] * 5
    )
    assert decide(GopherQuality(GopherQualityConfig()), text) is None


# --- C4 ----------------------------------------------------------------------------------------


def c4(**overrides) -> C4:
    return C4(C4Config(**{"min_sentences": None, **overrides}))


def test_c4_removes_lines_and_rewrites_the_text():
    block = c4()
    doc = {
        "text": "\n".join(
            [
                "A heading",  # 2 words
                "Paris is a large city.[1] It has many parks [citation needed].",
                "Please enable JavaScript to see the map.",
                "We use cookies to improve your experience.",
                "Read our Privacy Policy before you go.",
                "word " + "x" * 1001,
                "An ordinary line without punctuation",
            ]
        )
    }
    assert block.process(doc) is None
    assert doc["text"] == "Paris is a large city. It has many parks.\nAn ordinary line without punctuation"
    assert block.counters == {
        "c4.lines_removed.too_few_words": 1,
        "c4.lines_removed.javascript": 1,
        "c4.lines_removed.policy": 2,
        "c4.lines_removed.too_long_word": 1,
    }


def test_c4_word_length_and_words_per_line_at_threshold():
    doc = {"text": "a " + "x" * 1000 + " c\na " + "x" * 1001 + " c"}
    assert c4().process(doc) is None
    assert doc["text"] == "a " + "x" * 1000 + " c"
    doc = {"text": "three words here\ntwo words\n[1] [2] [3]"}  # citations are not words
    assert c4().process(doc) is None and doc["text"] == "three words here"


def test_c4_citation_stripping():
    doc = {"text": "Lyon is old.[12] Its bridges [edit] are famous [Citation needed]. [3][4]"}
    assert c4().process(doc) is None
    assert doc["text"] == "Lyon is old. Its bridges are famous."
    doc = {"text": "Lyon is old.[12] It has bridges."}
    assert c4(remove_citations=False).process(doc) is None and "[12]" in doc["text"]


def test_c4_document_rules():
    assert c4().process({"text": "Some text here.\nLorem ipsum dolor sit amet."}) == "lorem_ipsum"
    assert c4().process({"text": 'Some text here.\nvar x = {"a": 1};'}) == "curly_bracket"
    # As in C4, only lines that survive the line rules before are looked at.
    assert c4().process({"text": "Lorem ipsum\n{}\nThis line is fine."}) is None
    assert c4(drop_lorem_ipsum=False).process({"text": "Lorem ipsum dolor sit amet."}) is None


def test_c4_min_sentences_at_threshold():
    block = C4(C4Config())
    five = "One two three. Four five six! Seven eight nine?\nTen eleven twelve. Thirteen fourteen."
    assert count_sentences(five.replace("\n", " ")) == 5
    assert block.process({"text": five}) is None
    assert block.process({"text": five.rsplit(" Thirteen", 1)[0]}) == "too_few_sentences"


def test_c4_terminal_punctuation_rule_off_by_default():
    text = "A line without punctuation\nA line that trails off...\nA finished line."
    doc = {"text": text}
    assert c4().process(doc) is None and doc["text"] == text
    doc = {"text": text}
    assert c4(require_terminal_punctuation=True).process(doc) is None
    assert doc["text"] == "A finished line."


# --- FineWeb -----------------------------------------------------------------------------------


def fineweb(rule: str, **extra) -> FineWebQuality:
    return FineWebQuality(only(FineWebQualityConfig, rule, **extra))


def test_fineweb_terminal_punctuation_lines():
    block = fineweb("min_line_punct_frac")
    ended = [f"a line {unique(i)}." for i in range(12)]
    open_ = [f"a line {unique(i)}" for i in range(100, 200)]
    assert decide(block, "\n".join(ended[:12] + open_[:88])) is None  # 12 of 100
    assert decide(block, "\n".join(ended[:11] + open_[:89])) == "line_punct_frac"  # 11 of 100


def test_fineweb_terminals_are_sentence_terminals_not_quotes():
    """As FineWeb's code: '."' ends no sentence; other scripts' full stops do (checked against
    datatrove's FineWebQualityFilter on real pages, tests/bench/curation_agreement.py)."""
    block = fineweb("min_line_punct_frac")
    open_ = [f"a line {unique(i)}" for i in range(100, 188)]
    quoted = [f'he said "line {unique(i)}."' for i in range(12)]
    assert decide(block, "\n".join(quoted + open_)) == "line_punct_frac"  # 0 of 100
    for mark in ("।", "。", "؟", "！", "‼"):
        ended = [f"a line {unique(i)}{mark}" for i in range(12)]
        assert decide(block, "\n".join(ended + open_)) is None, mark  # 12 of 100


def test_fineweb_short_lines():
    block = fineweb("max_short_line_frac")
    short = [f"{unique(i)}" + "s" * 25 for i in range(68)]  # exactly 30 characters: short
    long_ = [f"{unique(i)}" + "l" * 26 for i in range(100, 200)]  # 31 characters: not short
    assert len(short[0]) == 30 and len(long_[0]) == 31
    assert decide(block, "\n".join(short[:67] + long_[:33])) is None  # 67 of 100
    assert decide(block, "\n".join(short[:68] + long_[:32])) == "short_line_frac"  # 68 of 100


def test_fineweb_duplicated_line_characters():
    block = fineweb("max_dup_line_char_frac")
    ten = [f"line {unique(i)}" for i in range(100)]  # 10 characters each
    assert decide(block, "\n".join([*ten[:99], ten[0]])) is None  # 10 of 1000 = 0.01
    eleven = "line " + unique(7) + "!"
    assert decide(block, "\n".join([*ten[:98], eleven, eleven])) == "dup_line_char_frac"  # 11 / 1002


def test_fineweb_newlines_per_word():
    block = fineweb("max_newline_per_word")
    ws = prose(100)
    sizes = [4] * 7 + [3] * 24  # 100 words on 31 lines: 30 line breaks
    rows, start = [], 0
    for size in sizes:
        rows.append(" ".join(ws[start : start + size]))
        start += size
    at = "\n".join(rows)
    assert len(words(at)) == 100 and len(lines(at)) == 31
    assert decide(block, at) is None  # 30 / 100 = 0.3
    first, rest = rows[0].split(" ", 1)
    above = "\n".join([first, rest, *rows[1:]])  # 32 lines
    assert decide(block, above) == "newline_per_word"  # 31 / 100
    # Blank lines are not line breaks.
    assert decide(block, at.replace("\n", "\n\n")) is None


# --- the stage's blocks ------------------------------------------------------------------------


def test_blocks_are_switchable_and_in_fineweb_order():
    assert [b.name for b in make_blocks(QualityConfig())] == [
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "quality",
    ]
    config = QualityConfig.model_validate({"gopher_repetition": {"enabled": False}, "c4": {"enabled": False}})
    assert [b.name for b in make_blocks(config)] == ["gopher_quality", "fineweb", "quality"]


def test_empty_text_is_dropped_at_the_end():
    assert NotEmpty().process({"text": " \n "}) == "empty"
    assert NotEmpty().process({"text": None}) == "empty"
    assert NotEmpty().process({"text": "x"}) is None
