"""`gptrecipe chat`: a terminal chat that streams the reply token by token.

It talks to a running server (`--url http://127.0.0.1:8000`) or to a model loaded in this process (the
MODEL argument of `gptrecipe serve`), in both cases through the `openai` client: in-process, the client's
HTTP transport is the app itself (Starlette's TestClient is an httpx client that calls the ASGI app), so
both ways run exactly the same request path as the server.

Lines starting with a slash are commands: `/system <text>` sets the system message, `/reset` forgets the
conversation (the system message stays), `/quit` ends. Every reply is prefixed by the model that wrote it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO

HELP = "commands: /system <text>, /reset, /quit"


@contextlib.contextmanager
def in_process_client(config: Any) -> Iterator[Any]:
    """An openai client whose requests go straight to an in-process app for `config` (a ServeConfig)."""
    import openai
    from starlette.testclient import TestClient

    from components.serve.app import create_app
    from components.serve.service import Service

    service = Service(config)
    try:
        with TestClient(create_app(service)) as http:
            yield openai.OpenAI(base_url="http://testserver/v1", api_key="in-process", http_client=http)
    finally:
        service.close()


def url_client(url: str, api_key: str | None) -> Any:
    import openai

    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key or "none")


def chat_loop(
    client: Any,
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float = 0.7,
    max_tokens: int | None = None,
    seed: int | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    """Read lines from `stdin` until EOF or /quit; stream each reply to `stdout`."""
    model = model or client.models.list().data[0].id
    interactive = stdin.isatty()
    print(f"chatting with {model} ({HELP})", file=stdout, flush=True)
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            return 0
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            if command == "/quit":
                return 0
            if command == "/reset":
                history = []
                print("(conversation reset)", file=stdout, flush=True)
            elif command == "/system":
                system = rest.strip() or None
                print(f"(system message {'set' if system else 'removed'})", file=stdout, flush=True)
            else:
                print(f"(unknown command {command}; {HELP})", file=stdout, flush=True)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stream=True,
        )
        reply, shown = [], False
        for chunk in stream:
            if not shown:
                print(f"{chunk.model}> ", end="", file=stdout, flush=True)
                shown = True
            for choice in chunk.choices:
                if choice.delta.content:
                    reply.append(choice.delta.content)
                    print(choice.delta.content, end="", file=stdout, flush=True)
        print(file=stdout, flush=True)
        history.append({"role": "assistant", "content": "".join(reply)})
