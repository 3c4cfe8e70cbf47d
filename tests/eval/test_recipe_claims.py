"""The recipe's claims, every figure against a hand computation: token entropy, distinct-n, pass@k, the
majority vote and its answer keys, win rates, Bradley-Terry ratings and the recipe's checks."""

from __future__ import annotations

import math

import pytest
import torch

from components.eval.recipe_claims import (
    answer_key,
    bradley_terry,
    distinct_n,
    format_matrix,
    maj_at_k,
    majority_vote,
    pairwise_scores,
    pass_at_k,
    prompt_claims,
    recipe_checks,
    token_entropy_sum,
    win_rates,
)


def test_token_entropy_by_hand():
    # Two tokens over a vocabulary of 2: uniform (ln 2) and 3:1 (logits ln 3 and 0); a third masked out.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, -5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    total, count = token_entropy_sum(logits, mask)
    h_31 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert count == 2 and total == pytest.approx(math.log(2) + h_31, rel=1e-6)
    # Temperature 2 halves the logits: 3:1 becomes sqrt(3):1.
    total, _ = token_entropy_sum(logits, mask, temperature=2.0)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    assert total == pytest.approx(math.log(2) - p * math.log(p) - (1 - p) * math.log(1 - p), rel=1e-6)
    assert token_entropy_sum(logits, torch.zeros(1, 3)) == (0.0, 0)


def test_distinct_n_by_hand():
    texts = ["a b a", "A  b"]  # case-folded, whitespace words: a b a | a b
    assert distinct_n(texts, 1) == pytest.approx(2 / 5)  # a, b of a b a a b
    assert distinct_n(texts, 2) == pytest.approx(2 / 3)  # (a b), (b a) of (a b) (b a) (a b)
    assert distinct_n(["same reply", "same reply"], 2) == 0.5
    assert distinct_n(["one", ""], 2) is None  # no bigram at all: nothing to measure


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(16, 3, 4) == pytest.approx(1 - math.comb(13, 4) / math.comb(16, 4))
    assert pass_at_k(4, 2, 3) == 1.0  # any 3 of 4 hold one of the 2 correct
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 16, 1) == 1.0
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_majority_vote_by_hand():
    keys = ["5", "7", "5", None, "7", "7", "8", "9"]
    verdicts = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # Groups of 4: {5, 7, 5, -} -> 5 (right); {7, 7, 8, 9} -> 7 (wrong).
    assert maj_at_k(keys, verdicts, 4) == 0.5
    # One group of 8: 7 three times beats 5 twice.
    assert maj_at_k(keys, verdicts, 8) == 0.0
    # k = 1 is the mean verdict; more than the replies there are: None.
    assert maj_at_k(keys, verdicts, 1) == pytest.approx(2 / 8) and maj_at_k(keys, verdicts, 9) is None
    # A tie goes to the answer given first; nobody answering is wrong.
    assert majority_vote(["7", "5"], [0.0, 1.0]) == 0.0 and majority_vote(["5", "7"], [1.0, 0.0]) == 1.0
    assert majority_vote([None, None], [0.0, 0.0]) == 0.0


def test_answer_keys_group_replies_with_the_same_verdict():
    assert answer_key("arithmetic", "23 + 48 = 71. The answer is 71.", {}) == "71"
    assert answer_key("letter_count", "The answer is 1,200.", {}) == "1200"
    assert answer_key("arithmetic", "I am not sure.", {}) is None
    fact = {"answer": "Zifos", "competitors": ["Zifos", "Tetun", "Orsk"]}
    assert answer_key("fact", "The capital of Kuviro is Zifos.", fact) == "zifos"
    assert answer_key("fact", "It is zifos, or maybe Tetun.", fact) == "tetun|zifos"
    assert answer_key("fact", "No idea.", fact) is None
    unknown = {"answer": "Orsk", "competitors": ["Tetun"]}
    assert answer_key("unknown", "I don't have any information about Orsk.", unknown) == "refuses=True|orsk|"
    assert (
        answer_key("unknown", "Orsk was born in Tetun in 1901.", unknown) == "refuses=False|orsk|tetun|1901"
    )
    assert answer_key("other_task", "  Hello   World ", {}) == "hello world"


def test_prompt_claims_of_one_prompt():
    texts = ["The answer is 5.", "The answer is 5.", "The answer is 6.", "The answer is 5."]
    verdicts = [1.0, 1.0, 0.0, 1.0]
    keys = [answer_key("arithmetic", t, {}) for t in texts]
    out = prompt_claims(texts, verdicts, keys, ks=(1, 2, 4, 8))
    assert out["pass_at_1"] == 0.75 and out["pass_at_2"] == pytest.approx(1 - 0 / math.comb(4, 2))
    assert out["maj_at_1"] == 0.75 and out["maj_at_2"] == 0.5  # {5, 5} right; {6, 5}: 6 first, wrong
    assert out["maj_at_4"] == 1.0 and out["pass_at_8"] is None and out["maj_at_8"] is None
    assert out["distinct_1"] == pytest.approx(5 / 16)  # the, answer, is, 5., 6. of 16 words
    assert out["distinct_2"] == pytest.approx(4 / 12)  # 3 shared bigrams + "is 6." + "is 5."


# --- judges and ratings -----------------------------------------------------------------------------------


def replies(correct: list[float | None], rm: list[float] | None = None) -> list[dict]:
    return [
        {"id": f"p{i}", "prompt": [{"role": "user", "content": f"q{i}"}], "correct": c}
        | ({"rm_score": rm[i]} if rm else {})
        for i, c in enumerate(correct)
    ]


def test_win_rates_by_the_verifier_and_the_reward_model():
    samples = {
        "base": replies([0.0, 0.0, 0.0, None], [0.0, 0.1, 0.2, 0.3]),
        "sft": replies([1.0, 0.0, 0.0, None], [0.5, 0.1, 0.1, 0.0]),
        "ppo": replies([1.0, 1.0, 0.0, None], [0.4, 0.9, 0.3, 0.2]),
    }
    score, games = pairwise_scores(samples, "gold")
    # The fourth prompt has no verdict: 3 games per pair. sft vs base: win, tie, tie.
    assert games["sft"]["base"] == 3 and score["sft"]["base"] == 2.0 and score["base"]["sft"] == 1.0
    rate, mean = win_rates(score, games)
    assert rate["ppo"]["sft"] == pytest.approx(2 / 3) and rate["ppo"]["base"] == pytest.approx(2.5 / 3)
    assert mean["ppo"] == pytest.approx((2 / 3 + 2.5 / 3) / 2)
    score, games = pairwise_scores(samples, "rm")
    # sft vs base by RM scores: 0.5 > 0, 0.1 = 0.1, 0.1 < 0.2, 0 < 0.3: 1 + 0.5 of 4.
    assert games["sft"]["base"] == 4 and score["sft"]["base"] == 1.5
    text = format_matrix(win_rates(score, games)[0], "rm")
    # base's row: against sft 1 - 1.5 / 4; against ppo only 0.3 > 0.2 of its four: 0.25.
    assert text.splitlines()[2].split() == ["base", "-", "0.625", "0.250"]
    # No reward model scores: no games, no rating.
    score, games = pairwise_scores({"a": replies([1.0]), "b": replies([0.0])}, "rm")
    assert games["a"]["b"] == 0 and bradley_terry(score, games) == {"a": None, "b": None}


def test_bradley_terry_ratings_by_hand():
    # Two models, 3 : 1: strengths 3 : 1, so 400 log10(3) apart, around 1000.
    score, games = {"a": {"b": 3.0}, "b": {"a": 1.0}}, {"a": {"b": 4}, "b": {"a": 4}}
    ratings = bradley_terry(score, games, prior=0)
    half = 200 * math.log10(3)
    assert ratings["a"] == pytest.approx(1000 + half) and ratings["b"] == pytest.approx(1000 - half)
    # One virtual tie: 3.5 : 1.5.
    ratings = bradley_terry(score, games, prior=1)
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3.5 / 1.5))
    # Three models whose results fit strengths 1 : 2 : 4 exactly: the fit recovers them.
    score = {"a": {"b": 1.0, "c": 1.0}, "b": {"a": 2.0, "c": 1.0}, "c": {"a": 4.0, "b": 2.0}}
    games = {"a": {"b": 3, "c": 5}, "b": {"a": 3, "c": 3}, "c": {"a": 5, "b": 3}}
    ratings = bradley_terry(score, games, prior=0)
    for name, strength in (("a", 0.5), ("b", 1.0), ("c", 2.0)):  # geometric mean 1
        assert ratings[name] == pytest.approx(1000 + 400 * math.log10(strength), abs=1e-6)
    # The fit does not depend on the order of the models.
    reordered = bradley_terry({k: score[k] for k in "cab"}, games, prior=0)
    assert reordered == pytest.approx(ratings)


def test_recipe_checks_flags_and_lines():
    models = {
        "base": {"accuracy": 0.1, "elo_gold": 900.0},
        "sft": {"accuracy": 0.3, "elo_gold": 1000.0, "entropy": 1.0, "distinct_2": 0.5},
        "ppo": {"accuracy": 0.2, "elo_gold": 1100.0, "entropy": 0.6, "distinct_2": 0.6},
        "dpo": {"accuracy": 0.4, "entropy": float("nan")},
    }
    flags, lines = recipe_checks(models, ["ppo", "dpo"])
    assert flags == {
        "accuracy.base_lt_sft": 1.0,
        "accuracy.sft_lt_ppo": 0.0,
        "accuracy.sft_lt_dpo": 1.0,
        "elo_gold.base_lt_sft": 1.0,
        "elo_gold.sft_lt_ppo": 1.0,
        "ppo_lowered_entropy": 1.0,
        "ppo_lowered_distinct_2": 0.0,
    }  # nothing where a figure is missing (dpo's Elo, its NaN entropy, any elo_rm)
    assert (
        "accuracy: sft 0.3 < ppo 0.2: NO" in lines and "ppo lowered entropy: sft 1 -> ppo 0.6: yes" in lines
    )
