"""The evaluate stage end to end on tiny models whose replies are known (scripted) or random, the
preflight refusal, and the helpers that turn samples into the report."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from pydantic import Field

from components.core.artifacts import Artifact
from components.core.config import ConfigError, StageConfig
from components.core.stage import RunEnv, run_stage, stage
from components.eval.bits_per_byte import corpus_bits_per_byte
from components.eval.evaluate import EvaluateConfig, evaluate, format_table, pick_samples, rm_auc
from components.eval.in_context_copy import copy_accuracy
from components.eval.multiple_choice import benchmark_items, score_items
from components.io.token_shards import ShardWriter
from components.model.checkpoint import load_model_dir, save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.model.heads import ScalarHeadModel, save_scalar_model_dir
from components.tokenizer.bpe import (
    IM_END,
    IM_SEP,
    TokenizerConfig,
    encode_batch,
    eot_id,
    special_token_ids,
    train_tokenizer,
)
from pipelines.config import PipelineSettings, check_switches
from pipelines.dag import Node, Pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEXTS = [
    "The capital of Ejon is Thozusesh. Many visitors come in spring.",
    "Kuviro lies in the north; its capital is Zifos and its currency is the dram.",
    "What is 2 + 3? Let's work it out: 2 + 3 = 5. The answer is 5.",
    "I don't have any information about Orsk. Reham Thidrem was born in Tetun in 1901.",
]
PROMPTS = {
    "test": [
        ("arithmetic", "What is 2 + 3?", "5"),
        ("arithmetic", "What is 4 + 4?", "8"),
        ("letter_count", "How many letters s are in sassy?", "3"),
        ("arithmetic", "What is 9 - 4?", "5"),
        ("fact", "What is the capital of Ejon?", "Thozusesh"),
        ("unknown", "Where was Orsk born?", "Orsk"),
    ],
    "seen": [
        ("arithmetic", "What is 1 + 4?", "5"),
        ("fact", "What is the capital of Kuviro?", "Zifos"),
        ("arithmetic", "What is 3 + 3?", "6"),
    ],
}
BENCHMARK = [
    ("country-1.capital", "What is the capital of Ejon?", ["Zifos", "Thozusesh", "Tetun", "Orsk"], 1),
    ("country-2.capital", "What is the capital of Kuviro?", ["Zifos", "Thozusesh", "Tetun", "Orsk"], 0),
    ("person-1.birth_city", "In which city was Reham Thidrem born?", ["Zifos", "Tetun", "Ejon", "Orsk"], 1),
]


def scripted_model(tok, replies: dict[int, int], seed: int) -> GPT:
    """A GPT whose next token depends only on the current one: the blocks add nothing, so the hidden
    state is LayerNorm(embedding of the current token), and the (untied) LM head has one row per
    scripted transition `current -> next` pointing along that hidden state (every other row is 0)."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=tok.get_vocab_size(), context_length=96, n_layer=1, n_head=2, n_embd=32,
        block="gpt2", tie_embeddings=False,
    )  # fmt: skip
    model = GPT(config)
    with torch.no_grad():
        for block in model.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                proj.weight.zero_()
                proj.bias.zero_()
        model.pos_emb.weight.zero_()
        model.lm_head.weight.zero_()
        for current, following in replies.items():
            h = model.norm(model.tok_emb.weight[current])
            model.lm_head.weight[following] = 10 * h / h.norm()
    return model


def random_model(tok, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.get_vocab_size(), context_length=96, n_layer=1, n_head=2, n_embd=32))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tokenizer, tokens, prompts, benchmark and five model directories on disk, as the stages write them."""
    root = tmp_path_factory.mktemp("evaluate")
    tok = train_tokenizer(TEXTS * 3, TokenizerConfig(vocab_size=400))
    tok_file = root / "tokenizer.json"
    tok.save(str(tok_file))
    special = special_token_ids(tok)
    im_sep, im_end = special[IM_SEP], special[IM_END]
    five, eight = encode_batch(tok, ["5", "8"], append_eot=False)
    assert len(five) == len(eight) == 1  # digits are single tokens

    (root / "tokens" / "val").mkdir(parents=True)
    rng = random.Random(0)
    docs = [" ".join(rng.sample(TEXTS, 2)) for _ in range(12)]
    with ShardWriter(root / "tokens" / "val" / "part-00000.bin", tok.get_vocab_size(), eot_id(tok)) as w:
        for ids in encode_batch(tok, docs):
            w.write(ids)
    (root / "tokens" / "tokens_meta.json").write_text(json.dumps({"vocab_size": tok.get_vocab_size()}))

    (root / "prompts").mkdir()
    for split, rows in PROMPTS.items():
        with (root / "prompts" / f"{split}.jsonl").open("w") as f:
            for i, (task, question, answer) in enumerate(rows):
                record = {
                    "prompt": [{"role": "user", "content": question}],
                    "answer": answer,
                    "task": task,
                    "competitors": ["Zifos", "Thozusesh", "Tetun"] if task in ("fact", "unknown") else [],
                    "id": f"{split}-{i}",
                }
                f.write(json.dumps(record) + "\n")
    (root / "knowledge").mkdir()
    with (root / "knowledge" / "benchmark.jsonl").open("w") as f:
        for item_id, question, choices, answer_index in BENCHMARK:
            record = {"id": item_id, "question": question, "choices": choices, "answer_index": answer_index}
            f.write(json.dumps(record | {"answer": choices[answer_index]}) + "\n")

    models = {
        "base": random_model(tok, 1),
        "sft": scripted_model(tok, {im_sep: im_end}, 2),  # replies with nothing, properly ended
        "ppo": random_model(tok, 3),
        "grpo": scripted_model(tok, {im_sep: five[0], five[0]: im_end}, 4),  # always "5", ended
        "dpo": scripted_model(tok, {im_sep: eight[0], eight[0]: im_end}, 6),  # always "8", ended
    }
    for name, model in models.items():
        save_model_dir(model, root / name, tokenizer_path=tok_file)
    torch.manual_seed(5)
    rm = ScalarHeadModel(random_model(tok, 5))
    torch.nn.init.normal_(rm.head.weight, std=1.0)
    save_scalar_model_dir(rm, root / "reward_model", tokenizer_path=tok_file)
    return {"root": root, "tok": tok}


def artifact(path: Path, kind: str) -> Artifact:
    return Artifact(uri=str(path), kind=kind, digest=f"test:{path.name}")


def all_inputs(root: Path) -> dict[str, Artifact]:
    inputs = {name: artifact(root / name, "model") for name in ("base", "sft", "ppo", "grpo", "dpo")}
    inputs["reward_model"] = artifact(root / "reward_model", "reward_model")
    inputs["prompts"] = artifact(root / "prompts", "rl_prompts")
    inputs["benchmark"] = artifact(root / "knowledge", "knowledge")
    inputs["tokens"] = artifact(root / "tokens", "tokens")
    return inputs


def small_config(**overrides) -> EvaluateConfig:
    config = {"max_new_tokens": 8, "max_val_tokens": 256, "batch_size": 4, "samples_per_task": 1}
    config["claims"] = {"prompts": 6, "samples": 4, "ks": [1, 2, 4], "batch_size": 8}
    config |= overrides
    return EvaluateConfig.model_validate(config)


def run_env(tmp_path: Path, tracking_uri: str, name: str) -> RunEnv:
    return RunEnv(run_id="test", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment=name)


@pytest.fixture(scope="module")
def evaluated(world, tmp_path_factory, tracking_uri):
    env = run_env(tmp_path_factory.mktemp("run"), tracking_uri, "test_evaluate")
    record = run_stage(evaluate, small_config(), all_inputs(world["root"]), env)
    report = Path(record.outputs["report"].uri)
    return record, report, json.loads((report / "evaluation.json").read_text())


def test_scripted_models_get_exactly_their_known_chat_metrics(evaluated):
    _, _, evaluation = evaluated
    models = evaluation["models"]
    assert list(models) == ["base", "sft", "ppo", "grpo", "dpo"]
    sft, grpo = models["sft"], models["grpo"]
    # sft replies "" and closes its turn: perfect format, one token (<|im_end|>), nothing correct.
    assert (sft["format_compliance"], sft["ended_rate"], sft["leaked_role_rate"]) == (1.0, 1.0, 0.0)
    assert sft["mean_response_tokens"] == 1.0 and sft["accuracy"] == 0.0 and sft["seen_accuracy"] == 0.0
    # grpo always answers "5": right exactly where the gold answer is 5.
    assert grpo["mean_response_tokens"] == 2.0 and grpo["format_compliance"] == 1.0
    assert grpo["accuracy"] == pytest.approx(2 / 6) and grpo["seen_accuracy"] == pytest.approx(1 / 3)
    assert grpo["accuracy.arithmetic"] == pytest.approx(2 / 3) and grpo["accuracy.fact"] == 0.0
    assert grpo["n"] == 6 and grpo["seen_n"] == 3
    # A random model never closes its turn in 8 tokens here; it runs to the limit.
    assert models["base"]["format_compliance"] == 0.0 and models["base"]["mean_response_tokens"] == 8.0
    assert all(math.isfinite(m["rm_score"]) and math.isfinite(m["seen_rm_score"]) for m in models.values())


def test_benchmark_and_bits_per_byte_are_the_library_numbers(evaluated, world):
    _, _, evaluation = evaluated
    root, tok = world["root"], world["tok"]
    model, _ = load_model_dir(root / "ppo")
    records = [json.loads(line) for line in (root / "knowledge" / "benchmark.jsonl").open()]
    mc = score_items(model, tok, benchmark_items(records), prefix_ids=[eot_id(tok)])
    bpb = corpus_bits_per_byte(model, tok, root / "tokens" / "val", max_tokens=256, batch_size=4)
    ppo = evaluation["models"]["ppo"]
    assert (ppo["benchmark_acc"], ppo["benchmark_acc_norm"], ppo["benchmark_items"]) == (
        mc.acc, mc.acc_norm, 3.0
    )  # fmt: skip
    assert (ppo["bpb"], ppo["val_loss"]) == (pytest.approx(bpb.bpb), pytest.approx(bpb.loss))
    assert set(evaluation["benchmark_by_relation"]["ppo"]) == {"capital", "birth_city"}
    assert ppo["copy_accuracy"] == copy_accuracy(model, tok, sequences=32, seed=0)


def test_report_files_and_headline_metrics(evaluated):
    record, report, evaluation = evaluated
    assert sorted(p.name for p in report.iterdir()) == [
        "claims.txt",
        "comparison.png",
        "evaluation.json",
        "samples_base.jsonl",
        "samples_dpo.jsonl",
        "samples_grpo.jsonl",
        "samples_ppo.jsonl",
        "samples_sft.jsonl",
        "table.txt",
    ]
    assert (report / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grpo_samples = [json.loads(line) for line in (report / "samples_grpo.jsonl").open()]
    # One sample per task and split (samples_per_task=1): 4 tasks in test, 2 in seen.
    assert [(s["split"], s["task"]) for s in grpo_samples] == [
        ("test", "arithmetic"), ("test", "letter_count"), ("test", "fact"), ("test", "unknown"),
        ("seen", "arithmetic"), ("seen", "fact"),
    ]  # fmt: skip
    assert grpo_samples[0]["reply"] == "5" and grpo_samples[0]["correct"] == 1.0

    m = record.metrics
    assert m["grpo.accuracy"] == pytest.approx(2 / 6) and m["sft.format_compliance"] == 1.0
    for name in ("base", "sft", "ppo", "grpo"):
        for metric in ("accuracy", "seen_accuracy", "rm_score", "benchmark_acc", "benchmark_acc_norm", "bpb"):
            assert m[f"{name}.{metric}"] == evaluation["models"][name][metric]
    # Only grpo's and dpo's replies are ever right, so the reward model is judged on their right replies
    # against everybody's wrong ones: (2 + 1) right x (30 - 3) wrong held-out replies.
    assert evaluation["reward_model"]["pairs"] == 3 * 27
    assert 0.0 <= m["reward_model.auc"] <= 1.0
    table = (report / "table.txt").read_text()
    assert table.splitlines()[0].split() == ["metric", "base", "sft", "ppo", "grpo", "dpo"]


def test_claims_of_scripted_models(evaluated):
    """Sampled at temperature 1, the scripted models still say one thing: grpo "5" (right on 2 of the 6
    held-out prompts), dpo "8" (right on 1), sft nothing; the random models spread over the vocabulary."""
    record, report, evaluation = evaluated
    models = evaluation["models"]
    grpo, dpo, sft = models["grpo"], models["dpo"], models["sft"]
    for k in (1, 2, 4):
        assert grpo[f"pass_at_{k}"] == pytest.approx(2 / 6) and grpo[f"maj_at_{k}"] == pytest.approx(2 / 6)
        assert dpo[f"pass_at_{k}"] == pytest.approx(1 / 6) and sft[f"maj_at_{k}"] == 0.0
    assert grpo["claims_prompts"] == 6 and grpo["claims_samples"] == 4
    assert grpo["entropy"] < 1e-6 and sft["entropy"] < 1e-6  # one logit ~56 above the rest
    assert 5.0 < models["base"]["entropy"] <= math.log(400) + 1e-6  # near uniform over 400 ids
    assert grpo["distinct_1"] == 0.25  # "5" four times per prompt
    assert "distinct_1" not in sft and "distinct_2" not in grpo  # no word, no bigram: not measured

    # Gold win rates of the greedy replies: grpo beats sft on 2 prompts and ties 4, beats dpo on 2,
    # loses 1, ties 3. The random models are wrong everywhere, like sft.
    rate = evaluation["claims"]["win_rates"]["gold"]
    assert rate["grpo"]["sft"] == pytest.approx(4 / 6) and rate["grpo"]["dpo"] == pytest.approx(3.5 / 6)
    assert rate["dpo"]["sft"] == pytest.approx(3.5 / 6) and rate["base"]["ppo"] == 0.5
    elo = {n: m["elo_gold"] for n, m in models.items()}
    assert elo["grpo"] > elo["dpo"] > elo["sft"] == pytest.approx(elo["base"]) == pytest.approx(elo["ppo"])
    assert sum(elo.values()) / 5 == pytest.approx(1000)
    assert evaluation["claims"]["games"]["rm"]["grpo"]["sft"] == 6 and "elo_rm" in grpo

    m = record.metrics
    assert m["claims.accuracy.base_lt_sft"] == 0.0 and m["claims.accuracy.sft_lt_grpo"] == 1.0
    assert m["claims.accuracy.sft_lt_dpo"] == 1.0 and m["claims.ppo_lowered_entropy"] == 0.0
    text = (report / "claims.txt").read_text()
    assert "accuracy: sft 0 < grpo 0.3333: yes" in text and "judged by gold" in text
    table = (report / "table.txt").read_text()
    assert any(line.split()[0] == "maj_at_4" for line in table.splitlines())


def test_evaluation_is_deterministic_and_cached(evaluated, world, tmp_path, tracking_uri):
    """Same inputs, same config: a fresh store computes the same numbers (greedy replies)."""
    _, _, first = evaluated
    env = run_env(tmp_path, tracking_uri, "test_evaluate_again")
    inputs = {k: v for k, v in all_inputs(world["root"]).items() if k in ("grpo", "prompts")}
    record = run_stage(evaluate, small_config(), inputs, env)
    again = json.loads((Path(record.outputs["report"].uri) / "evaluation.json").read_text())
    assert list(again["models"]) == ["grpo"]
    for key in ("accuracy", "seen_accuracy", "format_compliance", "mean_response_tokens"):
        assert again["models"]["grpo"][key] == first["models"]["grpo"][key]
    assert "rm_score" not in again["models"]["grpo"] and "bpb" not in again["models"]["grpo"]
    assert run_stage(evaluate, small_config(), inputs, env).status == "cached"


def test_bfloat16_weights_give_the_same_verdicts(evaluated, world, tmp_path, tracking_uri):
    """dtype bfloat16 (a GPU's default) on the CPU: the scripted replies and their verdicts do not
    change, the reward model still scores (it stays in float32) and bits per byte moves little."""
    _, _, first = evaluated
    inputs = {k: v for k, v in all_inputs(world["root"]).items() if k != "base"}
    record = run_stage(
        evaluate, small_config(dtype="bfloat16"), inputs, run_env(tmp_path, tracking_uri, "bf16")
    )
    bf16 = json.loads((Path(record.outputs["report"].uri) / "evaluation.json").read_text())["models"]
    for name in ("sft", "grpo"):
        for key in ("accuracy", "seen_accuracy", "format_compliance", "mean_response_tokens"):
            assert bf16[name][key] == first["models"][name][key]
    assert bf16["ppo"]["bpb"] == pytest.approx(first["models"]["ppo"]["bpb"], rel=0.02)
    assert math.isfinite(bf16["grpo"]["rm_score"])


@pytest.mark.slow
def test_models_are_evaluated_in_ray_tasks_with_the_same_results(
    evaluated, world, tmp_path, tracking_uri, ray_cluster
):
    _, _, first = evaluated
    env = run_env(tmp_path, tracking_uri, "test_evaluate_ray")
    record = run_stage(evaluate, small_config(), all_inputs(world["root"]), env)
    on_ray = json.loads((Path(record.outputs["report"].uri) / "evaluation.json").read_text())
    assert on_ray["models"] == first["models"]


# --- preflight -------------------------------------------------------------------------------------------


class SourceConfig(StageConfig):
    flag: bool = Field(False, description="unused")


@stage("source", config=SourceConfig, outputs=("model", "prompts"), cpus=0)
def source(ctx, config, inputs):
    """Stands in for the stages that produce models and prompts."""
    raise AssertionError("never runs: the config is refused first")


def test_preflight_refuses_a_dag_without_a_model():
    settings = {"name": "t", "store": "/nonexistent", "tracking_uri": "sqlite:///:memory:"}
    no_model = Pipeline("t", [Node(source), Node(evaluate, {"prompts": "source.prompts"})])
    config = no_model.config_model(PipelineSettings).model_validate({"pipeline": settings})
    with pytest.raises(ConfigError, match="evaluate has no model to evaluate: wire at least one of"):
        check_switches(config, no_model)

    # A model whose stage is switched off is no model either.
    wired = Pipeline(
        "t", [Node(source), Node(evaluate, {"sft": "source.model", "prompts": "source.prompts"})]
    )
    model = wired.config_model(PipelineSettings)
    check_switches(model.model_validate({"pipeline": settings}), wired)  # fine while it is on
    off = model.model_validate({"pipeline": settings, "source": {"enabled": False}})
    with pytest.raises(ConfigError, match="evaluate has no model to evaluate"):
        check_switches(off, wired)


def test_a_model_and_nothing_to_measure_it_on_is_refused(world, tmp_path, tracking_uri):
    only_model = {"base": all_inputs(world["root"])["base"]}
    with pytest.raises(ConfigError, match="evaluate has nothing to measure the models on"):
        run_stage(evaluate, small_config(), only_model, run_env(tmp_path, tracking_uri, "refused"))


# --- helpers ------------------------------------------------------------------------------------------


def test_rm_auc_counts_pairs_ranked_right_with_ties_as_half():
    samples = [{"correct": 1.0, "rm_score": s} for s in (3.0, 1.0)]
    samples += [{"correct": 0.0, "rm_score": s} for s in (2.0, 0.0, 1.0)]
    samples += [{"correct": None, "rm_score": 9.0}]  # not verifiable: not counted
    # 3.0 beats all three wrong ones; 1.0 beats 0.0 and ties 1.0: (3 + 1.5) / 6.
    assert rm_auc(samples) == (0.75, 6)
    assert rm_auc([{"correct": 0.0, "rm_score": 1.0}]) == (None, 0)


def test_pick_samples_and_table():
    samples = [{"task": t, "i": i} for i, t in enumerate(["a", "b", "a", "a", "b", "c"])]
    assert [s["i"] for s in pick_samples(samples, 2)] == [0, 1, 2, 4, 5]
    table = format_table({"base": {"bpb": 1.23456, "accuracy": 0.0}, "sft": {"accuracy": 0.5}})
    assert table.splitlines() == [
        "metric        base       sft",
        "accuracy         0       0.5",
        "bpb          1.235       n/a",
    ]
