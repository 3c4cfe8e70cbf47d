"""The reward-model stage: the pairwise loss and metrics against hand computation, the training step
reading rewards at the right tokens, input checks, and (slow) a Ray Train run through `run_stage` on a
tiny synthetic model whose reward_stats are recomputed from the saved model."""

from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError

from components.core.artifacts import Artifact
from components.core.stage import RunEnv, run_stage
from components.io.trl import DatasetError, load_preferences
from components.model.checkpoint import load_model_dir, save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.model.heads import ScalarHeadModel, load_scalar_model_dir
from components.tokenizer.bpe import TokenizerConfig, load_tokenizer, train_tokenizer
from components.train.chat_batches import PairExample, collate_pairs, render_pairs
from components.train.preference_metrics import grouped_accuracy, pair_accuracy, pair_metrics
from components.train.reward_model import (
    RewardModelConfig,
    length_baseline,
    pairwise_loss,
    plan_reward_model,
    reply_logprobs,
    reward_model,
    reward_step,
)
from components.train.trainer import Runtime

CPU = Runtime(0, 1, torch.device("cpu"), torch.float32)


# --- the loss and the metrics by hand ------------------------------------------------------------------


def test_pairwise_loss_equals_the_hand_computation():
    chosen = torch.tensor([2.0, 0.5, -1.0])
    rejected = torch.tensor([1.0, 1.5, -1.0])
    # -log sigmoid(d) = log(1 + exp(-d)) for margins d = 1, -1, 0
    by_hand = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1)) + math.log(2)) / 3
    assert float(pairwise_loss(chosen, rejected)) == pytest.approx(by_hand, rel=1e-6)
    # + 0.1 * mean((c + r)^2) = 0.1 * (9 + 4 + 4) / 3
    assert float(pairwise_loss(chosen, rejected, 0.1)) == pytest.approx(by_hand + 0.1 * 17 / 3, rel=1e-6)
    # Large margins stay exact (no log(0)): -log sigmoid(-200) = 200 (+ log(1 + e^-200))
    assert float(pairwise_loss(torch.tensor([-100.0]), torch.tensor([100.0]))) == pytest.approx(200.0)
    assert float(pairwise_loss(torch.tensor([100.0]), torch.tensor([-100.0]))) == 0.0


def test_pair_metrics_by_hand():
    chosen = torch.tensor([2.0, 0.5, -1.0, 3.0])
    rejected = torch.tensor([1.0, 1.5, -1.0, 0.0])
    assert float(pair_accuracy(chosen, rejected)) == (1 + 0 + 0.5 + 1) / 4  # a tie is half
    m = pair_metrics(chosen, rejected)
    assert m["accuracy"] == 0.625 and m["margin"] == pytest.approx((1 - 1 + 0 + 3) / 4)
    rewards = [2.0, 0.5, -1.0, 3.0, 1.0, 1.5, -1.0, 0.0]
    mean = sum(rewards) / 8
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 7)  # the sample std, as torch computes it
    assert m["reward_mean"] == pytest.approx(mean) and m["reward_std"] == pytest.approx(std)
    assert (m["chosen_mean"], m["rejected_mean"]) == (pytest.approx(1.125), pytest.approx(0.375))
    by_kind = grouped_accuracy(["fact", "math", "fact", ""], chosen, rejected, "accuracy_kind")
    assert by_kind == {"accuracy_kind.fact": 0.75, "accuracy_kind.math": 0.0}  # empty keys are left out


# --- a tiny world of pairs -----------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def pair(a: int, b: int, rejected: str, tier: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
        "chosen": [
            {
                "role": "assistant",
                "content": f"Let's work it out: {a} + {b} = {a + b}. The answer is {a + b}.",
            }
        ],
        "rejected": [{"role": "assistant", "content": rejected}],
        "kind": "arithmetic",
        "chosen_tier": "helpful",
        "rejected_tier": tier,
    }


def make_world(root: Path) -> dict[str, Path]:
    """A random tiny GPT with its tokenizer (the "SFT model") and easy pairs: a worked answer beats a
    rude reply or a degenerate one."""
    rng = random.Random(0)
    rude = ["Stop wasting my time.", "That is a stupid question.", "Ask someone else."]
    records = []
    for a in range(1, 10):
        for b in range(1, 9):
            if rng.random() < 0.5:
                records.append(pair(a, b, rng.choice(rude), "rude"))
            else:
                records.append(pair(a, b, " ".join(["and"] * rng.randint(3, 8)), "degenerate"))
    rng.shuffle(records)
    write_jsonl(root / "preferences" / "train.jsonl", records[:56])
    write_jsonl(root / "preferences" / "test.jsonl", records[56:])
    texts = [m["content"] for r in records for m in r["prompt"] + r["chosen"] + r["rejected"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = train_tokenizer(texts * 3 + ["user assistant"], TokenizerConfig(vocab_size=300))
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    torch.manual_seed(0)
    sft = GPT(GPTConfig(vocab_size=300, context_length=64, n_layer=2, n_head=2, n_embd=32))
    save_model_dir(sft, root / "sft", tokenizer_path=root / "tok" / "tokenizer.json")
    return {"model": root / "sft", "preferences": root / "preferences"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("rm-world"))


def test_training_step_reads_rewards_at_the_last_real_tokens(world):
    """The step runs right-padded pairs without a mask; its loss must equal the pairwise loss of the
    scores read with the model's own left-padded, masked path."""
    tok = load_tokenizer(world["model"] / "tokenizer.json")
    pairs, _ = render_pairs(
        tok, load_preferences(str(world["preferences"] / "train.jsonl"))[:6], max_tokens=64
    )
    assert len({len(p.chosen) for p in pairs} | {len(p.rejected) for p in pairs}) > 1  # padding happens
    torch.manual_seed(1)
    model = ScalarHeadModel(GPT(GPTConfig(vocab_size=300, context_length=64, n_layer=1, n_head=2, n_embd=16)))
    torch.nn.init.normal_(model.head.weight)
    left = collate_pairs(pairs, pad_id=0, padding_side="left")
    with torch.no_grad():
        scores = model.score(left.input_ids, left.attention_mask)
    expected = pairwise_loss(scores[:6], scores[6:])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # measure, do not move
    stats = reward_step(model, optimizer, [collate_pairs(pairs, pad_id=0)], CPU, grad_clip=1.0)
    loss, accuracy, margin = stats[:3].tolist()
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert accuracy == pytest.approx(float(pair_accuracy(scores[:6], scores[6:])))
    assert margin == pytest.approx(float((scores[:6] - scores[6:]).mean()), rel=1e-5, abs=1e-6)
    # Two micro-batches of 3 accumulate to the same loss as one of 6.
    halves = [collate_pairs(pairs[:3], pad_id=0), collate_pairs(pairs[3:], pad_id=0)]
    split = reward_step(model, optimizer, halves, CPU, grad_clip=1.0)
    assert float(split[0]) == pytest.approx(
        (float(pairwise_loss(scores[:3], scores[6:9])) + float(pairwise_loss(scores[3:6], scores[9:]))) / 2,
        rel=1e-5,
    )
    assert length_baseline(pairs) == pytest.approx(
        sum(
            1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0.0
            for p in pairs
        )
        / 6
    )


def test_reply_logprobs_sum_the_tokens_after_the_common_prefix():
    """Each reply's score is the sum of log p(token | everything before it) over the tokens after the
    pair's shared prefix, computed here one position at a time from the model's logits."""
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=20, context_length=16, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = [1, 2, 3]
    pairs = [
        PairExample(chosen=[*prompt, 4, 5, 6, 7], rejected=[*prompt, 4, 9, 7]),  # share "4"
        PairExample(chosen=[*prompt, 8, 7], rejected=[*prompt, 10, 11, 12, 7]),
        PairExample(chosen=[*prompt, 5, 7], rejected=[*prompt, 5, 7]),  # identical: a tie at 0
    ]
    chosen, rejected = reply_logprobs(lm, pairs, batch_size=2, pad_id=0)

    def by_hand(ids: list[int], start: int) -> float:
        with torch.no_grad():
            logprobs = torch.log_softmax(lm(torch.tensor([ids]))[0][0], dim=-1)
        return sum(float(logprobs[t - 1, ids[t]]) for t in range(start, len(ids)))

    assert chosen.tolist() == pytest.approx(
        [by_hand(pairs[0].chosen, 4), by_hand(pairs[1].chosen, 3), 0.0], abs=1e-5
    )
    assert rejected.tolist() == pytest.approx(
        [by_hand(pairs[0].rejected, 4), by_hand(pairs[1].rejected, 3), 0.0], abs=1e-5
    )
    assert all(v < 0 for v in chosen[:2].tolist() + rejected[:2].tolist())


def test_plan_and_input_checks(world, tmp_path):
    plan, stats = plan_reward_model(
        RewardModelConfig(epochs=2, batch_size=8), world["model"], world["preferences"], seed=0
    )
    assert stats.kept == 56 and plan.max_steps == 14 and plan.rows_per_step == 8
    with pytest.raises(DatasetError, match="none of the 56 pairs fits max_length 8"):
        plan_reward_model(RewardModelConfig(max_length=8), world["model"], world["preferences"], seed=0)
    with pytest.raises(FileNotFoundError, match=r"test.jsonl is missing \(the val preference pairs\)"):
        bad = tmp_path / "prefs"
        write_jsonl(bad / "train.jsonl", [pair(1, 2, "no", "rude")])
        plan_reward_model(RewardModelConfig(), world["model"], bad, seed=0)
    with pytest.raises(ValidationError, match="exactly one of epochs and max_steps"):
        RewardModelConfig(max_steps=3)


# --- a Ray Train run (slow) -----------------------------------------------------------------------------


@pytest.mark.slow
def test_reward_model_stage_end_to_end(ray_cluster, world, tmp_path, tracking_uri):
    config = RewardModelConfig(
        epochs=3,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
        eval_every=7,
        seed=3,
        scaling={"max_failures": 0},
    )
    inputs = {name: Artifact(uri=str(path), kind=name, digest=f"test:{path}") for name, path in world.items()}
    env = RunEnv(
        run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="test_reward_model"
    )
    record = run_stage(reward_model, config, inputs, env)
    assert record.status == "done"
    headline = record.metrics
    assert headline["val_accuracy"] >= 0.9  # easy pairs: the answer beats rudeness and babble
    assert headline["val_margin"] > 0 and headline["train_accuracy"] > 0.5

    out = Path(record.outputs["reward_model"].uri)
    model, config_json = load_scalar_model_dir(out)
    assert config_json["kind"] == "reward_model" and config_json["stage"] == "reward_model"
    assert (out / "tokenizer.json").is_file()
    # reward_stats are the final model's scores over the training pairs, chosen and rejected together.
    tok = load_tokenizer(out / "tokenizer.json")
    pairs, _ = render_pairs(tok, load_preferences(str(world["preferences"] / "train.jsonl")), max_tokens=64)
    batch = collate_pairs(pairs, pad_id=0, padding_side="left")
    with torch.no_grad():
        scores = model.score(batch.input_ids, batch.attention_mask)
    stats = config_json["reward_stats"]
    assert stats["n"] == 112
    assert stats["mean"] == pytest.approx(float(scores.mean()), abs=1e-4)
    assert stats["std"] == pytest.approx(float(scores.std()), rel=1e-3)
    assert headline["reward_mean"] == pytest.approx(stats["mean"])

    client = MlflowClient(tracking_uri)
    history = sorted(
        (m.step, m.value) for m in client.get_metric_history(record.mlflow_run_id, "val/accuracy")
    )
    assert [s for s, _ in history] == [7, 14, 21]
    run = client.get_run(record.mlflow_run_id)
    assert run.data.metrics["val/accuracy_kind.arithmetic"] == pytest.approx(headline["val_accuracy"])
    assert "val/accuracy_tier.helpful_vs_rude" in run.data.metrics
    assert "val/length_baseline_accuracy" in run.data.metrics
    # The SFT model's likelihood as a ranker, scored once before training, from the SFT directory.
    sft, _ = load_model_dir(world["model"])
    val_pairs, _ = render_pairs(
        tok, load_preferences(str(world["preferences"] / "test.jsonl")), max_tokens=64
    )
    c, r = reply_logprobs(sft, val_pairs, batch_size=64, pad_id=0)
    assert headline["loglik_baseline_accuracy"] == pytest.approx(float(pair_accuracy(c, r)))
    rude = [i for i, p in enumerate(val_pairs) if p.info["rejected_tier"] == "rude"]
    assert run.data.metrics["val/loglik_baseline_tier.helpful_vs_rude"] == pytest.approx(
        float(pair_accuracy(c[rude], r[rude]))
    )
    assert len([m for m in client.get_metric_history(record.mlflow_run_id, "train/loss")]) == 21
    text = Path(client.download_artifacts(record.mlflow_run_id, "scored_pairs.txt")).read_text()
    assert "chosen   r=" in text and "[user] What is" in text
