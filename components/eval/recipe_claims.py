"""The recipe's claims as numbers: diversity, many samples, and which model a judge prefers.

The GPT-assistant recipe says more than "accuracy goes up": RLHF lowers the entropy and the diversity of
what a model says; sampling many replies and taking a majority vote beats one reply; and people prefer
the RL model to the SFT model to the base model. Here the judges are the gold verifier and the reward
model. This module is the arithmetic (no model in it); `claims_sampling` draws the samples.

Per model, from `n` replies sampled for each of a set of verifiable prompts:

- **token entropy**: the mean, over every sampled token, of the entropy (nats) of the distribution it
  was drawn from (softmax(logits / temperature)) -- how undecided the model is while it writes;
- **distinct-n** (n = 1, 2; Li et al. 2016): distinct word n-grams over all word n-grams of one
  prompt's replies, averaged over prompts -- how different the replies to the *same* prompt are
  (pooled over prompts it would mostly measure how different the prompts are);
- **pass@k** (Chen et al. 2021): the unbiased estimator 1 - C(n-c, k) / C(n, k) of the chance that at
  least one of k replies is correct, from c correct of n, averaged over prompts;
- **maj@k**: the accuracy of a majority vote over k replies (self-consistency, Wang et al. 2022). Each
  reply's answer is extracted (`answer_key`: the final number, the facts it states, whether it
  refuses); replies without an answer do not vote; the most frequent answer wins, a tie going to the
  answer given first, and the vote is scored by the verifier's verdict on the first reply that gave it.
  The n replies are cut into n // k disjoint groups of k in sampling order and the votes averaged, so
  maj@1 = pass@1 = the mean accuracy of single samples.

Across models, from their greedy replies to the same held-out prompts:

- **win rates**: model A beats B on a prompt when the judge prefers A's reply -- the verifier: A's is
  right and B's wrong; the reward model: A's scores higher -- and ties count half;
- **ratings**: a Bradley-Terry fit (maximum likelihood by Hunter's MM iteration, order-independent and
  deterministic) on all pairwise games, on the Elo scale: 1000 + 400 log10(strength), strengths
  normalised to a geometric mean of 1 (so the ratings average 1000), with `prior` virtual tied games
  per pair of models so a model that wins every game still gets a finite rating.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from components.eval.verifiers import final_number, is_refusal, normalise, numbers_in, phrase_spans

NUMERIC_TASKS = ("arithmetic", "letter_count")


# --- diversity -------------------------------------------------------------------------------------------


def token_entropy_sum(logits: Tensor, mask: Tensor, temperature: float = 1.0) -> tuple[float, int]:
    """(sum of entropies in nats, number of tokens) of softmax(logits / temperature) at the positions
    where `mask` is 1: logits (..., V), mask (...). Temperature 0 (greedy) has entropy 0."""
    keep = mask.bool()
    count = int(keep.sum())
    if temperature == 0 or count == 0:
        return 0.0, count
    scaled = logits[keep].float() / temperature
    return float(torch.distributions.Categorical(logits=scaled).entropy().sum()), count


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = normalise(text).split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct word n-grams over all word n-grams of `texts` (case-folded); None without any n-gram."""
    grams = [g for text in texts for g in word_ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else None


def mean_of(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None; None when there is none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


# --- many samples ---------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k): the chance that k of the n replies, drawn without replacement, hold at
    least one of the c correct ones (Chen et al. 2021), as a product that never forms large binomials."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def answer_key(task: str | None, reply: str, record: Mapping[str, Any]) -> str | None:
    """What a reply answers, for a majority vote: replies with the same key get the same verdict.

    Numbers (arithmetic, letter_count): the final number. Facts: which of the relation's values (the
    gold one and its competitors) the reply states. Unknown entities: whether it refuses, the values and
    the numbers it states. Other tasks: the whole normalised reply. None: no answer to vote with."""
    if task in NUMERIC_TASKS:
        number = final_number(reply)
        return None if number is None else f"{number:g}"
    if task in ("fact", "unknown"):
        candidates = [str(record.get("answer") or ""), *record.get("competitors", ())]
        stated = sorted({normalise(v) for v in candidates if v and phrase_spans(reply, v)})
        if task == "fact":
            return "|".join(stated) or None
        numbers = [f"{x:g}" for x in numbers_in(reply)]
        return f"refuses={is_refusal(reply)}|{'|'.join(stated)}|{','.join(numbers)}"
    return normalise(reply) or None


def majority_vote(keys: Sequence[str | None], verdicts: Sequence[float]) -> float:
    """The verdict of the most frequent key (a tie goes to the key given first; None keys do not vote),
    read from the first reply that gave it; 0.0 when no reply gave an answer."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    winner = next(k for k in keys if k is not None and counts[k] == top)
    return float(verdicts[keys.index(winner)])


def maj_at_k(keys: Sequence[str | None], verdicts: Sequence[float], k: int) -> float | None:
    """The mean majority-vote verdict over the len // k disjoint groups of k consecutive replies; None
    when there are fewer than k replies."""
    groups = len(keys) // k
    if groups == 0:
        return None
    votes = [majority_vote(keys[g * k : (g + 1) * k], verdicts[g * k : (g + 1) * k]) for g in range(groups)]
    return sum(votes) / groups


def prompt_claims(
    texts: Sequence[str], verdicts: Sequence[float], keys: Sequence[str | None], ks: Sequence[int]
) -> dict[str, float | None]:
    """One prompt's n replies: distinct-1/2, and pass@k and maj@k for each k <= n (None above n)."""
    n, c = len(verdicts), int(sum(verdicts))
    out: dict[str, float | None] = {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}
    for k in ks:
        out[f"pass_at_{k}"] = pass_at_k(n, c, k) if k <= n else None
        out[f"maj_at_{k}"] = maj_at_k(keys, verdicts, k)
    return out


# --- judges and ratings ---------------------------------------------------------------------------------


def judge_gold(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """1 when a's reply is right and b's wrong, 0 the other way, 0.5 for the same verdict; None when
    either reply has no verdict."""
    if a.get("correct") is None or b.get("correct") is None:
        return None
    return 0.5 + 0.5 * (float(a["correct"]) - float(b["correct"]))


def judge_rm(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """1 when the reward model scores a's reply higher, 0 lower, 0.5 equal; None without scores."""
    if a.get("rm_score") is None or b.get("rm_score") is None:
        return None
    return 1.0 if a["rm_score"] > b["rm_score"] else 0.0 if a["rm_score"] < b["rm_score"] else 0.5


JUDGES = {"gold": judge_gold, "rm": judge_rm}


def sample_key(sample: Mapping[str, Any]) -> tuple[Any, str]:
    """Which prompt a sample answers: its id and the prompt's text (ids may repeat in user data)."""
    return sample.get("id"), repr(sample.get("prompt"))


def pairwise_scores(
    samples: Mapping[str, Sequence[Mapping[str, Any]]], judge: str
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """(score, games): score[a][b] = a's wins + half its ties against b over the prompts both models
    answered and the judge could judge; games[a][b] = how many prompts that was."""
    fn = JUDGES[judge]
    names = list(samples)
    by_prompt = {n: {sample_key(s): s for s in samples[n]} for n in names}
    score = {a: {b: 0.0 for b in names if b != a} for a in names}
    games = {a: {b: 0 for b in names if b != a} for a in names}
    for a, b in itertools.combinations(names, 2):
        for key, sa in by_prompt[a].items():
            sb = by_prompt[b].get(key)
            outcome = None if sb is None else fn(sa, sb)
            if outcome is None:
                continue
            score[a][b] += outcome
            score[b][a] += 1.0 - outcome
            games[a][b] += 1
            games[b][a] += 1
    return score, games


def win_rates(score: Mapping[str, Mapping[str, float]], games: Mapping[str, Mapping[str, int]]):
    """rate[a][b] = score / games (None without games) and each model's mean rate over its opponents."""
    rate = {a: {b: (score[a][b] / games[a][b] if games[a][b] else None) for b in score[a]} for a in score}
    mean = {a: mean_of(list(rate[a].values())) for a in rate}
    return rate, mean


def bradley_terry(
    score: Mapping[str, Mapping[str, float]],
    games: Mapping[str, Mapping[str, int]],
    *,
    prior: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 10_000,
) -> dict[str, float | None]:
    """Elo-scale Bradley-Terry ratings (see the module docstring) with `prior` virtual ties per pair of
    models that played. None for a model without a real game, and (prior 0 only) for one without a
    win, whose maximum-likelihood strength is 0."""
    played = [a for a in score if sum(games[a].values()) > 0]
    w = {a: {b: score[a][b] + prior / 2 for b in played if b != a} for a in played}
    m = {a: {b: games[a][b] + prior for b in played if b != a} for a in played}
    rated = [a for a in played if sum(w[a].values()) > 0]
    p = dict.fromkeys(rated, 1.0)
    for _ in range(max_iter):
        # Hunter's MM step: p_a = wins_a / sum_b games_ab / (p_a + p_b), then the geometric mean to 1.
        new = {
            a: sum(w[a][b] for b in rated if b != a)
            / sum(m[a][b] / (p[a] + p[b]) for b in rated if b != a and m[a][b])
            for a in rated
        }
        log_mean = sum(math.log(v) for v in new.values()) / len(new) if new else 0.0
        new = {a: v / math.exp(log_mean) for a, v in new.items()}
        change = max((abs(new[a] - p[a]) for a in rated), default=0.0)
        p = new
        if change < tol:
            break
    return {a: (1000 + 400 * math.log10(p[a]) if a in p else None) for a in score}


# --- the recipe's ordering --------------------------------------------------------------------------------


def below(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a < b


def recipe_checks(
    models: Mapping[str, Mapping[str, float | None]], rl: Sequence[str]
) -> tuple[dict[str, float], list[str]]:
    """Whether base < SFT < each RL model (held-out accuracy, Elo by the verifier, Elo by the RM) and
    whether each RL model lowered the SFT model's entropy and distinct-2: flags (1.0 / 0.0, left out
    where a model or a figure is missing) and one readable line per check."""
    flags: dict[str, float] = {}
    lines: list[str] = []

    def check(name: str, ok: bool | None, text: str) -> None:
        if ok is not None:
            flags[name] = float(ok)
            lines.append(f"{text}: {'yes' if ok else 'NO'}")

    def fig(model: str, metric: str) -> float | None:
        value = models.get(model, {}).get(metric)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    def show(model: str, metric: str) -> str:
        value = fig(model, metric)
        return f"{model} {'n/a' if value is None else f'{value:.4g}'}"

    for metric in ("accuracy", "elo_gold", "elo_rm"):
        check(f"{metric}.base_lt_sft", below(fig("base", metric), fig("sft", metric)),
              f"{metric}: {show('base', metric)} < {show('sft', metric)}")  # fmt: skip
        for name in rl:
            check(f"{metric}.sft_lt_{name}", below(fig("sft", metric), fig(name, metric)),
                  f"{metric}: {show('sft', metric)} < {show(name, metric)}")  # fmt: skip
    for metric in ("entropy", "distinct_2"):
        for name in rl:
            check(f"{name}_lowered_{metric}", below(fig(name, metric), fig("sft", metric)),
                  f"{name} lowered {metric}: {show('sft', metric)} -> {show(name, metric)}")  # fmt: skip
    return flags, lines


def format_matrix(rate: Mapping[str, Mapping[str, float | None]], title: str) -> str:
    """A win-rate matrix as text: row model's rate against the column model."""
    names = list(rate)
    lines = [title, f"{'':<8}" + "".join(f"{n:>8}" for n in names)]
    for a in names:
        cells = ["-" if a == b else "n/a" if rate[a][b] is None else f"{rate[a][b]:.3f}" for b in names]
        lines.append(f"{a:<8}" + "".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)


__all__ = [
    "JUDGES",
    "answer_key",
    "bradley_terry",
    "distinct_n",
    "format_matrix",
    "maj_at_k",
    "majority_vote",
    "mean_of",
    "pairwise_scores",
    "pass_at_k",
    "prompt_claims",
    "recipe_checks",
    "token_entropy_sum",
    "win_rates",
]
