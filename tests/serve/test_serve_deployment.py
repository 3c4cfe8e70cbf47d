"""The real thing: the deployment on Ray Serve (`serve.run`), HTTP on 127.0.0.1, the openai client."""

from __future__ import annotations

import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serve_world import make_model_dir

from components.serve.app import deployment
from components.serve.config import ServeConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_run_answers_the_openai_client(ray_cluster, tmp_path):
    from ray import serve

    paths = make_model_dir(tmp_path)
    port = free_port()
    config = ServeConfig(
        model_dir=str(paths["model"]), reward_model_dir=str(paths["reward_model"]), num_cpus=0.5,
        max_ongoing_requests=32,
    )  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(deployment(config), name="gptrecipe", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-chat", "tiny-rm"]
        assert httpx2.get(f"{base}/health").json()["status"] == "ok"

        def ask(i: int, stream: bool = False):
            kw = {"temperature": 0.9, "seed": i, "max_tokens": 10 + i}
            msgs = [{"role": "user", "content": f"What is {i} + {i}?"}]
            if not stream:
                return (
                    client.chat.completions.create(model="tiny-chat", messages=msgs, **kw)
                    .choices[0]
                    .message.content
                )
            chunks = client.chat.completions.create(model="tiny-chat", messages=msgs, stream=True, **kw)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        alone = [ask(i) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            streamed = list(pool.map(lambda i: ask(i, stream=True), range(4)))
        assert streamed == alone and len(set(alone)) == 4

        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny-chat", messages=[{"role": "bot", "content": "x"}])
        assert e.value.body["param"] == "messages" and "'bot'" in e.value.body["message"]
        scores = httpx2.post(f"{base}/v1/score", json={"pairs": [{"prompt": "Hi", "reply": "Hello"}]}).json()
        assert isinstance(scores["data"][0]["score"], float)
    finally:
        serve.shutdown()
