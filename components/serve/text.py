"""Token ids to text while they stream: never half a character, never a stop string.

A byte-level BPE token is a run of bytes, not of characters: "é" (two UTF-8 bytes) or an emoji (four)
may be split across tokens. Decoding each token on its own would print replacement characters in the
middle of a word, so `IncrementalDecoder` keeps the bytes of every token and emits text only up to the
last complete character, holding the rest back until the next token completes it (or the stream ends,
when a truly broken sequence becomes U+FFFD, as a whole decode would).

`StopMatcher` does the same for the request's `stop` strings: text that might be the beginning of a stop
string is held back until it is clearly not one, and the text is cut before the first stop string.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from tokenizers import Tokenizer

from components.tokenizer.bpe import BYTE_SYMBOLS, special_token_ids


def token_bytes_table(tok: Tokenizer) -> list[bytes]:
    """The bytes each token id stands for (a special token: its text, e.g. b"<|im_end|>")."""
    byte_of = {symbol: b for b, symbol in enumerate(BYTE_SYMBOLS)}
    table = [b""] * tok.get_vocab_size()
    specials = special_token_ids(tok)
    for token, i in tok.get_vocab(with_added_tokens=True).items():
        if token in specials:
            table[i] = token.encode()
        else:
            table[i] = bytes(byte_of[ch] for ch in token)
    return table


class IncrementalDecoder:
    """Feed token ids, get back the text they complete; the same text as decoding all ids at once."""

    def __init__(self, table: Sequence[bytes]) -> None:
        self.table = table
        # Python's incremental UTF-8 decoder keeps an incomplete trailing sequence for the next call.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_ids: Sequence[int]) -> str:
        return self._utf8.decode(b"".join(self.table[t] for t in token_ids))

    def finish(self) -> str:
        """Whatever is still held back: an incomplete sequence at the very end becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)


class StopMatcher:
    """Cut streamed text at the first of the `stop` strings (which is not part of the output)."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self._held = ""  # text not yet emitted: it may be the start of a stop string
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held) that is safe to emit now."""
        if self.stopped:
            return ""
        buffer = self._held + text
        cut = min((i for s in self.stop if (i := buffer.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return buffer[:cut]
        keep = max((k for s in self.stop for k in range(1, len(s)) if buffer.endswith(s[:k])), default=0)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def finish(self) -> str:
        """At the end of the stream the held text was no stop string after all."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held
