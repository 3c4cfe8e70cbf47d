"""The chat template: the one place that turns conversations into token ids and back.

SFT, the reward model, RL, evaluation and serving all render through `render`, so a conversation is
always the same ids wherever it is used. Each message is

    <|im_start|> role <|im_sep|> content <|im_end|>

with the role (system, user or assistant) and the content encoded as plain text, and the four
special tokens appended by id. Nothing separates messages and nothing comes before the first one.
Because `encode_batch` never turns text into special tokens, a user who types "<|im_end|>" into a
message gets those characters, not the end of their turn: content cannot forge the template.

`render(...).assistant_mask` marks what SFT learns: every assistant message's content tokens and its
closing `<|im_end|>` (so the model learns to stop), never the `<|im_start|>assistant<|im_sep|>` header
(the server writes that itself) and never system or user tokens.

Tool use (`components.io.chat` describes the markup) renders inside the assistant's content: a call is
`<|tool_call|>` expression `<|/tool_call|>`, its result `<|tool_result|>` text `<|/tool_result|>`, each
marker its special token and the text between encoded as plain text. The model learns to write the call
(mask 1) but not the result (mask 0): at inference the sampler stops at `<|/tool_call|>`, runs the tool
and injects `tool_result_ids` (`components.model.tools`), the very ids the template renders.

At inference the server renders the conversation with `add_generation_prompt=True`, which appends the
assistant header, and samples until `<|im_end|>`; `assistant_reply` reads what came back.

Truncation (`max_tokens`) is deliberately simple and documented on `render`: whole earliest turns go
first, then the end of the final assistant reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from tokenizers import Tokenizer

from components.io.chat import (
    ROLES,
    TOOL_CALL,
    TOOL_CALL_END,
    TOOL_RESULT,
    TOOL_RESULT_END,
    ChatFormatError,
    Segment,
    has_tool_markup,
    tool_segments,
    validate_messages,
)
from components.tokenizer.bpe import IM_END, IM_SEP, IM_START, decode, encode_batch, special_token_ids


class ChatTooLong(ValueError):
    """A conversation that cannot be made to fit `max_tokens` by the truncation rules of `render`."""


# --- special tokens --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTokens:
    """Ids of the template's special tokens in one tokenizer (they depend on its vocabulary size)."""

    im_start: int
    im_sep: int
    im_end: int
    specials: frozenset[int]  # every special id of the tokenizer, the reserved ones included
    # The tool tokens; None when the tokenizer predates them (then tool use is off).
    tool_call: int | None = None
    tool_call_end: int | None = None
    tool_result: int | None = None
    tool_result_end: int | None = None

    @classmethod
    def of(cls, tok: Tokenizer) -> ChatTokens:
        ids = special_token_ids(tok)
        missing = [t for t in (IM_START, IM_SEP, IM_END) if t not in ids]
        if missing:
            raise ChatFormatError(f"tokenizer lacks the chat special token(s) {', '.join(missing)}")
        tools = [ids.get(t) for t in (TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END)]
        if None in tools:
            tools = [None] * 4  # all four or none: a half set cannot express a call and its result
        return cls(ids[IM_START], ids[IM_SEP], ids[IM_END], frozenset(ids.values()), *tools)

    @property
    def has_tools(self) -> bool:
        return self.tool_call is not None

    @property
    def tool_ids(self) -> frozenset[int]:
        """The four tool tokens (empty without them): special tokens that stay inside a reply."""
        ids = (self.tool_call, self.tool_call_end, self.tool_result, self.tool_result_end)
        return frozenset(i for i in ids if i is not None)

    def require_tools(self) -> None:
        if not self.has_tools:
            raise ChatFormatError(
                f"tokenizer lacks the tool tokens {TOOL_CALL} {TOOL_CALL_END} {TOOL_RESULT} "
                f"{TOOL_RESULT_END}; retrain it with the default special_tokens to use tools"
            )


# --- rendering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageSpan:
    """Where one rendered message lies in `RenderedChat.ids` (half-open ranges)."""

    role: str
    start: int  # the message's <|im_start|>
    content_start: int  # first content token, right after <|im_sep|>
    content_end: int  # one past the last content token: the <|im_end|>, if the message has one
    end: int  # one past the message's last token

    @property
    def ended(self) -> bool:
        """False only for a final message cut by truncation or an open generation prompt."""
        return self.end > self.content_end


@dataclass(frozen=True)
class RenderedChat:
    ids: list[int]
    assistant_mask: list[int]  # 1 on assistant content tokens and their <|im_end|>, else 0
    spans: list[MessageSpan]  # the messages that were rendered (after truncation), in order
    dropped_messages: int = 0  # earliest messages removed to fit max_tokens
    truncated_tokens: int = 0  # tokens cut from the end of the final assistant message (its
    # <|im_end|> included)
    generation_prompt: bool = False  # ids end with an open <|im_start|>assistant<|im_sep|>

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Piece:
    role: str
    header: list[int]
    content: list[int]
    end: list[int]
    content_mask: list[int]  # per content token: 1 = the assistant's own (learned), 0 = a tool result

    def __len__(self) -> int:
        return len(self.header) + len(self.content) + len(self.end)


def render(
    tok: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    max_tokens: int | None = None,
) -> RenderedChat:
    """Token ids, SFT loss mask and message spans of a conversation.

    `add_generation_prompt` appends `<|im_start|>assistant<|im_sep|>` (mask 0) so a model continues with
    the assistant's reply; the conversation must then not end with an assistant message.

    Truncation, when the rendering is longer than `max_tokens`:

    1. Whole turns are dropped from the front, earliest first. A turn is a user message and everything
       up to the next user message (a conversation that opens with an assistant message has that
       opening as its first turn). A leading system message and the final turn are always kept.
    2. If the system message plus the final turn still do not fit, the final message, which must be
       an assistant message, is cut from the end so that the ids are exactly `max_tokens` long. It then
       has no `<|im_end|>`: the model must not learn to stop in mid-reply, so a truncated reply
       simply ends unterminated (`parse` accepts that).
    3. If even that leaves no token of the reply (or the final message is not an assistant message,
       or a generation prompt was asked for), `ChatTooLong` is raised: callers that build training
       batches catch it and skip the conversation, counting it.
    """
    msgs = validate_messages(messages)
    if add_generation_prompt and msgs[-1]["role"] == "assistant":
        raise ChatFormatError(
            "add_generation_prompt needs a conversation that ends with a user or system message, "
            "but the last message is the assistant's"
        )
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    special = ChatTokens.of(tok)

    # Content as segments: tool markup only counts in assistant messages (a user's is plain text).
    segments = [
        tool_segments(m["content"])
        if m["role"] == "assistant" and has_tool_markup(m["content"])
        else [Segment("text", m["content"])]
        for m in msgs
    ]
    if any(s.kind != "text" for segs in segments for s in segs):
        special.require_tools()
    # One Rust call for every role and content string of the conversation.
    texts = [m["role"] for m in msgs] + [s.text for segs in segments for s in segs]
    if add_generation_prompt:
        texts.append("assistant")
    encoded = encode_batch(tok, texts, append_eot=False)
    n = len(msgs)
    pieces = []
    at = n
    for i, m in enumerate(msgs):
        content: list[int] = []
        content_mask: list[int] = []
        for seg in segments[i]:
            ids = _segment_ids(special, seg.kind, encoded[at])
            at += 1
            content += ids
            content_mask += [0 if seg.kind == "result" else 1] * len(ids)
        pieces.append(
            _Piece(
                m["role"],
                [special.im_start, *encoded[i], special.im_sep],
                content,
                [special.im_end],
                content_mask,
            )
        )
    tail = [special.im_start, *encoded[-1], special.im_sep] if add_generation_prompt else []

    dropped = cut = 0
    if max_tokens is not None:
        pieces, dropped, cut = _truncate(pieces, len(tail), max_tokens)

    ids: list[int] = []
    mask: list[int] = []
    spans: list[MessageSpan] = []
    for p in pieces:
        start = len(ids)
        learn = 1 if p.role == "assistant" else 0
        ids += p.header + p.content + p.end
        mask += [0] * len(p.header) + [learn * m for m in p.content_mask] + [learn] * len(p.end)
        content_start = start + len(p.header)
        content_end = content_start + len(p.content)
        spans.append(MessageSpan(p.role, start, content_start, content_end, len(ids)))
    ids += tail
    mask += [0] * len(tail)
    return RenderedChat(ids, mask, spans, dropped, cut, add_generation_prompt)


def _truncate(pieces: list[_Piece], tail: int, max_tokens: int) -> tuple[list[_Piece], int, int]:
    """Apply the truncation rules of `render`; returns (pieces, messages dropped, tokens cut)."""

    def total(ps: list[_Piece]) -> int:
        return sum(len(p) for p in ps) + tail

    if total(pieces) <= max_tokens:
        return pieces, 0, 0
    head = pieces[:1] if pieces[0].role == "system" else []
    body = pieces[len(head) :]
    # Turn boundaries: the first body message and every later user message start a turn.
    starts = [i for i, p in enumerate(body) if i == 0 or p.role == "user"]
    first = 0  # index into `starts` of the earliest turn kept
    while total(head + body[starts[first] :]) > max_tokens and first < len(starts) - 1:
        first += 1
    kept = head + body[starts[first] :]
    dropped = len(pieces) - len(kept)
    excess = total(kept) - max_tokens
    if excess <= 0:
        return kept, dropped, 0

    last = kept[-1]
    # `excess` tokens must go; the <|im_end|> goes first, then content tokens from the end.
    keep_content = len(last.content) + len(last.end) - excess
    if tail or last.role != "assistant" or keep_content < 1:
        # Only an assistant reply may be cut, and at least one of its tokens must remain.
        cuttable = not tail and last.role == "assistant"
        needed = total(kept) - (len(last.content) + len(last.end) - 1 if cuttable else 0)
        raise ChatTooLong(
            f"conversation needs at least {needed} tokens even with only the "
            f"{'system message and ' if head else ''}final turn kept, "
            f"more than max_tokens={max_tokens}"
        )
    trimmed = _Piece(
        last.role, last.header, last.content[:keep_content], [], last.content_mask[:keep_content]
    )
    return [*kept[:-1], trimmed], dropped, excess


def _segment_ids(special: ChatTokens, kind: str, text_ids: list[int]) -> list[int]:
    """A segment's ids: plain text as is, a call or a result between its two tool tokens."""
    if kind == "call":
        return [special.tool_call, *text_ids, special.tool_call_end]  # type: ignore[list-item]
    if kind == "result":
        return [special.tool_result, *text_ids, special.tool_result_end]  # type: ignore[list-item]
    return list(text_ids)


def tool_result_ids(tok: Tokenizer, text: str) -> list[int]:
    """`<|tool_result|>` text `<|/tool_result|>`: what the sampler injects after a call, exactly as
    `render` writes a result (so a model sees the same ids in training and at inference)."""
    special = ChatTokens.of(tok)
    special.require_tools()
    return _segment_ids(special, "result", encode_batch(tok, [text], append_eot=False)[0])


# --- parsing ---------------------------------------------------------------------------------------


def parse(tok: Tokenizer, ids: Sequence[int] | Any) -> list[dict[str, str]]:
    """The messages that `ids` render, the inverse of `render`.

    The final message may lack its `<|im_end|>` (a truncated reply, a reply still being generated, or
    an open generation prompt, which parses as an assistant message with empty content). Anything else
    that breaks the template raises `ChatFormatError` naming the token position.
    """
    ids = _as_list(ids)
    special = ChatTokens.of(tok)
    messages: list[dict[str, str]] = []
    i = 0
    while i < len(ids):
        if ids[i] != special.im_start:
            raise ChatFormatError(f"token {i}: expected <|im_start|>, got id {ids[i]}")
        try:
            sep = ids.index(special.im_sep, i + 1)
        except ValueError:
            raise ChatFormatError(f"token {i}: message header has no <|im_sep|>") from None
        role = decode(tok, ids[i + 1 : sep])
        if role not in ROLES or any(t in special.specials for t in ids[i + 1 : sep]):
            raise ChatFormatError(f"token {i}: role {role!r} is not one of {'/'.join(ROLES)}")
        j = sep + 1
        while j < len(ids) and ids[j] not in (special.im_end, special.im_start):
            j += 1
        if j < len(ids) and ids[j] == special.im_start:
            raise ChatFormatError(f"token {j}: message starting at token {i} has no <|im_end|>")
        messages.append({"role": role, "content": decode(tok, ids[sep + 1 : j])})
        i = j + 1
    if not messages:
        raise ChatFormatError("no messages: the token sequence is empty")
    return messages


class AssistantReply(NamedTuple):
    text: str  # the reply's text, up to (not including) its first special token other than a tool token
    ended: bool  # that first special token is <|im_end|>: the model closed its turn properly
    leaked_role: bool  # the reply starts another turn or writes a role header ("user:", "<|im_start|>")


# Role headers written out as text: "User:", "assistant :" or the template's own token strings.
_ROLE_TEXT = re.compile(
    r"\b(?:system|user|assistant|human)\s*:|" + "|".join(re.escape(t) for t in (IM_START, IM_SEP, IM_END)),
    re.IGNORECASE,
)


def assistant_reply(tok: Tokenizer, generated_ids: Sequence[int] | Any) -> AssistantReply:
    """Read a generated reply (the tokens sampled after the generation prompt) for evaluation.

    `text` stops at the first special token that is not a tool token, so a reply that runs on into a
    fake user turn is judged on what it said before that; tool calls and results stay in the text,
    written as their markers (the reply's final answer comes after them). `ended` is True when that
    first such token is `<|im_end|>`; `<|endoftext|>`, another `<|im_start|>` or running out of tokens
    all count as not ended. `leaked_role` flags format violations: an `<|im_start|>`/`<|im_sep|>` token
    before the reply's `<|im_end|>`, or a role header written as text.
    """
    ids = _as_list(generated_ids)
    special = ChatTokens.of(tok)
    stops = special.specials - special.tool_ids
    stop = next((k for k, t in enumerate(ids) if t in stops), len(ids))
    text = decode(tok, ids[:stop])
    ended = stop < len(ids) and ids[stop] == special.im_end
    end = ids.index(special.im_end) if special.im_end in ids else len(ids)
    leaked = any(t in (special.im_start, special.im_sep) for t in ids[:end])
    leaked = leaked or bool(_ROLE_TEXT.search(text))
    return AssistantReply(text, ended, leaked)


def _as_list(ids: Any) -> list[int]:
    """Plain Python ints from a list, a numpy array or a (CPU or GPU) torch tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(t) for t in ids]


__all__ = [
    "AssistantReply",
    "ChatTokens",
    "ChatTooLong",
    "MessageSpan",
    "RenderedChat",
    "assistant_reply",
    "parse",
    "render",
    "tool_result_ids",
]
