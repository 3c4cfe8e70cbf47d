"""The OpenAI-style request bodies and errors, as plain pydantic models (no Ray, no torch).

Unknown fields are ignored rather than refused: OpenAI clients send fields we have no use for
(`user`, `frequency_penalty`, ...) and refusing them would break those clients. Every field we do read
is checked, and a mistake becomes an `ApiError` whose message names the field, returned in OpenAI's
error shape `{"error": {"message", "type", "param", "code"}}` with a 4xx status.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ApiError(Exception):
    """A request the server refuses; `status` is the HTTP code."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class StreamOptions(_Request):
    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")


class _Sampling(_Request):
    """The sampling fields both completion endpoints share (OpenAI's names and defaults)."""

    model: str = Field(description="Name of the served model (GET /v1/models lists it).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, description="Choices to generate for each prompt.")
    seed: int | None = Field(None, description="Makes sampling reproducible; choice i uses seed + i.")
    stop: str | list[str] | None = Field(
        None, validate_default=True, description="Up to 4 strings that end generation."
    )
    stream: bool = Field(False, description="Send Server-Sent Events as tokens are generated.")
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError(f"at most 4 stop strings, got {len(stops)}")
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[Any] = Field(description="The conversation: {role: system|user|assistant, content}.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate at most.")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens.")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(_Sampling):
    # A text, a list of token ids, or a batch of either (lm-eval sends batches).
    prompt: str | list[int] | list[str] | list[list[int]] = Field(description="Prompt text or token ids.")
    max_tokens: int = Field(16, ge=0, description="Tokens to generate; 0 with echo only scores the prompt.")
    echo: bool = Field(False, description="Return the prompt (and its log-probs) before the completion.")
    logprobs: int | None = Field(
        None, ge=0, le=20, description="Top alternatives with each token's log-prob."
    )

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class ScorePair(_Request):
    prompt: str | list[Any] = Field(description="The user's message, or the conversation before the reply.")
    reply: str = Field(description="The assistant reply to score.")


class ScoreRequest(_Request):
    model: str | None = Field(None, description="Name of the reward model (optional).")
    pairs: list[ScorePair] = Field(min_length=1, description="(prompt, reply) pairs to score.")


def parse_body(raw: bytes, model: type[_Request]) -> Any:
    """The request body as `model`, or an ApiError naming what is wrong (bad JSON or the first bad field)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(f"request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-"))
        # Unions report one error per alternative ("prompt.str", "prompt.list[int]"): name the field.
        param = param.split(".")[0] if first["type"] != "missing" and "[" in param else param
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(f"{param}: {message}", param=param or None, code="invalid_value") from None
