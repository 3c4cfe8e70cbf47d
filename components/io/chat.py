"""Chat messages: the `{role, content}` format every chat dataset, the template and the server share,
and the check that a conversation follows it (`components.tokenizer.chat` renders it into tokens).

Tool use lives inside an assistant message's content, written with the template's tool tokens:

    Let me count. <|tool_call|>'strawberry'.count('r')<|/tool_call|><|tool_result|>3<|/tool_result|> ...

A call is an expression between `<|tool_call|>` and `<|/tool_call|>`; its result (what the tool
answered, which the sampler puts into the context) follows at once between `<|tool_result|>` and
`<|/tool_result|>`. The markers mean this only in assistant messages: in a system or user message they
are plain characters, so a user cannot forge a tool result. `tool_segments` splits a content string
along them; `validate_messages` refuses an assistant message whose markers do not pair up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

ROLES: tuple[str, ...] = ("system", "user", "assistant")

TOOL_CALL = "<|tool_call|>"
TOOL_CALL_END = "<|/tool_call|>"
TOOL_RESULT = "<|tool_result|>"
TOOL_RESULT_END = "<|/tool_result|>"
_MARKER = re.compile("|".join(re.escape(t) for t in (TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END)))


class ChatFormatError(ValueError):
    """Messages or token ids that do not follow the chat template; the message says where."""


def validate_messages(messages: Any, *, where: str = "messages") -> list[dict[str, str]]:
    """Check a conversation and return it as plain `{role, content}` dicts (other keys dropped).

    Rules: a non-empty list; every item a mapping with a `role` from ROLES and a string `content`
    (empty content is allowed: an empty reply is a legitimate rejected completion); a system message
    only as the first message, because truncation keeps exactly one leading system message. Errors
    name the offending item, e.g. "messages[2].role 'bot' is not one of system/user/assistant".
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ChatFormatError(f"{where} must be a list of {{role, content}} messages, got {_kind(messages)}")
    if not messages:
        raise ChatFormatError(f"{where} is empty")
    out = []
    for i, m in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(m, Mapping):
            raise ChatFormatError(f"{at} must be a {{role, content}} mapping, got {_kind(m)}")
        if "role" not in m:
            raise ChatFormatError(f"{at} has no 'role'")
        if "content" not in m:
            raise ChatFormatError(f"{at} has no 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ChatFormatError(f"{at}.role {role!r} is not one of {'/'.join(ROLES)}")
        if not isinstance(content, str):
            raise ChatFormatError(f"{at}.content must be a string, got {_kind(content)}")
        if role == "system" and i > 0:
            raise ChatFormatError(f"{at}: a system message may only be the first message")
        if role == "assistant":
            tool_segments(content, where=f"{at}.content")
        out.append({"role": role, "content": content})
    return out


class Segment(NamedTuple):
    """A piece of an assistant message: plain text, a tool call's expression or a tool result's text."""

    kind: Literal["text", "call", "result"]
    text: str


def tool_segments(content: str, *, where: str = "content") -> list[Segment]:
    """`content` cut along the tool markers (see the module docstring); empty text pieces left out.

    Rules: every `<|tool_call|>` is closed by `<|/tool_call|>` before any other marker; a result is
    likewise closed and comes right after a call (nothing, not even a space, in between); no marker
    stands alone. A call without a result is allowed (the conversation stopped there). Errors say where
    (the character offset) and what was expected.
    """
    out: list[Segment] = []
    pos = 0
    previous = "text"
    markers = list(_MARKER.finditer(content))
    i = 0
    while i < len(markers):
        opening = markers[i]
        if opening.group() not in (TOOL_CALL, TOOL_RESULT):
            raise ChatFormatError(f"{where}: {opening.group()} at character {opening.start()} closes nothing")
        closing_token = TOOL_CALL_END if opening.group() == TOOL_CALL else TOOL_RESULT_END
        if i + 1 >= len(markers) or markers[i + 1].group() != closing_token:
            raise ChatFormatError(
                f"{where}: {opening.group()} at character {opening.start()} is not closed by {closing_token}"
            )
        closing = markers[i + 1]
        kind = "call" if opening.group() == TOOL_CALL else "result"
        before = content[pos : opening.start()]
        if kind == "result" and (previous != "call" or before):
            raise ChatFormatError(
                f"{where}: {TOOL_RESULT} at character {opening.start()} does not follow a tool call directly"
            )
        if before:
            out.append(Segment("text", before))
        out.append(Segment(kind, content[opening.end() : closing.start()]))
        previous, pos, i = kind, closing.end(), i + 2
    if content[pos:]:
        out.append(Segment("text", content[pos:]))
    return out


def has_tool_markup(content: str) -> bool:
    """Whether `content` contains any tool marker."""
    return _MARKER.search(content) is not None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


__all__ = [
    "ROLES",
    "TOOL_CALL",
    "TOOL_CALL_END",
    "TOOL_RESULT",
    "TOOL_RESULT_END",
    "ChatFormatError",
    "Segment",
    "has_tool_markup",
    "tool_segments",
    "validate_messages",
]
