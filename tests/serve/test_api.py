"""The OpenAI-style API in-process: the official `openai` client talks to the FastAPI app through
Starlette's TestClient (an httpx client that calls the ASGI app directly)."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from serve_world import make_model_dir

from components.model.checkpoint import load_model_dir
from components.model.heads import load_scalar_model_dir
from components.serve.app import create_app
from components.serve.config import ServeConfig
from components.serve.service import Service
from components.tokenizer.bpe import encode_batch, load_tokenizer
from components.tokenizer.chat import render

CONTEXT = 96


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("api"), context_length=CONTEXT)


@pytest.fixture(scope="module")
def service(world):
    config = ServeConfig(
        model_dir=str(world["model"]), reward_model_dir=str(world["reward_model"]), max_tokens_limit=64
    )
    service = Service(config)
    yield service
    service.close()


@pytest.fixture(scope="module")
def http(service):
    with TestClient(create_app(service)) as http:
        yield http


@pytest.fixture(scope="module")
def client(http):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def ask(client, content: str, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 12)
    return client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": content}], **kw
    )


def test_models_and_health(client, http):
    assert [m.id for m in client.models.list().data] == ["tiny-chat", "tiny-rm"]
    assert http.get("/health").json() == {"status": "ok", "model": "tiny-chat", "active_sequences": 0}


def test_chat_is_the_model_continuing_the_rendered_conversation(client, world):
    reply = ask(client, "What is 3 + 4?", max_tokens=10)
    model, _ = load_model_dir(world["model"])
    tok = load_tokenizer(world["model"] / "tokenizer.json")
    prompt = render(tok, [{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True).ids
    with torch.no_grad():
        ids = list(prompt)
        for _ in range(10):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    expected = tok.decode(ids[len(prompt) :], skip_special_tokens=False)
    choice = reply.choices[0]
    im_end = tok.token_to_id("<|im_end|>")
    if im_end in ids[len(prompt) :]:
        assert choice.finish_reason == "stop"
        expected = tok.decode(ids[len(prompt) : ids.index(im_end, len(prompt))], skip_special_tokens=False)
    else:
        assert choice.finish_reason == "length"
    assert choice.message.role == "assistant" and choice.message.content == expected
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == 10 and reply.model == "tiny-chat"


def test_streaming_chunks_add_up_to_the_plain_answer(client, http):
    plain = ask(client, "Grüße aus Zürich", max_tokens=16, seed=7, temperature=0.8)
    stream = ask(
        client, "Grüße aus Zürich", max_tokens=16, seed=7, temperature=0.8, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    # On the wire: SSE `data:` lines ending with [DONE].
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 3,
    }
    lines = http.post("/v1/chat/completions", json=body).text.strip().split("\n\n")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: {") for line in lines[:-1])
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_n_choices_with_a_seed_are_seed_plus_i(client):
    three = ask(client, "Hello", n=3, seed=11, temperature=1.0, max_tokens=8)
    singles = [ask(client, "Hello", seed=11 + i, temperature=1.0, max_tokens=8) for i in range(3)]
    assert [c.message.content for c in three.choices] == [s.choices[0].message.content for s in singles]
    assert [c.index for c in three.choices] == [0, 1, 2]


def test_stop_strings_cut_the_text(client):
    full = ask(client, "Hello", max_tokens=20, temperature=1.0, seed=3).choices[0].message.content
    assert len(full) > 4
    stop = full[2:4]
    reply = ask(client, "Hello", max_tokens=20, temperature=1.0, seed=3, stop=[stop])
    cut = reply.choices[0]
    assert cut.message.content == full[: full.index(stop)] and cut.finish_reason == "stop"
    # Usage counts the tokens up to the one that completed the stop string, streamed or not (a stream
    # gathers several tokens per chunk, and the engine may decode a few more before it sees the cancel).
    stream = ask(
        client, "Hello", max_tokens=20, temperature=1.0, seed=3, stop=[stop], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    assert list(stream)[-1].usage.completion_tokens == reply.usage.completion_tokens < 20


def test_concurrent_requests_do_not_cross_talk(client, service):
    prompts = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2)]]
    kwargs = [{"seed": 40 + i, "temperature": 0.9 if i % 2 else 0.0, "max_tokens": 12 + i} for i in range(6)]
    alone = [ask(client, p, **kw).choices[0].message.content for p, kw in zip(prompts, kwargs, strict=True)]
    service.engine.max_rows_seen = 0
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(ask, client, p, **kw) for p, kw in zip(prompts, kwargs, strict=True)]
        together = [f.result().choices[0].message.content for f in futures]
    assert together == alone
    assert service.engine.max_rows_seen > 1  # they really were decoded in one batch


def test_echo_logprobs_are_the_models_own(client, world):
    model, _ = load_model_dir(world["model"])
    tok = load_tokenizer(world["model"] / "tokenizer.json")
    text = "The capital of Ejon is Thozusesh."
    ids = encode_batch(tok, [text], append_eot=False)[0]
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0][0].log_softmax(-1)
    expected = [float(logp[i - 1, t]) for i, t in enumerate(ids) if i > 0]
    for prompt in (text, ids):  # lm-eval sends text or token ids
        out = client.completions.create(
            model="tiny-chat", prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0
        )
        lp = out.choices[0].logprobs
        assert len(lp.tokens) == len(ids) + 1 and "".join(lp.tokens[: len(ids)]) == text
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)
        assert lp.text_offset[: len(ids)] == [len("".join(lp.tokens[:i])) for i in range(len(ids))]
        # The generated token is greedy: its log-prob is the best of its top_logprobs.
        assert lp.token_logprobs[-1] == pytest.approx(max(lp.top_logprobs[-1].values()))
        assert out.choices[0].text.startswith(text)
    scored = client.completions.create(model="tiny-chat", prompt=text, echo=True, logprobs=0, max_tokens=0)
    assert scored.choices[0].text == text
    assert scored.choices[0].logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)


def test_score_is_the_reward_models_score(http, world):
    pairs = [
        {"prompt": "What is 3 + 4?", "reply": "7"},
        {"prompt": "What is 3 + 4?", "reply": "The answer is 9."},
    ]
    got = http.post("/v1/score", json={"pairs": pairs}).json()
    rm, _ = load_scalar_model_dir(world["reward_model"])
    tok = load_tokenizer(world["reward_model"] / "tokenizer.json")
    for pair, row in zip(pairs, got["data"], strict=True):
        convo = [{"role": "user", "content": pair["prompt"]}, {"role": "assistant", "content": pair["reply"]}]
        with torch.no_grad():
            expected = float(rm.score(torch.tensor([render(tok, convo).ids])))
        assert row["score"] == pytest.approx(expected, abs=1e-5)
    assert got["data"][0]["score"] != got["data"][1]["score"]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"messages": [{"role": "user", "content": "word " * 200}]}, 400, "messages", "context"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65},
            400,
            "max_tokens",
            "limit of 64",
        ),
        (
            {"messages": [{"role": "user", "content": "hi " * 12}], "max_tokens": 64},
            400,
            "max_tokens",
            "context",
        ),
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model", "'gpt-4'"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, 400, "messages", "'bot'"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, "temperature", "2"),
        ({"messages": []}, 400, "messages", "empty"),
        ({}, 400, "model", "required"),
    ],
)
def test_bad_chat_requests_get_openai_errors(http, body, status, param, words):
    body = {"model": "tiny-chat", **body} if body else body
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_malformed_json_and_bad_completion_requests(client, http):
    response = http.post("/v1/chat/completions", content=b'{"model": "tiny-chat", "messages": [')
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny-chat", prompt="x " * 200, max_tokens=1)
    assert e.value.body["param"] == "prompt" and "context" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")


def test_a_client_that_disconnects_frees_its_slot(client, service, monkeypatch):
    # Slow decoding down, so the 64 tokens cannot all be out before the client's close arrives.
    step = service.engine._decode_step
    monkeypatch.setattr(service.engine, "_decode_step", lambda: (time.sleep(0.02), step())[1])
    cancelled = service.engine.cancelled
    # Seed 2 samples no stop token within 64 tokens (seed 1 stops after 50): only the cancel ends it early.
    stream = ask(client, "Hello", max_tokens=64, temperature=1.0, seed=2, stream=True)
    next(iter(stream))  # the role chunk: the request is running
    stream.close()
    deadline = time.time() + 10
    while service.engine.cancelled == cancelled and time.time() < deadline:
        time.sleep(0.01)
    assert service.engine.cancelled == cancelled + 1  # dropped mid-way, not run to max_tokens
    deadline = time.time() + 10
    while service.engine.active and time.time() < deadline:
        time.sleep(0.02)
    assert service.engine.active == 0
