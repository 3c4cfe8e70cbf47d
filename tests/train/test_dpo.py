"""The DPO stage: the DPO and IPO losses and the implicit-reward metrics against hand computation, the
log-probs the step trains on against a token-by-token computation, and (slow) a Ray Train run through
`run_stage` on the reward model's tiny world of easy pairs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from components.core.artifacts import Artifact
from components.core.stage import RunEnv, run_stage
from components.io.trl import load_preferences
from components.model.checkpoint import load_model_dir
from components.model.gpt import GPT, GPTConfig
from components.tokenizer.bpe import load_tokenizer
from components.train.chat_batches import PairExample, render_pairs
from components.train.dpo import (
    DPOConfig,
    collate_dpo,
    dpo,
    dpo_loss,
    dpo_metrics,
    dpo_step_loss,
    implicit_rewards,
    pair_logprobs,
    sequence_logprobs,
)
from components.train.reward_model import reply_logprobs
from components.train.trainer import Runtime, optimizer_step

sys.path.insert(0, str(Path(__file__).parent))
from test_reward_model import make_world  # the reward model's world of easy pairs

CPU = Runtime(0, 1, torch.device("cpu"), torch.float32)


# --- the losses and the metrics by hand ----------------------------------------------------------------

# Summed log-probs of two pairs' replies under the policy and the reference.
POLICY_C, POLICY_R = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
REF_C, REF_R = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.5])
# h = (policy - ref)(chosen) - (policy - ref)(rejected): (0.5 - (-0.5), 0 - 0.5) = (1.0, -0.5)


def test_dpo_loss_equals_the_hand_computation():
    beta = 0.5
    # -log sigmoid(beta * h) = log(1 + exp(-beta * h)) for beta * h = 0.5 and -0.25
    by_hand = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.25))) / 2
    loss = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=beta, loss="sigmoid")
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)
    # At the reference (policy == reference) every pair is at h = 0: log 2, whatever beta.
    assert float(dpo_loss(REF_C, REF_R, REF_C, REF_R, beta=0.1)) == pytest.approx(math.log(2))
    # Large margins stay exact (no log(0)): beta * h = -200 gives 200.
    far = dpo_loss(torch.tensor([-400.0]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), beta=0.5)
    assert float(far) == pytest.approx(200.0)


def test_ipo_loss_equals_the_hand_computation():
    # (h - 1 / (2 beta))^2 with target 1 / (2 * 0.5) = 1: ((1 - 1)^2 + (-0.5 - 1)^2) / 2
    loss = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5, loss="ipo")
    assert float(loss) == pytest.approx((0.0 + 2.25) / 2)
    # beta 0.1: target 5; (1 - 5)^2 = 16, (-0.5 - 5)^2 = 30.25
    loss = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss="ipo")
    assert float(loss) == pytest.approx((16 + 30.25) / 2)
    with pytest.raises(ValueError, match="unknown DPO loss 'hinge'"):
        dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss="hinge")


def test_implicit_reward_metrics_against_a_direct_computation():
    tiers = [("helpful", "wrong"), ("helpful", "rude"), ("helpful", "wrong"), ("terse", "wrong")]
    pairs = [
        PairExample([1], [2], kind, info={"chosen_tier": c, "rejected_tier": r})
        for kind, (c, r) in zip(["fact", "fact", "arithmetic", "fact"], tiers, strict=True)
    ]
    policy_c = torch.tensor([-1.0, -2.0, -4.0, -3.0])
    policy_r = torch.tensor([-3.0, -1.0, -4.0, -3.5])
    ref_c = torch.tensor([-1.5, -2.0, -4.0, -3.0])
    ref_r = torch.tensor([-2.5, -1.5, -4.0, -3.0])
    cfg = DPOConfig(beta=0.2)
    m = dpo_metrics(pairs, policy_c, policy_r, ref_c, ref_r, cfg)

    # Directly, one pair at a time: r = beta * (policy - ref); right if r_c > r_r, a tie is half.
    chosen = [0.2 * (p - r) for p, r in zip(policy_c.tolist(), ref_c.tolist(), strict=True)]
    rejected = [0.2 * (p - r) for p, r in zip(policy_r.tolist(), ref_r.tolist(), strict=True)]
    assert chosen == pytest.approx([0.1, 0.0, 0.0, 0.0]) and rejected == pytest.approx([-0.1, 0.1, 0.0, -0.1])
    verdicts = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)]
    assert verdicts == [1.0, 0.0, 0.5, 1.0]
    assert m["accuracy"] == pytest.approx(sum(verdicts) / 4)
    assert m["margin"] == pytest.approx((0.2 - 0.1 + 0.0 + 0.1) / 4)
    assert m["accuracy_tier.helpful_vs_wrong"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["accuracy_tier.helpful_vs_rude"] == 0.0 and m["accuracy_tier.terse_vs_wrong"] == 1.0
    assert m["accuracy_kind.fact"] == pytest.approx(2 / 3) and m["accuracy_kind.arithmetic"] == 0.5
    assert m["chosen_logprob_shift"] == pytest.approx((0.5 + 0 + 0 + 0) / 4)
    assert m["rejected_logprob_shift"] == pytest.approx((-0.5 + 0.5 + 0 - 0.5) / 4)
    # The policy's own likelihood: -1 > -3 right, -2 < -1 wrong, -4 = -4 half, -3 > -3.5 right.
    assert m["policy_loglik_accuracy"] == pytest.approx(2.5 / 4)
    assert m["loss"] == pytest.approx(float(dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=0.2)))
    assert implicit_rewards(policy_c, ref_c, 0.2).tolist() == pytest.approx(chosen)
    # No pairs, no figures.
    empty = dpo_metrics([], torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), cfg)
    assert empty["accuracy"] is None and "loss" not in empty


# --- the log-probs the step trains on ------------------------------------------------------------------

PROMPT = [1, 2, 3]
PAIRS = [
    PairExample(chosen=[*PROMPT, 4, 5, 6, 7], rejected=[*PROMPT, 4, 9, 7]),  # share "4"
    PairExample(chosen=[*PROMPT, 8, 7], rejected=[*PROMPT, 10, 11, 12, 7]),
    PairExample(chosen=[*PROMPT, 5, 7], rejected=[*PROMPT, 5, 7]),  # identical: nothing to score
]


def tiny_lm(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, context_length=16, n_layer=1, n_head=2, n_embd=16)).eval()


def by_hand(lm: GPT, ids: list[int], start: int) -> float:
    """sum over t >= start of log p(ids[t] | ids[:t]), one position at a time."""
    with torch.no_grad():
        logprobs = torch.log_softmax(lm(torch.tensor([ids]))[0][0], dim=-1)
    return sum(float(logprobs[t - 1, ids[t]]) for t in range(start, len(ids)))


def test_logprobs_sum_the_tokens_after_the_shared_prefix():
    lm = tiny_lm()
    expected_c = [by_hand(lm, PAIRS[0].chosen, 4), by_hand(lm, PAIRS[1].chosen, 3), 0.0]
    expected_r = [by_hand(lm, PAIRS[0].rejected, 4), by_hand(lm, PAIRS[1].rejected, 3), 0.0]
    with torch.no_grad():
        batch_scores = sequence_logprobs(lm, collate_dpo(PAIRS, pad_id=0), CPU)
    assert batch_scores.tolist() == pytest.approx(expected_c + expected_r, abs=1e-5)
    chosen, rejected = pair_logprobs(lm, PAIRS, CPU, batch_size=2, pad_id=0)
    assert chosen.tolist() == pytest.approx(expected_c, abs=1e-5)
    assert rejected.tolist() == pytest.approx(expected_r, abs=1e-5)
    # The same tokens as the reward model's likelihood baseline scores.
    rm_c, rm_r = reply_logprobs(lm, PAIRS, batch_size=2, pad_id=0)
    assert torch.allclose(chosen, rm_c, atol=1e-5) and torch.allclose(rejected, rm_r, atol=1e-5)


def test_the_step_starts_at_log_2_and_raises_the_margin():
    """With the reference's own log-probs the first loss is log 2 (h = 0 for every pair); a few
    optimizer steps on the same pairs raise the implicit-reward margin."""
    policy = tiny_lm(1).train()
    ref_c, ref_r = pair_logprobs(policy, PAIRS[:2], CPU, batch_size=8, pad_id=0)
    batch = collate_dpo(PAIRS[:2], pad_id=0, ref_chosen=ref_c.tolist(), ref_rejected=ref_r.tolist())
    cfg = DPOConfig(beta=0.5)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        figures, _ = optimizer_step(
            policy,
            optimizer,
            [batch],
            CPU,
            grad_clip=1.0,
            loss_fn=lambda m, b, rt: dpo_step_loss(m, b, rt, cfg=cfg),
        )
        first = figures if first is None else first
    loss, accuracy, margin, shift_c, shift_r = first.tolist()
    assert (
        loss == pytest.approx(math.log(2), abs=1e-5)
        and accuracy == 0.5
        and margin == pytest.approx(0, abs=1e-5)
    )
    assert shift_c == pytest.approx(0, abs=1e-5) and shift_r == pytest.approx(0, abs=1e-5)
    after_c, after_r = pair_logprobs(policy, PAIRS[:2], CPU, batch_size=8, pad_id=0)
    margins = 0.5 * ((after_c - ref_c) - (after_r - ref_r))
    assert (margins > 0).all()
    assert float(dpo_loss(after_c, after_r, ref_c, ref_r, beta=0.5)) < math.log(2)


# --- a Ray Train run (slow) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("dpo-world"))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_dpo_stage_end_to_end(ray_cluster, world, tmp_path, tracking_uri, loss):
    config = DPOConfig(
        loss=loss,
        epochs=3,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
        eval_every=7,
        seed=3,
        dtype="float32",  # the figures are recomputed below in float32
        scaling={"max_failures": 0},
    )
    inputs = {name: Artifact(uri=str(path), kind=name, digest=f"test:{path}") for name, path in world.items()}
    env = RunEnv(
        run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment=f"test_dpo_{loss}"
    )
    record = run_stage(dpo, config, inputs, env)
    assert record.status == "done"
    headline = record.metrics
    assert headline["val_accuracy"] >= 0.9  # easy pairs: the worked answer beats rudeness and babble
    assert headline["val_margin"] > 0 and headline["train_accuracy"] > 0.5

    # The saved policy, scored here against the SFT model, gives the reported held-out accuracy.
    out = Path(record.outputs["policy"].uri)
    policy, config_json = load_model_dir(out)
    sft, _ = load_model_dir(world["model"])
    assert config_json["stage"] == "dpo" and (out / "tokenizer.json").is_file()
    tok = load_tokenizer(out / "tokenizer.json")
    val_pairs, _ = render_pairs(
        tok, load_preferences(str(world["preferences"] / "test.jsonl")), max_tokens=64
    )
    pc, pr = pair_logprobs(policy, val_pairs, CPU, batch_size=64, pad_id=0)
    rc, rr = pair_logprobs(sft, val_pairs, CPU, batch_size=64, pad_id=0)
    direct = dpo_metrics(val_pairs, pc, pr, rc, rr, config)
    assert headline["val_accuracy"] == pytest.approx(direct["accuracy"])
    assert headline["val_margin"] == pytest.approx(direct["margin"], rel=1e-3, abs=1e-4)
    assert headline["val_chosen_logprob_shift"] == pytest.approx(
        direct["chosen_logprob_shift"], rel=1e-3, abs=1e-3
    )

    client = MlflowClient(tracking_uri)
    history = sorted(
        (m.step, m.value) for m in client.get_metric_history(record.mlflow_run_id, "val/accuracy")
    )
    assert [s for s, _ in history] == [7, 14, 21]
    run = client.get_run(record.mlflow_run_id)
    for key in (
        "val/accuracy_tier.helpful_vs_rude",
        "val/loglik_baseline_accuracy",
        "train/rejected_logprob_shift",
    ):
        assert key in run.data.metrics
    assert run.data.metrics["val/accuracy_tier.helpful_vs_degenerate"] == pytest.approx(
        direct["accuracy_tier.helpful_vs_degenerate"]
    )
    text = Path(client.download_artifacts(record.mlflow_run_id, "scored_pairs.txt")).read_text()
    assert "chosen   r=" in text and "[user] What is" in text
