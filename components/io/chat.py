"""Chat messages: the `{role, content}` format every chat dataset, the template and the server share,
and the check that a conversation follows it (`components.tokenizer.chat` renders it into tokens)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ROLES: tuple[str, ...] = ("system", "user", "assistant")


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
        out.append({"role": role, "content": content})
    return out


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


__all__ = ["ROLES", "ChatFormatError", "validate_messages"]
