"""GRPO / RLOO: group advantages reach the right tokens, rewards come from the verifiers or a registered
function, one update moves probability towards the better replies of a group, the k3 KL term is 0 while
the policy equals the reference, and the stage runs end to end (inline; slow: colocated Ray actor)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from components.core.config import ConfigError
from components.core.stage import run_stage
from components.tokenizer.chat import AssistantReply
from components.train.grpo import GRPO, GRPOConfig, grpo, grpo_experience
from components.train.rl.batch import Rollout
from components.train.rl.formulas import group_advantages
from components.train.rl.rewards import RewardScorer, register_reward, resolve_reward
from components.train.rl.roles import PolicyActor, Reference

sys.path.insert(0, str(Path(__file__).parent))
from rl_world import SMALL, artifacts, make_rl_world, run_env

GRPO_SMALL = SMALL | {"rollout_batch_size": 2, "group_size": 4, "mini_batch_size": 4, "micro_batch_size": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_rl_world(tmp_path_factory.mktemp("rl-world"))


def config(**overrides) -> GRPOConfig:
    return GRPOConfig.model_validate(GRPO_SMALL | overrides)


def group_rollout(world, actor: PolicyActor, prompts: int = 2, group: int = 4) -> Rollout:
    from components.io.trl import load_prompts
    from components.tokenizer.bpe import load_tokenizer
    from components.tokenizer.chat import render

    tok = load_tokenizer(world["policy"] / "tokenizer.json")
    records = load_prompts(str(world["prompts"] / "train.jsonl"))[:prompts]
    ids = [render(tok, r["prompt"], add_generation_prompt=True).ids for r in records for _ in range(group)]
    return actor.generate(ids)


def test_group_advantages_are_spread_over_each_replys_own_tokens_only(world):
    actor = PolicyActor(config(), str(world["policy"]), str(world["policy"] / "tokenizer.json"), threads=1)
    rollout = group_rollout(world, actor)
    logp, _ = actor.logprobs(rollout)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # group 2: all equal, no signal
    for kind in ("grpo", "dr_grpo", "rloo"):
        exp, per_reply = grpo_experience(rollout, rewards, logp, None, group_size=4, kind=kind)
        mask = rollout.response_mask.bool()
        assert torch.equal(exp.mask, mask)
        for b in range(8):
            assert (exp.advantages[b][mask[b]] == per_reply[b]).all() and (
                exp.advantages[b][~mask[b]] == 0
            ).all()
        assert (per_reply[4:] == 0).all()  # a group that all scored the same teaches nothing
    _, grpo_adv = grpo_experience(rollout, rewards, logp, None, group_size=4, kind="grpo")
    assert torch.allclose(grpo_adv, group_advantages(rewards, 4))
    assert grpo_adv[0] == pytest.approx(0.75 / 0.5, rel=1e-4)  # (1 - 0.25) / std([1, 0, 0, 0]) = 0.5
    _, rloo = grpo_experience(rollout, rewards, logp, None, group_size=4, kind="rloo")
    assert rloo[:4].tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])


def test_one_update_moves_probability_towards_the_better_replies_of_a_group(world):
    cfg = config(lr=1e-2, mini_batch_size=8, micro_batch_size=4)
    actor = PolicyActor(cfg, str(world["policy"]), str(world["policy"] / "tokenizer.json"), threads=1)
    rollout = group_rollout(world, actor)
    before, _ = actor.logprobs(rollout)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    exp, adv = grpo_experience(rollout, rewards, before, None, group_size=4, kind="grpo")
    stats = actor.train(exp, iteration=0)
    assert stats["updates"] == 1 and stats["minibatches"][0]["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    after, _ = actor.logprobs(rollout)
    mask = rollout.response_mask.bool()
    gain = (torch.where(mask, after - before, 0.0)).sum(dim=1)  # change of each reply's log-likelihood
    assert gain[adv > 0].mean() > 0 > gain[adv < 0].mean()


def test_k3_kl_term_is_zero_while_the_policy_is_the_reference(world):
    cfg = config(kl_coef=0.1, lr=1e-2, ppo_epochs=2, mini_batch_size=8, micro_batch_size=8)
    actor = PolicyActor(cfg, str(world["policy"]), str(world["policy"] / "tokenizer.json"), threads=1)
    reference = Reference(cfg, str(world["policy"]), threads=1)
    rollout = group_rollout(world, actor)
    logp, _ = actor.logprobs(rollout)
    exp, _ = grpo_experience(
        rollout, torch.arange(8.0), logp, reference.logprobs(rollout), group_size=4, kind="grpo"
    )
    first, second = actor.train(exp, iteration=0)["minibatches"]
    assert first["kl_loss"] == pytest.approx(0.0, abs=1e-7)
    assert second["kl_loss"] > 0  # the policy has moved away from the reference


def test_rewards_come_from_the_verifiers_or_a_registered_function(world):
    reply = AssistantReply("The answer is 12.", ended=True, leaked_role=False)
    record = {"prompt": [], "answer": "12", "task": "arithmetic"}
    assert resolve_reward("verifier")(record, reply) == 1.0
    assert resolve_reward("verifier_and_format")(record, reply._replace(ended=False)) == 0.5

    @register_reward("test_length", overwrite=True)
    def shorter_is_better(record, reply):
        return -len(reply.text)

    assert resolve_reward("test_length")(record, reply) == -17
    assert resolve_reward("components.train.rl.rewards:verifier_reward")(record, reply) == 1.0
    with pytest.raises(ValueError, match="no reward function named 'nope'"):
        resolve_reward("nope")
    scorer = RewardScorer(config(), str(world["policy"] / "tokenizer.json"), reward="test_length")
    assert scorer.reward_model is None
    # Prompts without a verifiable answer are left out of verifier-reward training, and counted.
    grpo_alg = GRPO(config())
    assert grpo_alg.keep_record({"prompt": [], "answer": None, "task": None}) == "not_verifiable"
    assert grpo_alg.keep_record({"prompt": [], "answer": "x", "task": "no-such"}) == "no_verifier_no-such"
    assert (
        GRPO(config(reward="test_length")).keep_record({"prompt": [], "answer": None, "task": None}) is None
    )


def test_stage_runs_inline_and_reports_both_policies(world, tmp_path, tracking_uri, request):
    record = run_stage(
        grpo,
        config(),
        artifacts(world, "policy", "reward_model", "prompts"),
        run_env(tmp_path, tracking_uri, request.node.nodeid),
    )
    for key in (
        "sft.accuracy",
        "grpo.accuracy",
        "sft.rm_score_mean",
        "grpo.rm_score_mean",
        "rollout_gold_score",
    ):
        assert key in record.metrics
    assert (Path(record.outputs["policy"].uri) / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="no reward_model input"):
        grpo.preflight(config(reward="reward_model"), ["policy", "prompts"])


@pytest.mark.slow
def test_stage_on_a_colocated_ray_actor(world, tmp_path, tracking_uri, request, ray_cluster):
    roles = {**SMALL["roles"], "placement": "colocate", "colocated": {"num_cpus": 1}}
    cfg = config(roles=roles, advantage="rloo")
    record = ray_cluster.get(
        ray_cluster.remote(num_cpus=0)(run_stage).remote(
            grpo,
            cfg,
            artifacts(world, "policy", "prompts"),
            run_env(tmp_path, tracking_uri, request.node.nodeid),
        )
    )
    assert record.status == "done" and record.metrics["iterations"] == 4
    assert "grpo.rm_score_mean" not in record.metrics  # no reward model given: nothing to watch
