import json
import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenizers import Regex, Tokenizer, pre_tokenizers

from components.tokenizer.bpe import (
    BYTE_SYMBOLS,
    EOT,
    IM_END,
    IM_SEP,
    IM_START,
    TokenizerConfig,
    TokenizerError,
    bytes_per_token,
    decode,
    encode_batch,
    eot_id,
    load_tokenizer,
    special_token_ids,
    split_pattern,
    train_tokenizer,
)

VOCAB = 512
N_SPECIAL = 6 + 8  # default special tokens + default reserved

_VOCABULARY_TEXT = """
the of and to in is was for on that with as by at from his her their city country river mountain
people capital population language known north south east west founded century king queen war trade
market harbour island village festival museum university library bridge temple castle
Aldoria Brenmark Corvatha Dunmere Eskelund Faroth Gralvik Hollow Istria Jorvane
"""
_WORDS = _VOCABULARY_TEXT.split()


def make_corpus(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 15))]
            words[0] = words[0].capitalize()
            if rng.random() < 0.5:
                words.insert(rng.randrange(len(words)), str(rng.choice([1848, 2024, 1999, 12, 350000])))
            sentences.append(" ".join(words) + rng.choice([".", ".", "!", "?", ","]))
        docs.append(" ".join(sentences) + ("\n\n" if rng.random() < 0.3 else ""))
    return docs


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(make_corpus(600, seed=0), TokenizerConfig(vocab_size=VOCAB))


# --- training --------------------------------------------------------------------------------------


def test_vocab_size_is_exact_and_special_tokens_take_the_last_ids(tok):
    assert tok.get_vocab_size() == VOCAB
    ids = special_token_ids(tok)
    assert list(ids) == [*TokenizerConfig().special_tokens, *(f"<|reserved_{i}|>" for i in range(6))]
    assert list(ids.values()) == list(range(VOCAB - N_SPECIAL, VOCAB))
    assert eot_id(tok) == VOCAB - N_SPECIAL == 498
    assert ids[IM_START] == 499 and ids[IM_SEP] == 500 and ids[IM_END] == 501


def test_tool_end_tokens_took_the_first_two_reserved_slots():
    # Before tool use the defaults were six special tokens and eight reserved; the closing tool tokens
    # replaced <|reserved_0|> and <|reserved_1|>, so every id a model had learned stays where it was.
    old = [
        EOT,
        IM_START,
        IM_SEP,
        IM_END,
        "<|tool_call|>",
        "<|tool_result|>",
        *(f"<|reserved_{i}|>" for i in range(8)),
    ]
    new = TokenizerConfig().all_special_tokens()
    assert len(new) == len(old)
    assert new[:6] == old[:6]
    assert new[6:8] == ["<|/tool_call|>", "<|/tool_result|>"]
    assert new[8:] == [f"<|reserved_{i}|>" for i in range(6)]


def test_byte_b_has_id_b_and_merges_follow(tok):
    assert [tok.id_to_token(b) for b in range(256)] == BYTE_SYMBOLS
    # Characters the corpus never contains still encode, as their raw UTF-8 bytes.
    for ch in ["\x00", "~", "ÿ", "€", "😀", "\u0301"]:
        assert encode_batch(tok, [ch], append_eot=False)[0] == list(ch.encode("utf-8"))
    # Merged tokens start at 256 and are longer than one byte.
    assert len(tok.id_to_token(256)) == 2


def test_byte_symbols_match_the_byte_level_pre_tokenizer():
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    # Every byte that can occur in valid UTF-8 (all but C0, C1, F5..FF), via characters that contain it.
    chars = [chr(c) for c in range(0x80)] + [chr(c) for c in range(0x80, 0x800, 7)]
    chars += [chr(c) for c in range(0x800, 0x10000, 0x101) if not 0xD800 <= c < 0xE000]
    chars += [chr(c) for c in (0x10000, 0x40000, 0x80000, 0xC0000, 0x10FFFF)]
    seen = set()
    for ch in chars:
        ((piece, _),) = byte_level.pre_tokenize_str(ch)
        raw = ch.encode("utf-8")
        assert piece == "".join(BYTE_SYMBOLS[b] for b in raw), repr(ch)
        seen.update(raw)
    assert seen == set(range(256)) - {0xC0, 0xC1} - set(range(0xF5, 0x100))


def test_training_is_deterministic():
    corpus = make_corpus(100, seed=1)
    cfg = TokenizerConfig(vocab_size=300)
    assert train_tokenizer(corpus, cfg).to_str() == train_tokenizer(corpus, cfg).to_str()


def test_too_small_corpus_warns_with_the_numbers():
    with pytest.warns(UserWarning, match=r"vocab_size=4096: learned (\d+) of 3826 merges") as record:
        small = train_tokenizer(["a tiny corpus, a tiny corpus"], TokenizerConfig())
    merges = int(str(record[0].message).split("learned ")[1].split(" ")[0])
    assert small.get_vocab_size() == 256 + merges + N_SPECIAL
    assert eot_id(small) == 256 + merges


def test_large_enough_corpus_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_tokenizer(make_corpus(200, seed=2), TokenizerConfig(vocab_size=300))


# --- digits ----------------------------------------------------------------------------------------


def test_digits_are_split_one_by_one(tok):
    text = "In 2024 the 1848 war cost 350000 and 3.14159, 0123456789."
    ids = encode_batch(tok, [text], append_eot=False)[0]
    pieces = [decode(tok, [i]) for i in ids]
    digits = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digits == [c for c in text if c.isdigit()]  # each digit alone, never merged with anything
    assert "".join(pieces) == text


def test_without_split_digits_frequent_numbers_merge_in_chunks_of_three():
    corpus = make_corpus(300, seed=3)
    merged = train_tokenizer(corpus, TokenizerConfig(vocab_size=600, split_digits=False))
    ids = encode_batch(merged, ["in 2024 350000"], append_eot=False)[0]
    pieces = [decode(merged, [i]) for i in ids]
    assert "".join(pieces) == "in 2024 350000"
    digit_pieces = [p for p in pieces if p.isdigit()]
    assert max(map(len, digit_pieces)) == 3  # GPT-4 style: numbers are cut into runs of at most three
    assert len(digit_pieces) < 10


def test_gpt4_pattern_pieces():
    split = pre_tokenizers.Split(Regex(split_pattern("gpt4", split_digits=True)), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("We'LL see  the 42 cats!!\n\nok")]
    assert pieces == ["We", "'LL", " see", " ", " the", " ", "4", "2", " cats", "!!\n\n", "ok"]


# --- plain text never produces special tokens ------------------------------------------------------


def test_literal_special_token_text_encodes_as_bytes(tok):
    text = f"a {EOT} b {IM_START}user{IM_SEP}hi{IM_END}"
    ids = encode_batch(tok, [text], append_eot=False)[0]
    specials = set(special_token_ids(tok).values())
    assert not specials & set(ids)
    assert decode(tok, ids) == text

    with_eot = encode_batch(tok, [text, "second"])
    assert [row.count(eot_id(tok)) for row in with_eot] == [1, 1]
    assert all(row[-1] == eot_id(tok) for row in with_eot)


def test_plain_text_is_safe_even_on_a_tokenizer_loaded_elsewhere(tok, tmp_path):
    tok.save(str(tmp_path / "tokenizer.json"))
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))  # encode_special_tokens is False here
    assert raw.encode(EOT, add_special_tokens=False).ids == [eot_id(tok)]  # the hazard we guard against
    ids = encode_batch(raw, [EOT], append_eot=False)[0]
    assert eot_id(tok) not in ids and decode(raw, ids) == EOT


# --- loading ---------------------------------------------------------------------------------------


def test_save_and_load_give_the_same_encoding(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    loaded = load_tokenizer(path)
    texts = [*make_corpus(5, seed=9), f"x{EOT}y"]
    assert encode_batch(loaded, texts) == encode_batch(tok, texts)
    assert special_token_ids(loaded) == special_token_ids(tok)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist"):
        load_tokenizer(tmp_path / "nope.json")


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ')
    with pytest.raises(TokenizerError, match=r"tokenizer\.json is not a valid tokenizer\.json"):
        load_tokenizer(path)


def test_load_names_missing_special_tokens(tok, tmp_path):
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in (IM_SEP, IM_END)]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(
        TokenizerError, match=r"lacks the required special token\(s\) <\|im_sep\|>, <\|im_end\|>"
    ):
        load_tokenizer(path)


# --- config ----------------------------------------------------------------------------------------


def test_config_rejects_bad_special_tokens_and_sizes():
    with pytest.raises(ValidationError, match=r"special_tokens must include <\|im_sep\|>"):
        TokenizerConfig(special_tokens=[EOT, IM_START, IM_END])
    with pytest.raises(ValidationError, match="more than once"):
        TokenizerConfig(special_tokens=[EOT, IM_START, IM_SEP, IM_END, EOT])
    with pytest.raises(ValidationError, match="at least 270"):
        TokenizerConfig(vocab_size=269)
    with pytest.raises(ValidationError, match="extra"):
        TokenizerConfig(vocab_sise=1000)
    assert len(TokenizerConfig(n_reserved=0).all_special_tokens()) == 8


# --- encode / decode helpers -----------------------------------------------------------------------


def test_bytes_per_token_on_held_out_text(tok):
    held_out = make_corpus(20, seed=42)
    bpt = bytes_per_token(tok, held_out)
    n_tokens = sum(len(ids) for ids in encode_batch(tok, held_out, append_eot=False))
    assert bpt == pytest.approx(sum(len(t.encode()) for t in held_out) / n_tokens)
    assert 2.5 < bpt < 8  # a 512-token vocab trained on this distribution compresses it well
    with pytest.raises(ValueError, match="non-empty"):
        bytes_per_token(tok, [""])


def test_decode_accepts_shard_arrays(tok):
    ids = encode_batch(tok, ["the city of Aldoria"])[0]
    assert decode(tok, np.array(ids, dtype=np.uint16)) == f"the city of Aldoria{EOT}"


_FRAGMENTS = [
    "  ",
    "\n\n",
    "\t \n",
    "0123456789",
    "e\u0301",
    "👍🏽",
    "🇫🇷",
    "\x00",
    EOT,
    "Ünïcødé",
    "'s",
    " 2024",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(st.text(st.characters(codec="utf-8"), max_size=20), st.sampled_from(_FRAGMENTS)),
        max_size=8,
    ).map("".join)
)
def test_round_trip_any_unicode(tok, text):
    ids = encode_batch(tok, [text], append_eot=False)[0]
    assert max(ids, default=0) < eot_id(tok)
    assert decode(tok, ids) == text


@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=60))
def test_round_trip_gpt2_style_without_digit_split(text):
    assert decode(_gpt2_tok(), encode_batch(_gpt2_tok(), [text], append_eot=False)[0]) == text


_GPT2: list[Tokenizer] = []


def _gpt2_tok() -> Tokenizer:
    if not _GPT2:
        cfg = TokenizerConfig(vocab_size=300, pretokenizer="gpt2", split_digits=False)
        _GPT2.append(train_tokenizer(make_corpus(100, seed=5), cfg))
    return _GPT2[0]
