"""Server-Sent Events in OpenAI's streaming format.

Each event is one `data: <json>` line and a blank line; the stream ends with `data: [DONE]`. A chat
stream sends, per choice, a first chunk with the role, then content deltas, then a chunk with the
finish_reason and an empty delta; with `stream_options.include_usage` every chunk carries
`"usage": null` and one last chunk with no choices carries the usage.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

DONE = "data: [DONE]\n\n"


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ChunkWriter:
    """The SSE events of one streamed response: `chat.completion.chunk` or `text_completion` objects."""

    def __init__(self, *, model: str, chat: bool, include_usage: bool) -> None:
        self.model, self.chat, self.include_usage = model, chat, include_usage
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self._delta_templates: dict[int, tuple[str, str]] = {}

    def _chunk(self, choices: list[dict[str, Any]]) -> str:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            data["usage"] = None
        return event(data)

    def role(self, index: int) -> str:
        """A chat choice's first chunk: the assistant role and empty content."""
        return self._chunk([self._choice(index, {"role": "assistant", "content": ""}, None)])

    def delta(self, index: int, text: str) -> str:
        """The chunk of new text, the event a stream sends most: its JSON around the text is rendered once
        per choice, and only the text is encoded each time (the same bytes as `_chunk` would give)."""
        around = self._delta_templates.get(index)
        if around is None:
            marker = "\0"  # occurs once in the template: ids and model names hold no NUL
            rendered = self._chunk([self._choice(index, {"content": marker} if self.chat else marker, None)])
            before, after = rendered.split(json.dumps(marker))
            around = self._delta_templates[index] = (before, after)
        return around[0] + json.dumps(text, ensure_ascii=False) + around[1]

    def finish(self, index: int, reason: str) -> str:
        return self._chunk([self._choice(index, {} if self.chat else "", reason)])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        return event(
            {
                "id": self.id,
                "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(prompt_tokens, completion_tokens),
            }
        )

    def _choice(self, index: int, content: Any, reason: str | None) -> dict[str, Any]:
        if self.chat:
            return {"index": index, "delta": content, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": content, "logprobs": None, "finish_reason": reason}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
