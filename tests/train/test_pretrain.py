"""The pretrain stage: input checks, evaluation arithmetic, and (slow) Ray Train runs -- end to end in a
pipeline, a killed worker and a crashed stage resuming to the very same losses, 2 data-parallel
workers (DDP, FSDP2) matching 1 worker with gradient accumulation."""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle
import torch
from mlflow import MlflowClient
from pydantic import Field, ValidationError
from safetensors.torch import load_file

from components.core.config import ConfigError, StageConfig
from components.core.stage import Stage, stage
from components.eval.bits_per_byte import token_byte_lengths
from components.io.token_shards import ShardWriter
from components.io.token_stream import NotEnoughTokensError
from components.model.checkpoint import CheckpointError, load_model_dir, save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.tokenizer.bpe import TokenizerConfig, decode, encode_batch, eot_id, train_tokenizer
from components.train.pretrain import PretrainConfig, evaluate, plan_pretraining, pretrain, unigram_entropy
from components.train.pretrain_config import check_config
from components.train.trainer import Runtime
from pipelines.config import PipelineSettings
from pipelines.dag import Node, Pipeline
from pipelines.runner import PipelineRun

sys.path.insert(0, str(Path(__file__).parent))
from crashes import crashing_stage

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests

COUNTRIES = {
    "Ejon": "Thozusesh",
    "Kuviro": "Zifos",
    "Desath": "Tetun",
    "Odend": "Zekrekes",
    "Mathol": "Ekronok",
}


def make_texts(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        names = rng.sample(sorted(COUNTRIES), 3)
        lines = [f"The capital of {c} is {COUNTRIES[c]}." for c in names]
        lines.insert(
            1, rng.choice(["Many visitors come in spring.", "The rivers are long.", "Trains are fast."])
        )
        docs.append(" ".join(lines))
    return docs


def write_corpus(root: Path, train_docs: list[str], val_docs: list[str], tokenizer_texts: list[str]) -> Path:
    """tokenizer/tokenizer.json and tokens/{train,val}/part-*.bin + tokens_meta.json, as the tokenizer
    stages write them."""
    tok = train_tokenizer(tokenizer_texts, TokenizerConfig(vocab_size=300))
    (root / "tokenizer").mkdir(parents=True)
    tok.save(str(root / "tokenizer" / "tokenizer.json"))
    counts = {}
    for split, docs in (("train", train_docs), ("val", val_docs)):
        (root / "tokens" / split).mkdir(parents=True)
        ids = encode_batch(tok, docs) if docs else []
        half = len(ids) // 2
        counts[split] = 0
        for i, part in enumerate([ids[:half], ids[half:]] if split == "train" else [ids]):
            with ShardWriter(
                root / "tokens" / split / f"part-{i:05d}.bin", tok.get_vocab_size(), eot_id(tok)
            ) as w:
                for doc in part:
                    w.write(doc)
                counts[split] += w.n_tokens
    meta = {
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "vocab_size": tok.get_vocab_size(),
        "eot_id": eot_id(tok),
        "dtype": "uint16",
    }
    (root / "tokens" / "tokens_meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    texts = make_texts(400, seed=0)
    return write_corpus(tmp_path_factory.mktemp("corpus"), texts[:360], texts[360:], texts)


def small(**overrides) -> PretrainConfig:
    """A model and run small enough for tests: 2 layers of width 32, 8 steps of 8 rows of 24 tokens."""
    config = {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "context_length": 32,
        "seq_len": 24,
        "batch_size": 2,
        "grad_accum": 4,
        "max_steps": 8,
        "lr": 1e-2,
        "warmup_steps": 2,
        "log_every": 1,
        "eval_every": 4,
        "eval_batches": 2,
        "sample_every": 8,
        "sample_prompts": ["The capital of Ejon is"],
        "sample_tokens": 6,
        "checkpoint_every": 3,
        "seed": 7,
        "scaling": {"max_failures": 0},
        # fp32 whatever the CPU: the tests compare losses across world sizes and resumes to 1e-4.
        "dtype": "float32",
        **overrides,
    }
    return PretrainConfig.model_validate(config)


def plan(corpus: Path, **overrides):
    return plan_pretraining(
        small(**overrides), corpus / "tokens", corpus / "tokenizer" / "tokenizer.json", seed=0
    )


# --- config and input checks (no Ray) -----------------------------------------------------------------


def test_config_shape_and_length_rules():
    assert small().gpt_config(300) == GPTConfig(
        vocab_size=300, context_length=32, n_layer=2, n_head=2, n_embd=32, block="llama"
    )
    by_depth = PretrainConfig(depth=2, context_length=64).gpt_config(4096)
    assert (by_depth.n_layer, by_depth.n_head, by_depth.n_embd) == (2, 2, 128)
    assert PretrainConfig(pad_vocab_to=64).gpt_config(3108).vocab_size == 3136
    with pytest.raises(ValidationError, match="n_layer, n_head and n_embd go together"):
        PretrainConfig(n_layer=2)
    with pytest.raises(ValidationError, match="exactly one of max_steps and max_tokens"):
        PretrainConfig(max_tokens=1000)
    with pytest.raises(ValidationError, match=r"scaling\.num_workers"):
        PretrainConfig(scaling={"num_workers": 0})


def test_plan_derives_steps_bytes_and_entropy(corpus):
    p = plan(corpus, max_steps=None, max_tokens=1000)
    assert p.tokens_per_step == 2 * 4 * 24 and p.max_steps == math.ceil(1000 / 192)
    assert p.model.vocab_size == 300 and p.seq_len == 24 and len(p.train_shards) == 2
    assert p.token_bytes[p.eot_id] == 0 and p.token_bytes[ord("a")] == 1
    counts = np.bincount(
        np.concatenate([np.fromfile(f, dtype="<u2", offset=256) for f in p.train_shards]), minlength=300
    )
    assert p.unigram_entropy_nats == pytest.approx(unigram_entropy(counts))
    assert 1.0 < p.unigram_entropy_nats < math.log(300)


def test_token_bytes_add_up_to_the_utf8_length_of_the_text(corpus):
    from components.tokenizer.bpe import load_tokenizer

    tok = load_tokenizer(corpus / "tokenizer" / "tokenizer.json")
    lengths = token_byte_lengths(tok, tok.get_vocab_size() + 5)
    text = "The capital of Ejon is Thozusesh. Größe: 3 €, naïve café — 東京 🙂"
    ids = encode_batch(tok, [text])[0]
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))  # the end-of-text counts 0
    assert decode(tok, ids[:-1]) == text
    assert lengths[-5:] == [0] * 5  # padding rows beyond the tokenizer


def test_unigram_entropy_of_known_distributions():
    assert unigram_entropy(np.array([5, 5, 5, 5, 0])) == pytest.approx(math.log(4))
    assert unigram_entropy(np.array([7, 0])) == 0.0


def test_empty_corpus_is_refused_with_the_token_count_needed(corpus, tmp_path):
    empty = write_corpus(tmp_path / "empty", [], make_texts(20, 1), make_texts(50, 2))
    with pytest.raises(
        NotEnoughTokensError, match=r"training split is empty, but one optimizer step needs 193 "
    ):
        plan(empty)


def test_tiny_corpus_is_refused_with_both_numbers(corpus, tmp_path):
    tiny = write_corpus(tmp_path / "tiny", make_texts(3, 1), make_texts(20, 1), make_texts(50, 2))
    with pytest.raises(
        NotEnoughTokensError, match=r"has \d+ tokens, but one optimizer step needs 1,537 .*x 2 worker"
    ):
        plan(tiny, batch_size=8, scaling={"num_workers": 2})
    with pytest.raises(
        NotEnoughTokensError, match=r"validation split has \d+ tokens; evaluation needs .* 33"
    ):
        plan(write_corpus(tmp_path / "noval", make_texts(50, 1), ["Hi."], make_texts(50, 2)), seq_len=32)


def test_sequence_longer_than_the_context_is_refused(corpus):
    with pytest.raises(ConfigError, match="seq_len 64 is longer than the model's context_length 32"):
        plan(corpus, seq_len=64)
    with pytest.raises(ConfigError, match=r"sample prompt 'The capital of Ejon is' .* longer than .* 32"):
        plan(corpus, sample_tokens=30)


def test_copy_rows_longer_than_the_context_are_refused_before_any_stage():
    with pytest.raises(ConfigError, match="copy_seq_len 64 is longer than the model's context_length 32"):
        check_config(small(copy_rows=2, copy_seq_len=64), [])
    check_config(small(copy_seq_len=64), [])  # no copy rows asked for: nothing to refuse


def test_tokens_from_another_tokenizer_are_refused(corpus, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(corpus, other)
    meta = json.loads((other / "tokens" / "tokens_meta.json").read_text())
    (other / "tokens" / "tokens_meta.json").write_text(json.dumps({**meta, "vocab_size": 4096}))
    with pytest.raises(ConfigError, match=r"tokens_meta.json says vocab_size 4096.* has vocab_size 300"):
        plan(other)


def test_init_from_weights_of_another_shape_is_refused_naming_the_tensor(corpus, tmp_path):
    wide = GPT(GPTConfig(vocab_size=300, context_length=32, n_layer=2, n_head=2, n_embd=64))
    save_model_dir(wide, tmp_path / "wide")
    with pytest.raises(
        CheckpointError, match=r"tok_emb.weight: shape \(300, 64\) in the init_from .*\(300, 32\)"
    ):
        plan(corpus, init_from=str(tmp_path / "wide"))
    same = GPT(small().gpt_config(300))
    save_model_dir(same, tmp_path / "same")
    assert plan(corpus, init_from=str(tmp_path / "same")).init_from == str(tmp_path / "same")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors does not exist"):
        plan(corpus, init_from=str(tmp_path / "nowhere"))


def test_val_loss_and_bits_per_byte_of_a_uniform_model():
    """Zero logits predict every token with 1/V: NLL ln V per token. End-of-text targets count in the
    loss but not in bits per byte; weight-0 (padding) rows count nowhere."""
    V = 50
    model = GPT(GPTConfig(vocab_size=V, context_length=8, n_layer=1, n_head=1, n_embd=8))
    torch.nn.init.zeros_(model.lm_head.weight)
    token_bytes = torch.tensor([0] + [2] * (V - 1))  # id 0 is the end-of-text: no bytes
    ids = torch.tensor([[5, 6, 0, 7, 8], [9, 9, 9, 9, 9], [1, 2, 3, 4, 5]])
    weights = torch.tensor([1.0, 1.0, 0.0])
    cpu = Runtime(0, 1, torch.device("cpu"), torch.float32)
    loss, bpb = evaluate(model, ids, weights, token_bytes, cpu, batch_size=2)
    assert loss == pytest.approx(math.log(V))
    text_targets, nbytes = 7, 14  # 8 targets in the two real rows, one of them end-of-text
    assert bpb == pytest.approx(text_targets * math.log(V) / (math.log(2) * nbytes))
    assert model.training  # evaluation leaves the mode as it found it


# --- Ray Train runs (slow) ------------------------------------------------------------------------------


class CorpusConfig(StageConfig):
    source: str = Field("", description="Directory with tokens/ and tokenizer/ to publish.")


@stage("corpus", config=CorpusConfig, outputs=("tokens", "tokenizer"), cpus=0)
def publish_corpus(ctx, config, inputs):
    """Publishes a prepared token corpus (stands in for train_tokenizer + tokenize)."""
    for name in ("tokens", "tokenizer"):
        with ctx.output_dir(name) as out:
            shutil.copytree(Path(config.source, name), out, dirs_exist_ok=True)
    return {
        "tokens": ctx.artifact("tokens", kind="tokens"),
        "tokenizer": ctx.artifact("tokenizer", kind="tokenizer"),
    }


def run_pipeline(settings: dict, corpus: Path, *, stage: Stage = pretrain, **pretrain_overrides):
    pipeline = Pipeline(
        "pretrain-test",
        [
            Node(publish_corpus),
            Node(stage, {"tokens": "corpus.tokens", "tokenizer": "corpus.tokenizer"}),
        ],
    )
    config = small(**pretrain_overrides).model_dump(mode="json")
    model = pipeline.config_model(PipelineSettings)
    full = model.model_validate({"pipeline": settings, "corpus": {"source": str(corpus)}, "pretrain": config})
    _, summary = PipelineRun(full, pipeline, source="test").execute()
    return summary


def pretrain_runs(settings: dict) -> list:
    client = MlflowClient(settings["tracking_uri"])
    exp = client.get_experiment_by_name(settings["experiment"])
    runs = client.search_runs(
        [exp.experiment_id], "tags.`gptrecipe.stage` = 'pretrain'", order_by=["start_time"]
    )
    return [r for r in runs if r.data.tags.get("gptrecipe.cache") == "miss"]


def history(settings: dict, run_id: str, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(settings["tracking_uri"])
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def reference(ray_cluster, corpus, tmp_path_factory, tracking_uri):
    """One uninterrupted run: 1 worker, 8 steps of 4 accumulated micro-batches."""
    root = tmp_path_factory.mktemp("reference")
    settings = {
        "name": "test",
        "store": str(root / "store"),
        "runs_dir": str(root / "runs"),
        "tracking_uri": tracking_uri,
        "experiment": "test_pretrain_reference",
    }
    summary = run_pipeline(settings, corpus)
    [run] = pretrain_runs(settings)
    return {
        "summary": summary,
        "settings": settings,
        "run": run,
        "losses": history(settings, run.info.run_id, "train/loss"),
        "model": Path(summary["stages"]["pretrain"]["outputs"]["model"]),
    }


@pytest.mark.slow
def test_pretrain_stage_end_to_end(reference, corpus):
    summary = reference["summary"]
    assert summary["status"] == "succeeded", summary
    headline = summary["stages"]["pretrain"]["metrics"]
    assert set(headline) == {
        "val_loss",
        "val_bpb",
        "unigram_entropy_nats",
        "train_tokens_seen",
        "tokens_per_s",
        "params",
    }
    assert headline["train_tokens_seen"] == 8 * 8 * 24 and headline["tokens_per_s"] > 0

    model, config = load_model_dir(reference["model"])  # safetensors + JSON, no pickle
    assert model.config == small().gpt_config(300) and headline["params"] == model.config.num_params()
    assert (reference["model"] / "tokenizer.json").read_bytes() == (
        corpus / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    assert config["stage"] == "pretrain" and config["training"]["steps"] == 8
    assert config["training"]["val_loss"] == pytest.approx(headline["val_loss"])

    settings, run = reference["settings"], reference["run"]
    losses = reference["losses"]
    assert [s for s, _ in losses] == list(range(1, 9))
    assert losses[0][1] == pytest.approx(math.log(300), abs=0.3)  # starts near uniform over 300 ids
    assert losses[-1][1] < losses[0][1] - 1.0  # and learns
    assert [s for s, _ in history(settings, run.info.run_id, "val/loss")] == [4, 8]
    assert history(settings, run.info.run_id, "val/loss")[-1][1] == pytest.approx(headline["val_loss"])
    metrics = run.data.metrics
    assert metrics["data/unigram_entropy_nats"] == pytest.approx(headline["unigram_entropy_nats"])
    assert metrics["data/unigram_entropy_bits"] == pytest.approx(
        headline["unigram_entropy_nats"] / math.log(2)
    )
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s", "train/peak_memory_mb", "val/bpb"} <= set(
        metrics
    )
    assert "train/mfu" not in metrics  # no peak FLOPs for a CPU
    client = MlflowClient(settings["tracking_uri"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/step_00008.txt"]
    text = Path(client.download_artifacts(run.info.run_id, "samples/step_00008.txt")).read_text()
    assert "[The capital of Ejon is]" in text


@pytest.mark.slow
def test_copy_warmup_and_copy_rows_train_and_report_copying(reference, corpus, settings):
    """The copy options on: a warm-up before the corpus, copy rows in every corpus step, both logged."""
    copying = {
        "copy_warmup_steps": 6,
        "copy_rows": 2,
        "copy_batch_size": 4,
        "copy_seq_len": 16,
        "copy_lr": 1e-2,
    }
    summary = run_pipeline(settings, corpus, **copying)
    assert summary["stages"]["pretrain"]["status"] == "done", summary["stages"]["pretrain"].get("error")
    headline = summary["stages"]["pretrain"]["metrics"]
    assert 0.0 <= headline["copy_accuracy"] <= 1.0  # measured on the final model
    # The warm-up's last loss: 16-token rows over a 300-id vocabulary, not yet copied (ln 300 = 5.7).
    assert 3.0 < headline["copy_warmup_loss"] < 7.0
    [run] = pretrain_runs(settings)
    corpus_losses = history(settings, run.info.run_id, "train/loss")
    copy_losses = history(settings, run.info.run_id, "train/copy_loss")
    assert [s for s, _ in copy_losses] == [s for s, _ in corpus_losses] == list(range(1, 9))
    assert all(loss > 0 for _, loss in copy_losses)
    # The warm-up changed the weights the corpus steps start from: the first corpus loss differs.
    assert corpus_losses[0][1] != pytest.approx(reference["losses"][0][1], rel=1e-3)
    assert "copy_accuracy" not in reference["summary"]["stages"]["pretrain"]["metrics"]  # off by default


@pytest.mark.slow
def test_killed_worker_and_crashed_stage_resume_to_the_same_losses(reference, corpus, settings, tmp_path):
    """Checkpoints at steps 3 and 6. The worker dies after step 5: Ray Train restarts it from step 3
    (max_failures 1) and the run's history keeps one value per step. It dies again after step 7: out of
    restarts, the stage fails. The pipeline is run again and resumes from step 6. Every loss equals the
    uninterrupted run's, and so do the final weights."""
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "step-5").touch()
    (markers / "step-7").touch()
    crashing = crashing_stage(pretrain, markers)

    first = run_pipeline(settings, corpus, stage=crashing, scaling={"max_failures": 1})
    assert first["stages"]["pretrain"]["status"] == "failed"
    assert not list(markers.iterdir())  # both deaths happened
    second = run_pipeline(settings, corpus, stage=crashing, scaling={"max_failures": 1})
    assert second["stages"]["pretrain"]["status"] == "done"
    assert second["stages"]["corpus"]["status"] == "cached"

    crashed, resumed = pretrain_runs(settings)
    expected = dict(reference["losses"])
    crashed_losses = history(settings, crashed.info.run_id, "train/loss")
    assert [s for s, _ in crashed_losses] == list(range(1, 8))  # steps 4 and 5 ran twice, logged once
    resumed_losses = history(settings, resumed.info.run_id, "train/loss")
    assert [s for s, _ in resumed_losses] == [7, 8]  # the rerun continued from the checkpoint at 6
    assert resumed.data.tags["pretrain.resumed_from_step"] == "6"
    for step, value in crashed_losses + resumed_losses:
        assert value == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step

    want = load_file(str(reference["model"] / "model.safetensors"))
    got = load_file(str(Path(second["stages"]["pretrain"]["outputs"]["model"]) / "model.safetensors"))
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_match_one_worker_with_accumulation(reference, corpus, settings, strategy):
    """2 workers x 2 micro-batches see exactly the rows of 1 worker x 4 micro-batches (the data order
    does not depend on the world size), so the losses agree up to float rounding in the reduction."""
    summary = run_pipeline(
        settings, corpus, grad_accum=2, strategy=strategy, scaling={"num_workers": 2, "max_failures": 0}
    )
    assert summary["stages"]["pretrain"]["status"] == "done", summary["stages"]["pretrain"].get("error")
    [run] = pretrain_runs(settings)
    losses = history(settings, run.info.run_id, "train/loss")
    assert [s for s, _ in losses] == [s for s, _ in reference["losses"]]
    for (_, got), (_, want) in zip(losses, reference["losses"], strict=True):
        assert got == pytest.approx(want, rel=1e-4)
    val = summary["stages"]["pretrain"]["metrics"]["val_loss"]
    assert val == pytest.approx(reference["summary"]["stages"]["pretrain"]["metrics"]["val_loss"], rel=1e-4)
