"""The RL health monitor: per-rollout metrics equal the hand computation; each alarm fires on the series
that shows its failure, at the iteration the moving averages cross, and not on a healthy run; the
state survives a checkpoint; sample tables are MLflow tables."""

from __future__ import annotations

import json
import math

import pytest
import torch

from components.train.rl.batch import Scores
from components.train.rl.config import MonitorConfig
from components.train.rl.monitor import RLMonitor, curves_figure, rollout_metrics, sample_table


def scores(**overrides) -> Scores:
    base = {
        "reward": torch.tensor([1.0, -1.0]),
        "rm": torch.tensor([2.0, 0.0]),
        "rm_normalized": torch.tensor([0.5, -0.5]),
        "gold": torch.tensor([1.0, math.nan]),
        "replies": ["The answer is 7.", "no"],
        "ended": torch.tensor([True, False]),
        "leaked_role": torch.tensor([False, False]),
    }
    return Scores(**(base | overrides))


def test_rollout_metrics_equal_the_hand_computation():
    # Row 0: 3 reply tokens; row 1: 1 token then padding (whose garbage must not count).
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, 99.0, 99.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -99.0, 0.0]])
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    m = rollout_metrics(mask, torch.tensor([True, False]), scores(), logp, ref, entropy)
    d = [[0.5, -1.0, 0.0], [1.0]]  # logp - ref on real tokens
    k3 = [[math.exp(-x) - 1 + x for x in row] for row in d]
    assert m["rollout/kl_k1"] == pytest.approx(((0.5 - 1.0 + 0.0) + 1.0) / 2)
    assert m["rollout/kl_k3"] == pytest.approx((sum(k3[0]) + sum(k3[1])) / 2)
    assert m["rollout/kl_k1_per_token"] == pytest.approx(0.5 / 4)
    assert m["rollout/ref_logprob_per_token"] == pytest.approx((-1.5 - 1.0 - 0.5 - 2.0) / 4)
    assert m["rollout/entropy"] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert m["rollout/response_length"] == 2.0 and m["rollout/response_length_max"] == 3.0
    assert m["rollout/eos_rate"] == 0.5 and m["rollout/format_compliance"] == 0.5
    assert m["rollout/gold_score"] == 1.0  # NaN (not verifiable) left out
    assert (m["rollout/rm_score"], m["rollout/rm_score_z"], m["rollout/reward"]) == (1.0, 0.0, 0.0)
    no_ref = rollout_metrics(
        mask, torch.tensor([True, True]), scores(rm=None, rm_normalized=None), logp, None, entropy
    )
    assert "rollout/kl_k1" not in no_ref and "rollout/rm_score" not in no_ref


def feed(monitor: RLMonitor, series: dict[str, list[float]]) -> dict[str, int]:
    """Observe the series step by step; return the first step each alarm fired."""
    first = {}
    n = len(next(iter(series.values())))
    for i in range(n):
        _, alarms = monitor.observe(i + 1, {k: v[i] for k, v in series.items()})
        for a in alarms:
            if a.first:
                first[a.name] = a.step
    return first


def healthy(n: int) -> dict[str, list[float]]:
    return {
        "rollout/kl_k1": [0.2 * i for i in range(n)],
        "rollout/entropy": [1.0] * n,
        "rollout/response_length": [20.0] * n,
        "rollout/rm_score_z": [0.1 * i for i in range(n)],
        "rollout/gold_score": [0.3 + 0.01 * i for i in range(n)],
    }


def test_a_healthy_run_raises_no_alarm():
    config = MonitorConfig(window=3, baseline_iterations=2)
    monitor = RLMonitor(config)
    assert feed(monitor, healthy(30)) == {}
    assert monitor.alarms_fired == 0.0  # checked (28 times each) and quiet


def test_an_alarm_not_yet_checkable_reports_nothing_rather_than_all_clear():
    """Before its moving average exists an alarm is n/a (None), not 0; a run that never filled the
    window, or had alarms off, has no alarm count at all."""
    monitor = RLMonitor(MonitorConfig(window=3, baseline_iterations=1))
    series = healthy(3)
    del series["rollout/rm_score_z"]  # no reward model: reward hacking can never be checked
    flags = [monitor.observe(i + 1, {k: v[i] for k, v in series.items()})[0] for i in range(3)]
    assert (
        flags[0]
        == flags[1]
        == dict.fromkeys(
            ("alarm/kl_blowup", "alarm/entropy_collapse", "alarm/length_spike", "alarm/reward_hacking")
        )
    )
    assert flags[2] == {
        "alarm/kl_blowup": 0.0,
        "alarm/entropy_collapse": 0.0,
        "alarm/length_spike": 0.0,
        "alarm/reward_hacking": None,
    }
    short = RLMonitor(MonitorConfig(window=8))
    feed(short, healthy(2))
    assert short.alarms_fired is None
    off = RLMonitor(MonitorConfig(alarms=False, window=1))
    assert off.observe(1, {k: v[0] for k, v in healthy(1).items()}) == ({}, [])
    assert off.alarms_fired is None


def test_reward_hacking_fires_when_rm_rises_after_the_gold_score_peaked():
    config = MonitorConfig(window=2, baseline_iterations=1, hacking_rm_rise=0.5, hacking_gold_drop=0.1)
    series = healthy(10)
    series["rollout/rm_score_z"] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]
    series["rollout/gold_score"] = [0.5, 0.6, 0.6, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4]
    # Gold's 2-step average peaks at step 3 (0.6) with RM's average 0.3 there; at step 7 gold's average
    # is 0.45 (drop 0.15 >= 0.1) and RM's is 1.1 (rise 0.8 >= 0.5): the first step both hold.
    monitor = RLMonitor(config)
    assert feed(monitor, series) == {"reward_hacking": 7}
    assert monitor.gold_peak == pytest.approx(0.6) and monitor.rm_at_gold_peak == pytest.approx(0.3)
    assert monitor.active_steps["reward_hacking"] == 4  # steps 7..10


def test_kl_entropy_and_length_alarms_fire_past_their_thresholds():
    config = MonitorConfig(
        window=2, baseline_iterations=2, kl_budget=5.0, entropy_collapse_fraction=0.3, length_spike_factor=2.0
    )
    series = healthy(8)
    series["rollout/kl_k1"] = [
        0,
        1,
        2,
        4,
        6,
        8,
        9,
        9,
    ]  # average over 2 first > 5 at step 5 ((4 + 6) / 2 = 5: no)
    series["rollout/entropy"] = [1.0, 1.0, 0.8, 0.5, 0.3, 0.2, 0.2, 0.2]  # < 0.3 at step 6 ((0.3+0.2)/2=0.25)
    series["rollout/response_length"] = [10, 10, 12, 15, 25, 30, 40, 40]  # > 20 at step 6 ((25+30)/2=27.5)
    assert feed(RLMonitor(config), series) == {"kl_blowup": 6, "entropy_collapse": 6, "length_spike": 6}


def test_monitor_state_round_trips_through_json_and_continues_identically():
    config = MonitorConfig(window=2, baseline_iterations=1)
    series = healthy(10)
    series["rollout/rm_score_z"] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]
    series["rollout/gold_score"] = [0.5, 0.6, math.nan, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4]
    whole = RLMonitor(config)
    expected = feed(whole, series)
    first = RLMonitor(config)
    feed(first, {k: v[:5] for k, v in series.items()})
    resumed = RLMonitor(config)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    later = {}
    for i in range(5, 10):
        _, alarms = resumed.observe(i + 1, {k: v[i] for k, v in series.items()})
        later |= {a.name: a.step for a in alarms if a.first}
    assert later == expected and resumed.state_dict() == json.loads(json.dumps(whole.state_dict()))


def test_sample_table_is_an_mlflow_table_and_the_figure_draws():
    records = [
        {"prompt": [{"role": "user", "content": "What is 3 + 4?"}], "answer": "7", "task": "arithmetic"},
        {"prompt": [{"role": "user", "content": "Who?"}], "answer": None, "task": None},
    ]
    table = sample_table(5, records, scores(), torch.tensor([6, 1]), limit=1)
    assert table["columns"][:4] == ["step", "prompt", "reply", "reward"]
    assert table["data"] == [
        [5, "What is 3 + 4?", "The answer is 7.", 1.0, 2.0, 1.0, 6, True, "7", "arithmetic"]
    ]
    history = [{"step": i, **{k: v[i] for k, v in healthy(4).items()}} for i in range(4)]
    figure = curves_figure(history, {"reward_hacking": 2}, title="test")
    assert len(figure.axes) == 4
