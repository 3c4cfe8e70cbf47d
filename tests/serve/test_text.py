"""Incremental UTF-8 decoding and stop strings: never half a character, never a stop string shown."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from serve_world import TEXTS, make_model_dir

from components.serve.text import IncrementalDecoder, StopMatcher, token_bytes_table
from components.tokenizer.bpe import decode, encode_batch, load_tokenizer


def test_decoder_never_emits_half_a_character():
    # Tokens that split characters: "é" is c3 a9, "東" e6 9d b1, "🙂" f0 9f 99 82; one byte per token.
    table = [bytes([b]) for b in range(256)]
    text = "café 東京 🙂!"
    ids = list(text.encode())
    decoder = IncrementalDecoder(table)
    pieces = [decoder.feed([t]) for t in ids] + [decoder.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    # The bytes of "é" give nothing until its second byte arrives; then the whole character.
    e = text.index("é")
    assert pieces[e] == "" and pieces[e + 1] == "é"
    emoji = len("café 東京 ".encode())
    assert pieces[emoji : emoji + 3] == ["", "", ""] and pieces[emoji + 3] == "🙂"


def test_decoder_flushes_a_broken_tail_as_a_replacement_character():
    table = [bytes([b]) for b in range(256)]
    decoder = IncrementalDecoder(table)
    assert decoder.feed([0x61, 0xE6, 0x9D]) == "a"
    assert decoder.finish() == "\ufffd"


def test_decoder_matches_the_tokenizer_on_real_tokens(tmp_path):
    paths = make_model_dir(tmp_path)
    tok = load_tokenizer(paths["model"] / "tokenizer.json")
    table = token_bytes_table(tok)
    ids = encode_batch(tok, [TEXTS[1]], append_eot=False)[0] + [tok.token_to_id("<|im_end|>")]
    decoder = IncrementalDecoder(table)
    pieces = [decoder.feed([t]) for t in ids] + [decoder.finish()]
    assert "".join(pieces) == decode(tok, ids) == TEXTS[1] + "<|im_end|>"
    assert not any("\ufffd" in p for p in pieces)
    # This tokenizer does split some multi-byte character across tokens (else the test proves little).
    assert any(
        len(table[t]) and table[t].decode(errors="replace") != table[t].decode(errors="ignore") for t in ids
    )


def test_stop_matcher_holds_back_a_possible_stop_string_and_cuts_before_it():
    m = StopMatcher(["\nUser:", "END"])
    out = [m.feed(x) for x in ["Hello", " wor", "ld\nUs", "er", ": hi"]]
    assert out == ["Hello", " wor", "ld", "", ""]
    assert m.stopped and m.finish() == ""

    m = StopMatcher(["END"])
    assert [m.feed(x) for x in ["the E", "N", "ding"]] == ["the ", "", "ENding"]
    assert m.feed("...EN") == "..." and m.finish() == "EN" and not m.stopped
