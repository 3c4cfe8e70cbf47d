"""The `register_model` stage against a real MLflow (SQLite in tmp_path): versions, champion and
challenger by gold accuracy, caching, the ResponsesAgent loaded back, `models:/NAME@champion` resolved
and served in-process, lineage, a tracking outage, and the experiment-kind tag that picks the UI's view."""

from __future__ import annotations

import json
import socket
import uuid
import warnings
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from starlette.testclient import TestClient

from components.core.artifacts import Artifact
from components.core.stage import RunEnv, run_stage
from components.core.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker
from components.eval import registry
from components.eval.register_model import RegisterConfig, register_model
from components.model.checkpoint import load_model_dir, save_model_dir
from components.model.export import export_model_dir
from components.model.generate import generate
from components.model.gpt import GPT, GPTConfig
from components.serve.app import create_app
from components.serve.config import ServeConfig
from components.serve.resolve import resolve_model
from components.serve.service import Service
from components.tokenizer.bpe import TokenizerConfig, eot_id, load_tokenizer, train_tokenizer
from components.tokenizer.chat import ChatTokens, assistant_reply, render

TEXTS = ["The capital of Ejon is Thozusesh.", "What is 3 + 4? The answer is 7.", "Hello! user assistant"]
QUESTION = [{"role": "user", "content": "What is the capital of Ejon?"}]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny GPT model directory, its transformers export and stand-ins for the data artifacts."""
    root = tmp_path_factory.mktemp("register")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corpus this small learns fewer merges than asked for
        tok = train_tokenizer(TEXTS * 5, TokenizerConfig(vocab_size=300))
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tok.get_vocab_size(), context_length=64, n_layer=1, n_head=2, n_embd=32, init_std=0.1
    )
    save_model_dir(GPT(config), root / "policy", tokenizer_path=root / "tokenizer.json")
    export_model_dir(root / "policy", root / "hf_model")
    for name in ("sft", "preferences", "prompts"):
        (root / name).mkdir()
        (root / name / "train.jsonl").write_text(json.dumps({"name": name}) + "\n")
    return root


def report(root: Path, accuracy: float) -> Path:
    path = root / f"report-{accuracy}"
    path.mkdir(exist_ok=True)
    (path / "evaluation.json").write_text(json.dumps({"models": {"ppo": {"accuracy": accuracy}}}))
    return path


def inputs(world: Path, accuracy: float) -> dict[str, Artifact]:
    def art(path: Path, kind: str) -> Artifact:
        return Artifact(uri=str(path), kind=kind, digest=f"test-{path.name}")

    return {
        "model": art(world / "policy", "model"),
        "hf_model": art(world / "hf_model", "hf_model"),
        "report": art(report(world, accuracy), "evaluation"),
        **{n: art(world / n, n) for n in ("sft", "preferences", "prompts")},
    }


def env(tmp_path: Path, tracking_uri: str, name: str = "register") -> RunEnv:
    return RunEnv(
        run_id=uuid.uuid4().hex[:8],
        store=str(tmp_path / "store"),
        tracking_uri=tracking_uri,
        experiment=f"test_register-{name}",
        pipeline="regtest",
    )


@pytest.fixture(scope="module")
def registered(world, tmp_path_factory, tracking_uri):
    """Three pipeline runs: 0.25, then a better 0.5 (champion moves), then a worse 0.375 (challenger)."""
    name = f"gptrecipe-test-{uuid.uuid4().hex[:6]}"
    config = RegisterConfig(model_name=name, max_output_tokens=8)
    run_env = env(tmp_path_factory.mktemp("store"), tracking_uri)
    records, aliases = [], []
    client = MlflowClient(tracking_uri)
    for accuracy in (0.25, 0.5, 0.375):
        records.append(run_stage(register_model, config, inputs(world, accuracy), run_env))
        aliases.append(
            {a: str(client.get_model_version_by_alias(name, a).version) for a in ("champion", "challenger")
             if a in client.get_registered_model(name).aliases}
        )  # fmt: skip
    return {"name": name, "config": config, "env": run_env, "records": records, "aliases": aliases}


def registration(record) -> dict:
    return json.loads((Path(record.outputs["registration"].uri) / "registration.json").read_text())


def test_champion_moves_only_when_the_gold_accuracy_improves(registered):
    versions = [registration(r)["version"] for r in registered["records"]]
    assert versions == ["1", "2", "3"]
    assert [registration(r)["alias"] for r in registered["records"]] == ["champion", "champion", "challenger"]
    assert registered["aliases"] == [
        {"champion": "1"},
        {"champion": "2"},
        {"champion": "2", "challenger": "3"},
    ]
    third = registration(registered["records"][2])
    assert (third["previous_champion"], third["previous_champion_accuracy"]) == ("2", 0.5)
    assert registered["records"][2].metrics == {
        "registered": 1.0, "version": 3.0, "champion": 0.0, "gold_accuracy": 0.375,
    }  # fmt: skip
    assert MlflowClient(registered["env"].tracking_uri).get_model_version(registered["name"], "3").tags[
        registry.GOLD_TAG
    ] == repr(0.375)


def test_a_cache_hit_registers_nothing(registered, world):
    again = run_stage(register_model, registered["config"], inputs(world, 0.375), registered["env"])
    assert again.status == "cached"
    client = MlflowClient(registered["env"].tracking_uri)
    assert len(client.search_model_versions(f"name='{registered['name']}'")) == 3


def test_the_version_is_linked_to_its_run_with_dataset_inputs(registered):
    client = MlflowClient(registered["env"].tracking_uri)
    version = client.get_model_version(registered["name"], "2")
    assert version.run_id == registered["records"][1].mlflow_run_id
    run = client.get_run(version.run_id)
    datasets = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"sft", "preferences", "prompts", "report"}
    contexts = {n: {t.key: t.value for t in d.tags}["mlflow.data.context"] for n, d in datasets.items()}
    assert contexts == {
        "sft": "training",
        "preferences": "training",
        "prompts": "training",
        "report": "evaluation",
    }
    assert json.loads(datasets["sft"].dataset.source)["uri"].endswith("/sft")


def expected_reply(world: Path, max_new_tokens: int) -> str:
    model, _ = load_model_dir(world / "policy")
    tok = load_tokenizer(world / "policy" / "tokenizer.json")
    prompt = render(tok, QUESTION, add_generation_prompt=True).ids
    out = generate(
        model, [prompt], max_new_tokens=max_new_tokens, temperature=0.0,
        stop_tokens=[ChatTokens.of(tok).im_end, eot_id(tok)],
    )  # fmt: skip
    return assistant_reply(tok, out.response_lists()[0]).text


def test_the_champion_loads_as_a_responses_agent(registered, world):
    # Tracing off and MLflow pointed at the test's database: nothing lands in the working directory.
    with registry.mlflow_at(registered["env"].tracking_uri):
        agent = mlflow.pyfunc.load_model(f"models:/{registered['name']}@champion")
        answer = agent.predict({"input": QUESTION, "max_output_tokens": 6})
    (item,) = answer["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0]["text"] == expected_reply(world, 6)


def test_serve_resolves_the_champion_and_the_app_answers(registered, tmp_path):
    resolved = resolve_model(
        f"models:/{registered['name']}@champion",
        tracking_uri=registered["env"].tracking_uri,
        cache_dir=tmp_path / "cache",
    )
    assert resolved.name == registered["name"]
    assert json.loads((resolved.model_dir / "config.json").read_text())["format"] != "transformers"
    service = Service(ServeConfig(model_dir=str(resolved.model_dir), model_name=resolved.name))
    try:
        with TestClient(create_app(service)) as http:
            body = {"model": resolved.name, "messages": QUESTION, "max_tokens": 4, "temperature": 0}
            response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == resolved.name
    finally:
        service.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracking_outage_does_not_fail_the_stage(world, tmp_path):
    down = env(tmp_path, f"http://127.0.0.1:{free_port()}", "down")
    record = run_stage(register_model, RegisterConfig(), inputs(world, 0.5), down)
    assert record.status == "done" and record.metrics["registered"] == 0.0
    result = registration(record)
    assert not result["registered"] and "unreachable" in result["error"]
    assert result["name"] == "gptrecipe-regtest"


def test_pick_alias_and_gold_accuracy(world):
    assert registry.pick_alias(0.5, None, None) == "champion"
    assert registry.pick_alias(0.5, "1", 0.5) == "challenger"  # strictly better only
    assert registry.pick_alias(0.6, "1", 0.5) == "champion"
    assert registry.pick_alias(None, None, None) == "challenger"
    assert registry.pick_alias(0.9, "1", None) == "challenger"  # a champion of unknown accuracy stays
    assert registry.gold_accuracy(report(world, 0.75), "ppo.accuracy") == 0.75
    assert registry.gold_accuracy(report(world, 0.75), "grpo.accuracy") is None
    assert registry.gold_accuracy(None, "ppo.accuracy") is None


def test_new_experiments_open_in_the_model_training_view(tracking_uri):
    name = f"test_register-kind-{uuid.uuid4().hex[:6]}"
    tracker = Tracker(tracking_uri, name, run_name="probe")
    assert tracker.finish()
    experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_the_rayservice_app_pins_the_alias_to_a_version(registered):
    from components.serve.registry_app import pin_version

    uri = registered["env"].tracking_uri
    assert pin_version(f"models:/{registered['name']}@champion", uri) == f"models:/{registered['name']}/2"
    assert pin_version(f"models:/{registered['name']}/3", uri) == f"models:/{registered['name']}/3"
