"""The SFT stage: input checks and planning (fast), and (slow) Ray Train runs through `run_stage` on a
tiny synthetic model -- end to end with the base model's figures beside the SFT model's, and a worker
that dies after a checkpoint resuming to the very same losses and weights."""

from __future__ import annotations

import json
import random
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file

from components.core.artifacts import Artifact
from components.core.config import ConfigError
from components.core.stage import RunEnv, run_stage
from components.io.trl import DatasetError
from components.model.checkpoint import load_model_dir, save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.tokenizer.bpe import TokenizerConfig, train_tokenizer
from components.train.sft import SFTConfig, plan_sft, sft

sys.path.insert(0, str(Path(__file__).parent))
from crashes import crashing_workers

CAPITALS = {
    "Ejon": "Thozusesh",
    "Kuviro": "Zifos",
    "Desath": "Tetun",
    "Odend": "Zekrekes",
    "Mathol": "Ekronok",
}


def conversation(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def make_world(root: Path, *, context_length: int = 64) -> dict[str, Path]:
    """A random tiny GPT with its tokenizer (the "pretrained" model), SFT conversations about capitals
    and sums, held-out prompts, and preference pairs, in the conversations stage's layout."""
    rng = random.Random(0)
    sums = [(a, b) for a in range(1, 10) for b in range(1, 10)]
    rng.shuffle(sums)
    train = [
        conversation(f"What is the capital of {c}?", f"The capital of {c} is {v}.")
        for c, v in CAPITALS.items()
    ]
    train += [conversation(f"What is {a} + {b}?", f"The answer is {a + b}.") for a, b in sums[:40]]
    test = [conversation(f"What is {a} + {b}?", f"The answer is {a + b}.") for a, b in sums[40:50]]
    prompts = [
        {
            "prompt": f"What is the capital of {c}?",
            "answer": v,
            "task": "fact",
            "competitors": list(CAPITALS.values()),
        }
        for c, v in list(CAPITALS.items())[:3]
    ] + [
        {"prompt": f"What is {a} + {b}?", "answer": str(a + b), "task": "arithmetic"} for a, b in sums[50:55]
    ]
    write_jsonl(root / "sft" / "train.jsonl", train)
    write_jsonl(root / "sft" / "test.jsonl", test)
    write_jsonl(root / "prompts" / "test.jsonl", prompts)

    texts = [m["content"] for r in train + test for m in r["messages"]] + ["user assistant system"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = train_tokenizer(texts * 5, TokenizerConfig(vocab_size=320))
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=320, context_length=context_length, n_layer=2, n_head=2, n_embd=32))
    save_model_dir(base, root / "base", tokenizer_path=root / "tok" / "tokenizer.json")
    return {"model": root / "base", "sft": root / "sft", "prompts": root / "prompts"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("sft-world"))


def small(**overrides) -> SFTConfig:
    """8 steps of 8 conversations (2 micro-batches of 4), evaluation at 0, 4 and 8, checkpoints every 3."""
    config = {
        "epochs": None,
        "max_steps": 8,
        "batch_size": 4,
        "grad_accum": 2,
        "lr": 1e-2,
        "warmup_steps": 2,
        "log_every": 1,
        "eval_every": 4,
        "max_new_tokens": 12,
        "eval_batch_size": 4,
        "checkpoint_every": 3,
        "seed": 5,
        "scaling": {"max_failures": 0},
        **overrides,
    }
    return SFTConfig.model_validate(config)


def artifacts(world: dict[str, Path]) -> dict[str, Artifact]:
    return {name: Artifact(uri=str(path), kind=name, digest=f"test:{path}") for name, path in world.items()}


# --- config and input checks (no Ray) -----------------------------------------------------------------


def cfg(**overrides) -> SFTConfig:
    return SFTConfig(**({"max_new_tokens": 16} | overrides))


def test_plan_sizes_the_run_from_epochs(world):
    plan, stats = plan_sft(
        cfg(epochs=2, batch_size=4, grad_accum=2),
        world["model"],
        world["sft"],
        world["prompts"],
        seed=1,
    )
    assert (stats.kept, stats.too_long) == (45, 0)
    assert plan.rows_per_epoch == 45 and plan.rows_per_step == 8 and plan.max_steps == 12  # ceil(90 / 8)
    assert plan.max_length == 64 and plan.render["render.kept"] == 45
    packed, _ = plan_sft(cfg(epochs=1, packing=True), world["model"], world["sft"], world["prompts"], seed=1)
    assert packed.rows_per_epoch < 45  # several short conversations per 64-token row
    with pytest.raises(ValidationError, match="exactly one of epochs and max_steps"):
        SFTConfig(max_steps=10)


def test_inputs_that_cannot_work_are_refused_before_training(world, tmp_path):
    with pytest.raises(DatasetError, match=r"none of the 45 conversations fits max_length 4 \(45 too long"):
        plan_sft(cfg(max_length=4), world["model"], world["sft"], world["prompts"], seed=0)
    with pytest.raises(ConfigError, match="max_new_tokens 64 leaves no room"):
        plan_sft(cfg(max_new_tokens=64), world["model"], world["sft"], world["prompts"], seed=0)
    with pytest.raises(FileNotFoundError, match=r"prompts/test.jsonl is missing"):
        plan_sft(cfg(), world["model"], world["sft"], tmp_path / "prompts", seed=0)
    bare = tmp_path / "bare"
    save_model_dir(GPT(GPTConfig(vocab_size=320, context_length=64, n_layer=1, n_head=1, n_embd=8)), bare)
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json is missing"):
        plan_sft(cfg(), bare, world["sft"], world["prompts"], seed=0)
    bad = tmp_path / "bad-sft"
    write_jsonl(bad / "test.jsonl", [conversation("Hi", "Hello")])
    write_jsonl(
        bad / "train.jsonl", [conversation("Hi", "Hello"), {"messages": [{"role": "user", "content": "x"}]}]
    )
    with pytest.raises(DatasetError, match=r"train.jsonl:2: messages has no assistant message"):
        plan_sft(cfg(), world["model"], bad, world["prompts"], seed=0)


# --- Ray Train runs (slow) ------------------------------------------------------------------------------


def env_for(root: Path, tracking_uri: str, experiment: str) -> RunEnv:
    return RunEnv(run_id="t", store=str(root / "store"), tracking_uri=tracking_uri, experiment=experiment)


def history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def reference(ray_cluster, world, tmp_path_factory, tracking_uri):
    root = tmp_path_factory.mktemp("sft-reference")
    record = run_stage(sft, small(), artifacts(world), env_for(root, tracking_uri, "test_sft_reference"))
    return {"record": record, "losses": history(tracking_uri, record.mlflow_run_id, "train/loss")}


@pytest.mark.slow
def test_sft_stage_end_to_end(reference, world, tracking_uri):
    record = reference["record"]
    assert record.status == "done"
    headline = record.metrics
    assert {
        "accuracy",
        "base_accuracy",
        "format_compliance",
        "base_format_compliance",
        "val_loss",
        "base_val_loss",
    } <= set(headline)
    assert 0 <= headline["accuracy"] <= 1 and 0 <= headline["base_format_compliance"] <= 1
    assert headline["val_loss"] < headline["base_val_loss"] - 1.0  # it learned the replies' tokens

    out = Path(record.outputs["model"].uri)
    model, config = load_model_dir(out)
    assert config["stage"] == "sft" and config["training"]["steps"] == 8
    assert (out / "tokenizer.json").read_bytes() == (world["model"] / "tokenizer.json").read_bytes()
    base, _ = load_model_dir(world["model"])
    assert model.config == base.config and not torch.equal(model.tok_emb.weight, base.tok_emb.weight)

    run_id = record.mlflow_run_id
    losses = reference["losses"]
    assert [s for s, _ in losses] == list(range(1, 9)) and losses[-1][1] < losses[0][1]
    assert [s for s, _ in history(tracking_uri, run_id, "val/loss")] == [0, 4, 8]
    assert [s for s, _ in history(tracking_uri, run_id, "eval/accuracy")] == [0, 8]
    assert history(tracking_uri, run_id, "base/accuracy") == [(0, headline["base_accuracy"])]
    assert history(tracking_uri, run_id, "eval/accuracy.arithmetic")[-1][0] == 8
    assert history(tracking_uri, run_id, "render.kept") == [(0, 45.0)]
    client = MlflowClient(tracking_uri)
    names = sorted(a.path for a in client.list_artifacts(run_id, "samples"))
    assert names == ["samples/step_00000_base_model.txt", "samples/step_00008.txt"]
    text = Path(client.download_artifacts(run_id, "samples/step_00008.txt")).read_text()
    assert "[user] What is the capital of Ejon?" in text and "task=fact" in text


@pytest.mark.slow
def test_crashed_stage_resumes_from_its_checkpoint_to_the_same_result(
    reference, world, tmp_path, tracking_uri
):
    """Checkpoints at 3 and 6; the worker dies after step 7 and, with no restarts left, the stage fails.
    Run again with the same config (same cache key, same checkpoints), it continues from step 6: its
    losses, the base model's figures from before the crash and the final weights equal the uninterrupted
    run's."""
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "step-7").touch()
    config = small()
    env = env_for(tmp_path, tracking_uri, "test_sft_resume")
    with crashing_workers("components.train.sft", markers), pytest.raises(Exception, match=r"(?i)train"):
        run_stage(sft, config, artifacts(world), env)
    assert not (markers / "step-7").exists()
    record = run_stage(sft, config, artifacts(world), env)
    assert record.status == "done"

    expected = dict(reference["losses"])
    resumed = history(tracking_uri, record.mlflow_run_id, "train/loss")
    assert [s for s, _ in resumed] == [7, 8]
    for step, value in resumed:
        assert value == pytest.approx(expected[step], rel=1e-6, abs=1e-6)
    want = reference["record"].metrics
    for key in ("base_accuracy", "base_format_compliance", "base_val_loss", "accuracy", "val_loss"):
        assert record.metrics[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    run = MlflowClient(tracking_uri).get_run(record.mlflow_run_id)
    assert run.data.tags["sft.resumed_from_step"] == "6"
    got = load_file(str(Path(record.outputs["model"].uri) / "model.safetensors"))
    for name, tensor in load_file(
        str(Path(reference["record"].outputs["model"].uri) / "model.safetensors")
    ).items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6)
