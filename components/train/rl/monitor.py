"""Health monitoring of an RL run: what to log every iteration, when to raise an alarm, what to show.

RL on a learned reward fails in a few well-known ways, each visible in a number that costs nothing to log
(Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization": track the RM score and a gold score
side by side):

- the policy runs away from the reference: the KL to the reference grows without bound (``kl_blowup``);
- it stops exploring: the entropy of its token distribution collapses (``entropy_collapse``);
- it pads or rambles: the reply length jumps (``length_spike``);
- it games the reward model: the RM score keeps rising while the gold (verifier) score falls
  (``reward_hacking``) -- the "the the the" reply scoring 1.0.

`rollout_metrics` turns one rollout into the per-iteration health metrics. `RLMonitor` keeps their
history, compares moving averages over ``window`` iterations with thresholds, and reports each alarm as
it becomes active; the stage turns a first firing into a warning and an MLflow tag, and logs every
alarm's state as an ``alarm/<name>`` 0/1 curve from the iteration it can be checked on (its moving
average needs ``window`` iterations): an unchecked alarm logs nothing rather than a reassuring 0. The
monitor's state is part of the RL checkpoint, so a resumed run keeps its baselines. `sample_table`
makes the sample tables logged every ``sample_every`` iterations, `curves_figure` the closing
RM-versus-gold figure.

The thresholds are about the tiny world's scales; every one is a config field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from components.train.rl.batch import Scores
from components.train.rl.config import MonitorConfig
from components.train.rl.formulas import kl_estimates, masked_mean

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ALARMS = ("kl_blowup", "entropy_collapse", "length_spike", "reward_hacking")
# The per-iteration series the alarms read (metric names as logged).
KL = "rollout/kl_k1"
ENTROPY = "rollout/entropy"
LENGTH = "rollout/response_length"
RM = "rollout/rm_score_z"
GOLD = "rollout/gold_score"


# --------------------------------------------------------------------------------------------------------
# Per-iteration health metrics
# --------------------------------------------------------------------------------------------------------


def _nanmean(x: Tensor) -> float | None:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else None


def rollout_metrics(
    response_mask: Tensor,
    finished: Tensor,
    scores: Scores,
    logp: Tensor,
    ref_logp: Tensor | None,
    entropy: Tensor,
) -> dict[str, float | None]:
    """The health metrics of one rollout (all (B, N) tensors over response positions, on the CPU).

    KL numbers are per reply (summed over its tokens, the unit the KL budget and the adaptive controller
    use) and averaged over the batch; ``kl_*_per_token`` are means over all response tokens. ``logp`` is
    the policy that sampled (the "old" log-probs)."""
    mask = response_mask.bool()
    lengths = mask.sum(dim=1).float()
    out: dict[str, float | None] = {
        "rollout/reward": float(scores.reward.mean()),
        "rollout/gold_score": _nanmean(scores.gold),
        "rollout/entropy": float(masked_mean(entropy, mask)),
        "rollout/response_length": float(lengths.mean()),
        "rollout/response_length_max": float(lengths.max()),
        "rollout/eos_rate": float(finished.float().mean()),
        "rollout/format_compliance": float((scores.ended & ~scores.leaked_role).float().mean()),
    }
    if scores.rm is not None:
        out["rollout/rm_score"] = float(scores.rm.mean())
        out["rollout/rm_score_z"] = float(scores.rm_normalized.mean())
    if ref_logp is not None:
        kl = kl_estimates(logp, ref_logp)
        zero = torch.zeros((), dtype=logp.dtype)
        out["rollout/kl_k1"] = float(torch.where(mask, kl.k1, zero).sum(dim=1).mean())
        out["rollout/kl_k3"] = float(torch.where(mask, kl.k3, zero).sum(dim=1).mean())
        out["rollout/kl_k1_per_token"] = float(masked_mean(kl.k1, mask))
        out["rollout/kl_k3_per_token"] = float(masked_mean(kl.k3, mask))
        out["rollout/ref_logprob_per_token"] = float(masked_mean(ref_logp, mask))
    return out


# --------------------------------------------------------------------------------------------------------
# Alarms
# --------------------------------------------------------------------------------------------------------


@dataclass
class Alarm:
    name: str
    step: int
    message: str
    first: bool  # the first iteration this alarm is active in this run


class RLMonitor:
    """Moving averages of the health series and the four alarms (see the module docstring)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.series: dict[str, list[float]] = {KL: [], ENTROPY: [], LENGTH: [], RM: [], GOLD: []}
        self.first_fired: dict[str, int] = {}
        self.active_steps: dict[str, int] = {}
        self.checked_steps: dict[str, int] = {}  # iterations on which each alarm could be checked
        # Reward hacking reads the RM against the gold score's best moving average so far.
        self.gold_peak: float | None = None
        self.rm_at_gold_peak: float | None = None

    def _moving_average(self, key: str) -> float | None:
        values = [v for v in self.series[key][-self.config.window :] if not math.isnan(v)]
        if len(self.series[key]) < self.config.window or not values:
            return None
        return sum(values) / len(values)

    def _baseline(self, key: str) -> float | None:
        values = self.series[key][: self.config.baseline_iterations]
        if len(values) < self.config.baseline_iterations:
            return None
        return sum(values) / len(values)

    def observe(
        self, step: int, metrics: Mapping[str, float | None]
    ) -> tuple[dict[str, float | None], list[Alarm]]:
        """Add one iteration's metrics; return ({"alarm/<name>": 1 active, 0 checked and quiet, None not
        checkable yet}, the alarms active now). An alarm is checkable once its moving average (and
        baseline) exist: before that a 0 would claim a health the monitor never looked at."""
        for key, series in self.series.items():
            value = metrics.get(key)
            series.append(math.nan if value is None else float(value))
        if not self.config.alarms:
            return {}, []
        cfg = self.config
        checked: set[str] = set()
        active: list[tuple[str, str]] = []

        kl = self._moving_average(KL)
        if kl is not None:
            checked.add("kl_blowup")
            if kl > cfg.kl_budget or not math.isfinite(kl):
                message = f"KL to the reference {kl:.2f} nats/reply > budget {cfg.kl_budget}"
                active.append(("kl_blowup", message))

        entropy, entropy0 = self._moving_average(ENTROPY), self._baseline(ENTROPY)
        if entropy is not None and entropy0 is not None:
            checked.add("entropy_collapse")
            if entropy < cfg.entropy_collapse_fraction * entropy0:
                fraction = cfg.entropy_collapse_fraction
                message = f"entropy {entropy:.3f} < {fraction} x its baseline {entropy0:.3f}"
                active.append(("entropy_collapse", message))

        length, length0 = self._moving_average(LENGTH), self._baseline(LENGTH)
        if length is not None and length0 is not None:
            checked.add("length_spike")
            if length > cfg.length_spike_factor * length0:
                factor = cfg.length_spike_factor
                message = f"reply length {length:.1f} > {factor} x its baseline {length0:.1f}"
                active.append(("length_spike", message))

        rm, gold = self._moving_average(RM), self._moving_average(GOLD)
        if rm is not None and gold is not None:
            checked.add("reward_hacking")
            if self.gold_peak is None or self.rm_at_gold_peak is None or gold > self.gold_peak:
                self.gold_peak, self.rm_at_gold_peak = gold, rm
            rise, drop = rm - self.rm_at_gold_peak, self.gold_peak - gold
            if rise >= cfg.hacking_rm_rise and drop >= cfg.hacking_gold_drop:
                message = (
                    f"RM score rose {rise:+.2f} std while the gold score fell {drop:.3f} from its best "
                    f"{self.gold_peak:.3f}"
                )
                active.append(("reward_hacking", message))

        for name in checked:
            self.checked_steps[name] = self.checked_steps.get(name, 0) + 1
        alarms = []
        for name, message in active:
            first = name not in self.first_fired
            if first:
                self.first_fired[name] = step
            self.active_steps[name] = self.active_steps.get(name, 0) + 1
            alarms.append(Alarm(name, step, message, first))
        names = {a.name for a in alarms}
        flags = {f"alarm/{name}": float(name in names) if name in checked else None for name in ALARMS}
        return flags, alarms

    @property
    def alarms_fired(self) -> float | None:
        """How many alarms fired in the run; None when no alarm could ever be checked (alarms off, or
        fewer iterations than the window): zero alarms would then be a verdict nobody reached."""
        return float(len(self.first_fired)) if self.checked_steps else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "series": {k: list(v) for k, v in self.series.items()},
            "first_fired": dict(self.first_fired),
            "active_steps": dict(self.active_steps),
            "checked_steps": dict(self.checked_steps),
            "gold_peak": self.gold_peak,
            "rm_at_gold_peak": self.rm_at_gold_peak,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # JSON turns NaN into NaN (Python's json allows it), so the series round-trip as they were.
        self.series = {k: [float(x) for x in state["series"].get(k, [])] for k in self.series}
        self.first_fired = {k: int(v) for k, v in state["first_fired"].items()}
        self.active_steps = {k: int(v) for k, v in state["active_steps"].items()}
        self.checked_steps = {k: int(v) for k, v in state["checked_steps"].items()}
        self.gold_peak = state["gold_peak"]
        self.rm_at_gold_peak = state["rm_at_gold_peak"]


# --------------------------------------------------------------------------------------------------------
# Samples and figures
# --------------------------------------------------------------------------------------------------------

SAMPLE_COLUMNS = [
    "step",
    "prompt",
    "reply",
    "reward",
    "rm_score",
    "gold",
    "tokens",
    "ended",
    "answer",
    "task",
]


def _round(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def sample_table(
    step: int, records: Sequence[Mapping[str, Any]], scores: Scores, lengths: Tensor, limit: int
) -> dict[str, list[Any]]:
    """The first `limit` rows of a rollout as an MLflow table (``{"columns": [...], "data": [[...]]}``,
    the JSON `mlflow.log_table` writes): prompt (its last user message), reply, reward, RM score, gold."""
    data = []
    for i, record in enumerate(records[:limit]):
        data.append(
            [
                step,
                record["prompt"][-1]["content"],
                scores.replies[i],
                _round(float(scores.reward[i])),
                _round(float(scores.rm[i])) if scores.rm is not None else None,
                _round(float(scores.gold[i])),
                int(lengths[i]),
                bool(scores.ended[i]),
                record.get("answer"),
                record.get("task"),
            ]
        )
    return {"columns": SAMPLE_COLUMNS, "data": data}


def curves_figure(
    history: Sequence[Mapping[str, Any]], first_fired: Mapping[str, int], title: str = ""
) -> Figure:
    """RM score (z) and gold score against the iteration, KL and entropy below, alarm onsets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]

    def series(key: str) -> list[float]:
        return [math.nan if h.get(key) is None else h[key] for h in history]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if any(h.get(RM) is not None for h in history):  # GRPO on verifier rewards has no RM score
        top.plot(steps, series(RM), label="RM score (std units)", color="tab:blue")
        top.legend(loc="upper left")
    top.set_ylabel("RM score (z)")
    gold_axis = top.twinx()
    gold_axis.plot(steps, series(GOLD), label="gold (verifier) score", color="tab:orange")
    gold_axis.set_ylabel("gold score")
    gold_axis.legend(loc="lower right")
    bottom.plot(steps, series(KL), label="KL k1 (nats/reply)", color="tab:red")
    bottom.set_ylabel("KL")
    entropy_axis = bottom.twinx()
    entropy_axis.plot(steps, series(ENTROPY), label="entropy (nats/token)", color="tab:green")
    entropy_axis.set_ylabel("entropy")
    bottom.legend(loc="upper left")
    entropy_axis.legend(loc="lower right")
    bottom.set_xlabel("iteration")
    for name, step in first_fired.items():
        for axis in (top, bottom):
            axis.axvline(step, color="black", linestyle=":", linewidth=1)
        top.annotate(name, (step, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = [
    "ALARMS",
    "Alarm",
    "MonitorConfig",
    "RLMonitor",
    "curves_figure",
    "rollout_metrics",
    "sample_table",
]
