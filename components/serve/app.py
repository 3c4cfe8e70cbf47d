"""The HTTP layer: a FastAPI app of routes over a `Service`, and the Ray Serve deployment around it.

    POST /v1/chat/completions   chat, streamed (SSE) or not
    POST /v1/completions        text or token-id prompts; echo + logprobs scores a prompt (lm-eval)
    POST /v1/score              reward-model scores of (prompt, reply) pairs
    GET  /v1/models             what is served
    GET  /health                200 while the replica can take requests

`create_app` works without Ray (tests drive it with Starlette's TestClient). `ChatDeployment` is the
Ray Serve deployment: its replica builds a `Service` and hands Serve the same app. `build_app` is the
import path of a Serve config file (`serve run infra/serve/gptrecipe.yaml`, a RayService's
`serveConfigV2`): its `args` are a `ServeConfig`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from components.core.config import validate
from components.serve.config import ServeConfig
from components.serve.protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    ScoreRequest,
    parse_body,
)
from components.serve.service import Service

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may buffer a stream


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="gptrecipe", summary=f"OpenAI-style API for {service.name}")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        # Unknown routes and wrong methods get the same error shape as everything else.
        body = ApiError(str(error.detail), status=error.status_code, code=f"http_{error.status_code}").body()
        return JSONResponse(body, status_code=error.status_code)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = parse_body(await request.body(), ChatCompletionRequest)
        return _event_stream(service.chat_stream(req)) if req.stream else await service.chat(req)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = parse_body(await request.body(), CompletionRequest)
        return (
            _event_stream(service.completions_stream(req)) if req.stream else await service.completions(req)
        )

    @app.post("/v1/score")
    async def score(request: Request) -> Any:
        return await service.score(parse_body(await request.body(), ScoreRequest))

    return app


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """A streamed reply: server-sent events, as OpenAI's API streams."""
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _deployment_class():
    """The Serve deployment, defined on first use so that importing this module needs no Ray."""
    from ray import serve

    # No access log line per request: under load, formatting each one and shipping it to the driver's
    # log costs the replica (and the log monitor) CPU that decoding needs; failures are still logged.
    @serve.deployment(name="gptrecipe", logging_config={"enable_access_log": False})
    @serve.ingress()
    class ChatDeployment:
        def __init__(self, config: dict[str, Any]) -> None:
            self.service = Service(ServeConfig.model_validate(config))

        def __serve_build_asgi_app__(self) -> FastAPI:
            return create_app(self.service)

        def __del__(self) -> None:
            self.service.close()

    return ChatDeployment


def deployment(config: ServeConfig):
    """The bound Serve application for `config`: replicas, autoscaling, max_ongoing_requests from it."""
    cls = _deployment_class().options(**config.deployment_options())
    return cls.bind(config.model_dump(mode="json"))


def build_app(args: dict[str, Any]):
    """Application builder for Serve config files: `import_path: components.serve.app:build_app`."""
    return deployment(validate(ServeConfig, args, "serve application args"))
