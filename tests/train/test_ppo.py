"""PPO: that the loop USES rl_math's (hand-checked) formulas correctly.

Masks built from a real Generation exclude prompt and padding; the old log-probs are the sampling
policy's; the critic's value for a token is read before the token; the first mini-batch of an iteration
has ratio 1 and nothing clipped; early stopping skips the update past 1.5 x target_kl; the scorer
normalises RM scores and verifies the gold answer; inputs that cannot work are refused before any role
starts; and the stage, run inline, resumes after a crash to bit-identical weights (slow: the same with
Ray actors, a role process killed mid-run, and no duplicated MLflow steps). The crashes are injected
from outside: the policy role is swapped for a failing subclass through the role specs (`rl_world`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from components.core.artifacts import ArtifactStore
from components.core.config import ConfigError
from components.core.stage import run_stage
from components.model.generate import generate
from components.model.heads import load_scalar_model_dir
from components.tokenizer.bpe import encode_batch, load_tokenizer
from components.tokenizer.chat import ChatTokens, render
from components.train.ppo import PPOConfig, ppo, ppo_experience
from components.train.rl.algorithm import RLPaths
from components.train.rl.batch import Rollout
from components.train.rl.checkpoints import RLCheckpoints
from components.train.rl.driver import check_models
from components.train.rl.formulas import kl_estimates
from components.train.rl.prompts import PromptStream
from components.train.rl.rewards import RewardScorer
from components.train.rl.roles import Critic, PolicyActor, response_values

sys.path.insert(0, str(Path(__file__).parent))
from rl_world import SMALL, InjectedCrash, artifacts, failing_ppo, make_rl_world, run_env


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_rl_world(tmp_path_factory.mktemp("rl-world"))


def config(**overrides) -> PPOConfig:
    return PPOConfig.model_validate(SMALL | overrides)


def tokenizer_file(world) -> str:
    return str(world["policy"] / "tokenizer.json")


def prompt_ids(world, n: int) -> tuple[list[dict], list[list[int]]]:
    tok = load_tokenizer(tokenizer_file(world))
    records = [json.loads(line) for line in (world["prompts"] / "train.jsonl").read_text().splitlines()][:n]
    return records, [render(tok, r["prompt"], add_generation_prompt=True).ids for r in records]


def sampled_rollout(world, n: int = 6, *, stop_every: int = 3, seed: int = 0) -> tuple[PolicyActor, Rollout]:
    """A real Generation from the tiny policy where about a third of the vocabulary stops a row, so the
    rows end at different lengths and most have padding after their stop token."""
    actor = PolicyActor(config(), str(world["policy"]), tokenizer_file(world), threads=1)
    _, prompts = prompt_ids(world, n)
    out = generate(
        actor.model,
        prompts,
        max_new_tokens=8,
        temperature=1.0,
        stop_tokens=list(range(0, actor.model.config.vocab_size, stop_every)),
        pad_token_id=actor.pad_id,
        generator=torch.Generator().manual_seed(seed),
        return_logprobs=True,
    )
    return actor, out


# --- the experience: masks, rewards, advantages ---------------------------------------------------------


def test_masks_built_from_a_generation_exclude_prompt_and_padding(world):
    _, out = sampled_rollout(world)
    rollout = Rollout.from_generation(out)
    B, N = rollout.response_mask.shape
    lengths = rollout.response_mask.sum(dim=1)
    assert out.sequences.shape[1] - out.prompt_length == N  # no prompt column in any per-token tensor
    assert len(set(lengths.tolist())) > 1 and (lengths < N).any()  # ragged replies, some padding

    # Garbage (NaN, inf) wherever the mask is 0 must not reach any output.
    mask = rollout.response_mask.bool()
    torch.manual_seed(1)
    old_logp = torch.where(mask, -torch.rand(B, N), torch.nan)
    ref_logp = torch.where(mask, -torch.rand(B, N), torch.inf)
    values = torch.where(mask, torch.randn(B, N), torch.nan)
    score = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, -1.0])
    beta = 0.1
    exp, rewards = ppo_experience(
        rollout,
        old_logp,
        ref_logp,
        values,
        score,
        beta=beta,
        gamma=1.0,
        lam=0.95,
        reward_clip=None,
        whiten=True,
    )
    assert torch.equal(exp.mask, mask)
    for name in ("advantages", "returns"):
        tensor = getattr(exp, name)
        assert torch.isfinite(tensor).all(), name
        assert (tensor[~mask] == 0).all(), name
    assert torch.isfinite(rewards).all() and (rewards[~mask] == 0).all()
    # The score sits on each reply's last real token (its stop token), the KL penalty on every token.
    k1 = kl_estimates(old_logp, ref_logp).k1
    for b in range(B):
        last = int(lengths[b]) - 1
        expected = -beta * k1[b, : last + 1]
        expected[last] += score[b]
        assert torch.allclose(rewards[b, : last + 1], expected, atol=1e-6)
        assert torch.isclose(rewards[b].sum(), score[b] - beta * k1[b, : last + 1].sum(), atol=1e-5)
    # Whitened over exactly the real tokens: mean 0, unbiased std 1 there.
    assert abs(float(exp.advantages[mask].mean())) < 1e-5
    assert abs(float(exp.advantages[mask].std()) - 1.0) < 1e-3


def test_old_logprobs_are_the_sampling_policys_and_the_critic_reads_the_state_before_a_token(world):
    actor, out = sampled_rollout(world)
    rollout = Rollout.from_generation(out)
    mask = rollout.response_mask.bool()
    logp, entropy = actor.logprobs(rollout)
    # The full forward agrees with the KV-cache sampler token by token (same positions, same tokens).
    assert torch.allclose(logp[mask], out.logprobs[mask], atol=1e-4)
    assert (entropy[mask] > 0).all()

    critic = Critic(config(), str(world["reward_model"]), threads=1)
    values = critic.values(rollout)
    full = critic.model(rollout.sequences, attention_mask=rollout.attention_mask)
    P = rollout.prompt_length
    assert torch.allclose(values, full[:, P - 1 : P - 1 + rollout.num_response_tokens], atol=1e-6)
    # Changing response token t leaves the value for token t unchanged (it is the state before t) and
    # changes the value for token t + 1.
    row = int(mask.sum(dim=1).argmax())
    changed = rollout.sequences.clone()
    changed[row, P] = (changed[row, P] + 1) % 300
    again = response_values(
        critic.model, Rollout(changed, rollout.attention_mask, P, rollout.response_mask, rollout.finished)
    )
    assert torch.equal(again[row, 0], values[row, 0])
    assert not torch.equal(again[row, 1], values[row, 1])


# --- the update --------------------------------------------------------------------------------------


def scored_experience(actor: PolicyActor, world, n: int = 8):
    _, prompts = prompt_ids(world, n)
    rollout = actor.generate(prompts)
    old_logp, _ = actor.logprobs(rollout)
    score = torch.linspace(-1.0, 1.0, rollout.size)
    values = torch.zeros_like(old_logp)
    exp, _ = ppo_experience(
        rollout,
        old_logp,
        old_logp,
        values,
        score,
        beta=0.0,
        gamma=1.0,
        lam=1.0,
        reward_clip=None,
        whiten=True,
    )
    return exp


def test_first_minibatch_of_an_iteration_has_ratio_one_and_nothing_clipped(world):
    cfg = config(ppo_epochs=2, mini_batch_size=4, micro_batch_size=2, lr=1e-2)
    actor = PolicyActor(cfg, str(world["policy"]), tokenizer_file(world), threads=1)
    stats = actor.train(scored_experience(actor, world), iteration=0)
    first, later = stats["minibatches"][0], stats["minibatches"][1:]
    assert len(stats["minibatches"]) == 4 and stats["updates"] == 4  # 2 epochs x 8 rows / 4
    assert abs(first["ratio_mean"] - 1.0) < 1e-5 and first["ratio_max"] < 1.0 + 1e-5
    assert first["clip_fraction"] == 0.0 and abs(first["approx_kl"]) < 1e-6
    # After an update the policy has moved: the later mini-batches see ratios away from 1.
    assert max(abs(m["ratio_mean"] - 1.0) for m in later) > 1e-3


def test_early_stop_skips_the_update_once_approx_kl_exceeds_1_5_target(world):
    target = 1e-4
    cfg = config(ppo_epochs=4, mini_batch_size=4, micro_batch_size=2, lr=3e-2, target_kl=target)
    actor = PolicyActor(cfg, str(world["policy"]), tokenizer_file(world), threads=1)
    stats = actor.train(scored_experience(actor, world), iteration=0)
    assert stats["early_stopped"]
    *updated, stopped = stats["minibatches"]
    assert all(m["approx_kl"] <= 1.5 * target and not m["early_stopped"] for m in updated)
    assert stopped["approx_kl"] > 1.5 * target and stopped["early_stopped"]
    # The stopping mini-batch took no optimizer step: AdamW counted exactly the updates before it.
    steps = {int(s["step"]) for s in actor.optimizer.state.values()}
    assert steps == {stats["updates"]} and stats["updates"] == len(updated) < 8


# --- the scorer ----------------------------------------------------------------------------------------


def test_scorer_normalises_rm_scores_and_verifies_the_gold_answer(world):
    tok = load_tokenizer(tokenizer_file(world))
    im_end = ChatTokens.of(tok).im_end
    record = {"prompt": [{"role": "user", "content": "What is 3 + 4?"}], "answer": "7", "task": "arithmetic"}
    prompt = render(tok, record["prompt"], add_generation_prompt=True).ids
    right, wrong = encode_batch(tok, ["The answer is 7.", "The answer is 8"], append_eot=False)
    replies = [[*right, im_end], wrong]  # the second never closes its turn
    N = max(map(len, replies))
    sequences = torch.tensor([prompt + r + [0] * (N - len(r)) for r in replies])
    response_mask = torch.tensor([[1] * len(r) + [0] * (N - len(r)) for r in replies])
    attention = torch.cat([torch.ones(2, len(prompt), dtype=torch.long), response_mask], dim=1)
    rollout = Rollout(sequences, attention, len(prompt), response_mask, torch.tensor([True, False]))

    scorer = RewardScorer(
        config(), tokenizer_file(world), reward="reward_model", reward_model_dir=str(world["reward_model"])
    )
    scores = scorer.score(rollout, [record, record])
    rm, _ = load_scalar_model_dir(world["reward_model"])
    expected = rm.score(sequences, attention)
    assert torch.allclose(scores.rm, expected, atol=1e-5)
    assert torch.allclose(scores.rm_normalized, (expected - 0.5) / 2.0, atol=1e-5)  # reward_stats of the RM
    assert torch.equal(scores.reward, scores.rm_normalized)
    assert scores.gold.tolist() == [1.0, 0.0]
    assert scores.ended.tolist() == [True, False] and scores.replies == [
        "The answer is 7.",
        "The answer is 8",
    ]


# --- driver pieces --------------------------------------------------------------------------------------


def test_rollout_concat_repads_without_changing_any_rows_tokens(world):
    _, out_a = sampled_rollout(world, 2, seed=1)
    _, out_b = sampled_rollout(world, 6, seed=2)
    a, b = Rollout.from_generation(out_a), Rollout.from_generation(out_b)
    both = Rollout.concat([a, b], pad_token_id=0)
    for part, rows in ((a, range(0, 2)), (b, range(2, 8))):
        for i, row in enumerate(rows):
            real = both.sequences[row][both.attention_mask[row].bool()]
            assert torch.equal(real, part.sequences[i][part.attention_mask[i].bool()])
        assert both.response_lists()[rows.start : rows.stop] == part.response_lists()


def test_prompt_stream_is_seeded_per_epoch_and_resumes_from_its_position():
    stream = PromptStream(5, seed=7)
    first = [stream.take(3) for _ in range(4)]  # crosses epochs
    assert sorted(first[0] + first[1][:2]) == list(range(5))  # an epoch visits every prompt once
    resumed = PromptStream(5, seed=7)
    replay = PromptStream(5, seed=7)
    replay.take(3), replay.take(3)
    resumed.load_state_dict(replay.state_dict())
    assert [resumed.take(3) for _ in range(2)] == first[2:]
    with pytest.raises(ValueError, match="prompts changed"):
        PromptStream(6, seed=7).load_state_dict(replay.state_dict())


def test_checkpoints_count_only_when_state_is_written_and_keep_the_newest(tmp_path):
    ckpt = RLCheckpoints(ArtifactStore(tmp_path), str(tmp_path), keep=2)
    for step in (2, 4, 6):
        (tmp_path / Path(ckpt.begin(step)).name / "policy").mkdir(parents=True)  # what a role writes
        ckpt.commit(step, {"step": step})
    (tmp_path / Path(ckpt.begin(8)).name).mkdir()  # a crash before its state.json
    directory, state = ckpt.latest()
    assert state["step"] == 6 and Path(directory).name == "step_000006"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000004", "step_000006", "step_000008"]
    ckpt.begin(8)  # clears what the crashed step left
    assert not (tmp_path / "step_000008").exists()
    ckpt.commit(8, {"step": 8})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000006", "step_000008"]


def test_models_that_cannot_work_together_are_refused_from_their_configs(world, tmp_path):
    tok = load_tokenizer(tokenizer_file(world))
    paths = RLPaths(str(world["policy"]), tokenizer_file(world), reward_model=str(world["reward_model"]))
    assert check_models(paths, tok, config()) == 64
    with pytest.raises(ConfigError, match="context_length 64, less than max_prompt_tokens 60"):
        check_models(paths, tok, config(max_prompt_tokens=60, max_new_tokens=8))
    small_vocab = tmp_path / "rm"
    small_vocab.mkdir()
    rm_config = json.loads((world["reward_model"] / "config.json").read_text())
    rm_config["model"]["vocab_size"] = 100
    (small_vocab / "config.json").write_text(json.dumps(rm_config))
    with pytest.raises(ConfigError, match=r"reward_model .* has vocab_size 100"):
        check_models(RLPaths(paths.policy, paths.tokenizer, reward_model=str(small_vocab)), tok, config())


# --- the stage ---------------------------------------------------------------------------------------


def final_weights(record) -> dict[str, torch.Tensor]:
    return load_file(str(Path(record.outputs["policy"].uri) / "model.safetensors"))


def metric_steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, key)]


def test_stage_inline_resumes_after_a_crash_to_the_same_weights(world, tmp_path, tracking_uri, request):
    inputs = artifacts(world, "policy", "reward_model", "prompts")
    env = run_env(tmp_path / "a", tracking_uri, request.node.nodeid)
    straight = run_stage(ppo, config(), inputs, env)
    assert straight.status == "done"
    for key in ("sft.accuracy", "ppo.accuracy", "sft.rm_score_mean", "ppo.rm_score_mean", "kl_to_reference"):
        assert key in straight.metrics
    assert metric_steps(tracking_uri, straight.mlflow_run_id, "rollout/reward") == [1, 2, 3, 4]
    history = MlflowClient(tracking_uri).get_metric_history(straight.mlflow_run_id, "rollout/kl_k1")
    assert history[0].value == pytest.approx(0.0, abs=1e-5)  # the first rollout: policy == reference
    assert max(m.value for m in history) > 0  # the policy moved

    marker = tmp_path / "crash-at-3"
    marker.touch()
    env_b = run_env(tmp_path / "b", tracking_uri, request.node.nodeid, code_version="pinned")
    with pytest.raises(InjectedCrash):
        run_stage(failing_ppo(marker, 3, exit_process=False), config(), inputs, env_b)
    assert not marker.exists()  # the crash happened
    resumed = run_stage(ppo, config(), inputs, env_b)  # the stage itself, same key: the step-2 checkpoint
    client = MlflowClient(tracking_uri)
    assert client.get_run(resumed.mlflow_run_id).data.tags["ppo.resumed_from_step"] == "2"
    assert metric_steps(tracking_uri, resumed.mlflow_run_id, "rollout/reward") == [3, 4]
    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["kl_to_reference"] == straight.metrics["kl_to_reference"]


def test_headline_has_measurements_only(world, tmp_path, tracking_uri, request):
    """Settings are params, not metrics; what had nothing to measure is left out (n/a), not reported as
    a perfect score: 4 iterations never fill an 8-iteration alarm window, so no alarm was checked."""
    inputs = artifacts(world, "policy", "reward_model", "prompts")
    env = run_env(tmp_path, tracking_uri, request.node.nodeid)
    unchecked = config(monitor={**SMALL["monitor"], "window": 8})
    record = run_stage(ppo, unchecked, inputs, env)
    assert "kl_budget" not in record.metrics and "kl_coef_final" not in record.metrics  # fixed beta
    assert "alarms_fired" not in record.metrics
    run = MlflowClient(tracking_uri).get_run(record.mlflow_run_id)
    assert run.data.params["monitor.kl_budget"] == "8.0" and run.data.params["init_kl_coef"] == "0.05"
    assert not any(key.startswith(("alarm/", "kl/")) for key in run.data.metrics)

    checked = run_stage(ppo, config(kl_target=1.0), inputs, run_env(tmp_path / "b", tracking_uri, "x"))
    assert checked.metrics["alarms_fired"] == 0.0  # window 2: every alarm was checked, none fired
    assert "kl_coef_final" in checked.metrics  # an adaptive beta is a result


@pytest.mark.slow
def test_stage_on_ray_actors_restarts_a_dead_role_without_duplicated_steps(
    world, tmp_path, tracking_uri, request, ray_cluster
):
    """Separate actors (0.5 CPU each on the 2-CPU test cluster); the policy's process dies as iteration
    3 trains; the driver restarts the roles from the step-2 checkpoint and ends with the weights of an
    uninterrupted inline run, every step logged once."""
    inputs = artifacts(world, "policy", "reward_model", "prompts")
    straight = run_stage(ppo, config(), inputs, run_env(tmp_path / "a", tracking_uri, request.node.nodeid))
    marker = tmp_path / "crash-at-3"
    marker.touch()
    half = {"num_cpus": 0.5}
    roles = {
        **SMALL["roles"],
        "placement": "separate",
        **{role: half for role in ("policy", "critic", "reference", "reward")},
    }
    # The failing stage runs in a Ray task, which cannot compute the code version of a test's module.
    env = run_env(tmp_path / "b", tracking_uri, request.node.nodeid, code_version="pinned")
    failing = failing_ppo(marker, 3, exit_process=True)
    record = ray_cluster.get(
        ray_cluster.remote(num_cpus=0)(run_stage).remote(failing, config(roles=roles), inputs, env)
    )
    assert not marker.exists()  # the crash happened
    assert metric_steps(tracking_uri, record.mlflow_run_id, "rollout/reward") == [1, 2, 3, 4]
    assert metric_steps(tracking_uri, record.mlflow_run_id, "eval/accuracy") == [0, 4]
    a, b = final_weights(straight), final_weights(record)
    assert all(torch.equal(a[k], b[k]) for k in a)
