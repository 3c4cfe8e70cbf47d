"""Byte-level BPE: training, loading, special tokens and the encode path every stage uses.

The tokenizer is a HuggingFace `tokenizers.Tokenizer` (fast Rust encoder, `tokenizer.json` that
transformers and vLLM load as is); this module fixes how we build and use it:

* **Byte level, lossless.** Text is split by a regex (`pretokenizer`), each piece is turned into its
  UTF-8 bytes, and BPE merges bytes. All 256 byte symbols are in the vocabulary from the start, so any
  string -- any script, emoji, NUL, binary junk that survived extraction -- round-trips exactly. There is
  no normalizer (NFC/NFKC would change the text) and no unknown token.
* **Id layout.** Id `b` (0..255) is the single byte `b`, merges get ids 256, 257, ... in the order they
  were learned, and the special tokens take the *last* ids (GPT-2 style: `<|endoftext|>` first among them).
  Keeping bytes at 0..255 makes a token shard readable without the tokenizer for byte tokens, and putting
  the special tokens at the end means the BPE part never moves: reserved slots at the very end can
  become new special tokens later without renumbering anything a model has learned. The price is that the
  special ids depend on `vocab_size` (they are `vocab_size - n_special ...`); always look them up with
  `special_token_ids` / `eot_id`, never hard-code them.
* **Special tokens never come from text.** `encode_batch` treats its input as plain text: a web page that
  contains the literal string `<|endoftext|>` is encoded as ordinary bytes, so crawl data cannot forge a
  document boundary or a chat turn. Code that needs a special token (document separators, chat templates)
  appends its id explicitly.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from components.core.config import StrictModel
from components.io.chat import TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END

EOT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_SEP = "<|im_sep|>"
IM_END = "<|im_end|>"
# The tool tokens are part of the chat message format (`components.io.chat`). The closing two came after
# the others: they took the first two reserved slots (n_reserved 8 -> 6), so every earlier token kept its id.

# A tokenizer without these cannot separate documents or format a chat, so loading one is an error.
REQUIRED_SPECIAL_TOKENS: tuple[str, ...] = (EOT, IM_START, IM_SEP, IM_END)


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used: unreadable, corrupt, or missing required special tokens."""


# --- pre-tokenizer patterns ----------------------------------------------------------------------
#
# BPE never merges across the pieces these regexes cut, so the pattern decides what a token *can* be.
# Both keep a single leading space attached to the following word (" the" is one token, which is what
# makes English cheap) and keep newlines apart from words. The digit rule is filled in per config.

_GPT4_STYLE = "|".join(
    [
        r"(?i:'(?:[sdmt]|ll|ve|re))",  # English contractions, any case ("'S", "'ll")
        r"[^\r\n\p{L}\p{N}]?\p{L}+",  # a word with at most one leading non-letter (usually the space)
        "{digits}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",  # a punctuation/symbol run; trailing newlines stick to it
        r"\s*[\r\n]+",  # line breaks, with the indentation before them
        r"\s+(?!\S)",  # whitespace run, leaving its last space to prefix the next word
        r"\s+",  # whitespace at the very end
    ]
)
_GPT2_STYLE = "|".join(
    [
        r"'(?:[sdmt]|ll|ve|re)",  # lower-case contractions only
        r" ?\p{L}+",
        "{digits}",
        r" ?[^\s\p{L}\p{N}]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
# With split_digits every digit is a piece of its own (LLaMA): "2024" is four tokens, always the same
# four, so the model sees numbers digit by digit and place value is learnable -- arithmetic in SFT/RL
# depends on it. Without it, numbers are chunked (up to three digits GPT-4 style, any run GPT-2 style)
# and how "1234" splits depends on corpus statistics.
_DIGITS = {
    ("gpt4", True): r"\p{N}",
    ("gpt4", False): r"\p{N}{1,3}",
    ("gpt2", True): r"\p{N}",
    ("gpt2", False): r" ?\p{N}+",
}
_PATTERNS = {"gpt4": _GPT4_STYLE, "gpt2": _GPT2_STYLE}


def split_pattern(pretokenizer: Literal["gpt4", "gpt2"], split_digits: bool) -> str:
    """The regex that cuts text into pieces before BPE (see the comments on the parts above)."""
    return _PATTERNS[pretokenizer].replace("{digits}", _DIGITS[(pretokenizer, split_digits)])


# --- config --------------------------------------------------------------------------------------


class TokenizerConfig(StrictModel):
    """How the byte-level BPE tokenizer is trained (or which existing one is used)."""

    vocab_size: int = Field(
        4096,
        ge=257,
        description="Total vocabulary size: 256 byte tokens + learned merges + special tokens. "
        "4096 suits the tiny world; GPT-2 uses 50,257, GPT-4 about 100k. Above 65,536 token shards "
        "switch from uint16 to uint32.",
    )
    min_frequency: int = Field(
        2,
        ge=1,
        description="A pair must occur at least this often in the training corpus to be merged; "
        "2 keeps one-off strings (hashes, typos) out of the vocabulary.",
    )
    split_digits: bool = Field(
        True,
        description="Make every digit its own token (LLaMA style) so numbers are read digit by digit; "
        "helps the arithmetic tasks learned in SFT/RL. False chunks digits GPT-4/GPT-2 style.",
    )
    pretokenizer: Literal["gpt4", "gpt2"] = Field(
        "gpt4",
        description="Regex that splits text before BPE. 'gpt4': case-insensitive contractions, "
        "punctuation may take one leading space, newlines grouped; 'gpt2': the simpler GPT-2 rules.",
    )
    special_tokens: list[str] = Field(
        default_factory=lambda: [
            EOT,
            IM_START,
            IM_SEP,
            IM_END,
            TOOL_CALL,
            TOOL_RESULT,
            TOOL_CALL_END,
            TOOL_RESULT_END,
        ],
        description="Special tokens, given the last ids in this order (before the reserved ones). "
        "<|endoftext|> separates documents; a chat turn is <|im_start|>role<|im_sep|>text<|im_end|>; "
        "inside an assistant turn <|tool_call|>expression<|/tool_call|> calls the tool and "
        "<|tool_result|>text<|/tool_result|> is its answer (without the four, tool use is off). Must include "
        + ", ".join(REQUIRED_SPECIAL_TOKENS)
        + ".",
    )
    n_reserved: int = Field(
        6,
        ge=0,
        description="Extra unused special tokens <|reserved_0|>, <|reserved_1|>, ... at the very end, so "
        "new special tokens can be introduced later without changing the vocabulary size.",
    )
    tokenizer_path: str | None = Field(
        None,
        description="Use this tokenizer.json instead of training one; it must contain the required "
        "special tokens. The training fields above are then ignored.",
    )

    @model_validator(mode="after")
    def _check_special_tokens(self) -> TokenizerConfig:
        names = self.all_special_tokens()
        missing = [t for t in REQUIRED_SPECIAL_TOKENS if t not in names]
        if missing:
            raise ValueError(f"special_tokens must include {', '.join(missing)}")
        dupes = sorted({t for t in names if names.count(t) > 1})
        if dupes:
            raise ValueError(f"special_tokens lists {', '.join(dupes)} more than once")
        if any(not t for t in names):
            raise ValueError("special_tokens contains an empty string")
        if self.vocab_size < 256 + len(names):
            raise ValueError(
                f"vocab_size {self.vocab_size} cannot hold the 256 byte tokens and {len(names)} special "
                f"tokens; it must be at least {256 + len(names)}"
            )
        return self

    def all_special_tokens(self) -> list[str]:
        """`special_tokens` followed by the reserved ones, in id order."""
        return [*self.special_tokens, *(f"<|reserved_{i}|>" for i in range(self.n_reserved))]


# --- the byte alphabet ---------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """The printable character that byte-level BPE uses for each byte value, indexed by byte.

    Bytes that are visible, non-space Latin-1 characters stand for themselves; every other byte (controls,
    space, the Latin-1 gaps) is shifted to the next unused code point from U+0100 on, in byte order. This
    is the convention of HuggingFace's `ByteLevel` pre-tokenizer, which we must match.
    """
    visible = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)}
    out, shifted = [], 0
    for b in range(256):
        if b in visible:
            out.append(chr(b))
        else:
            out.append(chr(256 + shifted))
            shifted += 1
    return out


BYTE_SYMBOLS: list[str] = _byte_symbols()
assert set(BYTE_SYMBOLS) == set(pre_tokenizers.ByteLevel.alphabet()), "byte alphabet mismatch"


def _pre_tokenizer(config: TokenizerConfig) -> pre_tokenizers.PreTokenizer:
    # Split first with our regex, then map each piece to byte symbols (ByteLevel's own regex is off:
    # ours already did the splitting, and no prefix space is added so the text is not altered).
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(split_pattern(config.pretokenizer, config.split_digits)), behavior="isolated"
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# --- training ------------------------------------------------------------------------------------


def train_tokenizer(
    texts: Iterable[str], config: TokenizerConfig, *, show_progress: bool = False
) -> Tokenizer:
    """Train a byte-level BPE tokenizer of exactly `config.vocab_size` tokens on `texts`.

    Each text is one document; no end-of-text tokens should be in it. If the corpus has fewer distinct
    pairs occurring `min_frequency` times than merges were asked for, training stops early and a
    warning gives the numbers (the special tokens then take the last ids of the smaller vocabulary).
    """
    specials = config.all_special_tokens()
    bpe_size = config.vocab_size - len(specials)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(config)
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        min_frequency=config.min_frequency,
        show_progress=show_progress,
        # Every byte, seen or not: otherwise a byte absent from the corpus could not be encoded later.
        initial_alphabet=BYTE_SYMBOLS,
        special_tokens=[],  # added after training so they get the last ids, see the module docstring
    )
    tok.train_from_iterator(texts, trainer)

    # The trainer numbers the alphabet in code-point order of the symbols; renumber so id b is byte b.
    # Merged tokens keep their ids (256.. in merge order); merges refer to tokens by string, not id.
    trained = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = trained["vocab"]
    if {t for t, i in vocab.items() if i < 256} != set(BYTE_SYMBOLS):
        raise RuntimeError("BPE trainer did not put the 256 byte symbols at ids 0..255")
    byte_id = {s: b for b, s in enumerate(BYTE_SYMBOLS)}
    vocab = {t: (byte_id[t] if i < 256 else i) for t, i in vocab.items()}
    merges = [tuple(m) for m in trained["merges"]]

    out = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    out.pre_tokenizer = _pre_tokenizer(config)
    out.decoder = decoders.ByteLevel()
    out.add_special_tokens(specials)
    out.encode_special_tokens = True  # see encode_batch

    if len(vocab) < bpe_size:
        warnings.warn(
            f"tokenizer corpus too small for vocab_size={config.vocab_size}: learned {len(vocab) - 256} of "
            f"{bpe_size - 256} merges (no further pair occurs {config.min_frequency}+ times), so the "
            f"vocabulary has {out.get_vocab_size()} tokens; give more text or lower vocab_size",
            UserWarning,
            stacklevel=2,
        )
    return out


# --- loading and special tokens ------------------------------------------------------------------


def load_tokenizer(
    path: str | os.PathLike[str], required: Sequence[str] = REQUIRED_SPECIAL_TOKENS
) -> Tokenizer:
    """Load a `tokenizer.json`, checking that it has the special tokens the pipeline relies on."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the Rust side raises a bare Exception for bad JSON or an unknown schema
        raise TokenizerError(f"{path} is not a valid tokenizer.json: {e}") from None
    present = special_token_ids(tok)
    missing = [t for t in required if t not in present]
    if missing:
        raise TokenizerError(f"{path} lacks the required special token(s) {', '.join(missing)}")
    tok.encode_special_tokens = True  # not stored in tokenizer.json; see encode_batch
    return tok


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """{token: id} for every token registered as special in `tok`."""
    return {t.content: i for i, t in sorted(tok.get_added_tokens_decoder().items()) if t.special}


def ordinary_token_count(tok: Tokenizer) -> int:
    """Ids below this are ordinary (byte-level BPE) tokens: the special ones are added after them."""
    return min(special_token_ids(tok).values(), default=tok.get_vocab_size())


def eot_id(tok: Tokenizer) -> int:
    """Id of `<|endoftext|>`, the document separator."""
    i = special_token_ids(tok).get(EOT)
    if i is None:
        raise TokenizerError(f"tokenizer has no {EOT} special token")
    return i


# --- encode / decode -----------------------------------------------------------------------------


def encode_batch(tok: Tokenizer, texts: list[str], *, append_eot: bool = True) -> list[list[int]]:
    """Token ids of each text, treated as plain text, each followed by `<|endoftext|>` if `append_eot`.

    Encoding runs in parallel in Rust. `encode_special_tokens = True` makes the tokenizer match special
    tokens *as text* (by default `tokenizers` would turn a literal "<|endoftext|>" in a crawled page into
    the real separator); the flag is not saved in tokenizer.json, so it is set here on every call rather
    than trusted from whoever built `tok` (only when needed: writing it while another thread encodes with
    the same tokenizer would fail). `encode_batch_fast` skips the offset tracking we never use.
    """
    if not tok.encode_special_tokens:
        tok.encode_special_tokens = True
    encodings = tok.encode_batch_fast(texts, add_special_tokens=False)
    if not append_eot:
        return [e.ids for e in encodings]
    eot = [eot_id(tok)]
    return [e.ids + eot for e in encodings]


def decode(tok: Tokenizer, ids: Sequence[int] | np.ndarray) -> str:
    """Text of `ids`; special tokens are written out (e.g. "<|endoftext|>"), nothing is dropped."""
    if isinstance(ids, np.ndarray):
        ids = ids.tolist()  # the Rust binding wants Python ints (token shards hold uint16/uint32)
    return tok.decode(list(ids), skip_special_tokens=False)


def bytes_per_token(tok: Tokenizer, texts: Iterable[str]) -> float:
    """UTF-8 bytes per token over `texts` (no separators counted): the tokenizer's compression.

    Measure on held-out text; on the training corpus the figure is flattering.
    """
    batch = list(texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in batch)
    n_tokens = sum(len(ids) for ids in encode_batch(tok, batch, append_eot=False))
    if n_tokens == 0:
        raise ValueError("bytes_per_token needs at least one non-empty text")
    return n_bytes / n_tokens
