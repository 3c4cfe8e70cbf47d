"""The RL formulas against numbers worked out by hand (the arithmetic is in the comments).

Expected values are written out, never recomputed with the code under test. float64 where a hand number
is compared exactly; the tolerance then only absorbs the last bits of rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.train.rl.formulas import (
    AdaptiveKLController,
    FixedKLController,
    broadcast_to_tokens,
    entropy_from_logits,
    explained_variance,
    gae,
    group_advantages,
    kl_estimates,
    kl_penalty_loss,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    rloo_advantages,
    sft_likelihood_bonus,
    shaped_rewards,
    should_early_stop,
    value_loss,
)

LN2 = 0.6931471805599453


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def close(actual: torch.Tensor | float, expected, atol: float = 1e-9) -> None:
    actual = torch.as_tensor(actual, dtype=torch.float64)
    torch.testing.assert_close(actual, t(expected).reshape(actual.shape), rtol=0, atol=atol)


# Two rows of different lengths: 3 real tokens, then 2 real tokens and one pad.
MASK_3_2 = t([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)


# ----------------------------------------------------------------------------------- masked statistics


def test_masked_mean_and_var_by_hand():
    x = t([[1.0, 2.0, 3.0], [4.0, 99.0, -99.0]])
    mask = t([[1, 1, 1], [1, 0, 0]], dtype=torch.long)  # integer masks work too
    close(masked_mean(x, mask), 2.5)  # (1 + 2 + 3 + 4) / 4
    close(masked_mean(x, mask, dim=1), [2.0, 4.0])  # (1 + 2 + 3) / 3, 4 / 1
    # deviations from 2.5: -1.5 -0.5 0.5 1.5 -> squares sum to 2.25 + 0.25 + 0.25 + 2.25 = 5
    close(masked_var(x, mask), 5 / 3)  # unbiased: 5 / (4 - 1)
    close(masked_var(x, mask, unbiased=False), 1.25)  # biased: 5 / 4
    close(masked_var(x, mask, dim=1, unbiased=False), [2 / 3, 0.0])  # row 0: (1 + 0 + 1) / 3


def test_sft_likelihood_bonus_adds_the_mean_reference_logprob_per_reply_token():
    score = t([1.0, -0.5])
    ref_logp = t([[-0.2, -0.4, -0.9], [-3.0, -50.0, -50.0]])  # row 1: one real token, then padding
    mask = t([[1, 1, 1], [1, 0, 0]], dtype=torch.long)
    # row 0: 1 + 0.5 * (-0.2 - 0.4 - 0.9) / 3 = 1 - 0.25; row 1: -0.5 + 0.5 * -3 = -2
    close(sft_likelihood_bonus(score, ref_logp, mask, 0.5), [0.75, -2.0])
    assert sft_likelihood_bonus(score, ref_logp, mask, 0.0) is score  # off: the RM's score untouched


def test_masked_statistics_refuse_empty_selections():
    x = t([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="empty selection"):
        masked_mean(x, torch.zeros_like(x))
    with pytest.raises(ValueError, match="1 slice"):
        masked_mean(x, t([[1, 1], [0, 0]]), dim=1)
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, t([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="mask has shape"):
        masked_mean(x, t([1, 1]))


def test_masked_whiten_by_hand():
    x = t([[1.0, 2.0, 3.0], [4.0, 1e6, 0.0]])
    mask = MASK_3_2.clone()
    mask[1, 1] = False  # real tokens: 1, 2, 3, 4 -> mean 2.5, deviations -1.5 -0.5 0.5 1.5
    # unbiased std = sqrt(5 / 3) = 1.2909944: -1.5 / 1.2909944 = -1.1618950, -0.5 / 1.2909944 = -0.3872983
    close(masked_whiten(x, mask), [[-1.1618950, -0.3872983, 0.3872983], [1.1618950, 0, 0]], atol=1e-6)
    # biased std = sqrt(1.25) = 1.1180340: -1.5 / 1.1180340 = -1.3416408, -0.5 / 1.1180340 = -0.4472136
    close(
        masked_whiten(x, mask, unbiased=False),
        [[-1.3416408, -0.4472136, 0.4472136], [1.3416408, 0, 0]],
        atol=1e-6,
    )
    # shift_mean=False adds the mean 2.5 back: scale changes, location does not
    close(
        masked_whiten(x, mask, shift_mean=False),
        [[1.3381050, 2.1127017, 2.8872983], [3.6618950, 0, 0]],
        atol=1e-6,
    )


def test_broadcast_to_tokens():
    close(broadcast_to_tokens(t([2.0, -1.0]), MASK_3_2), [[2.0, 2.0, 2.0], [-1.0, -1.0, 0.0]])


# ----------------------------------------------------------------------------------------------- GAE

# One row of 3 tokens, gamma = 0.9.  V = 0.5, 0.6, 0.7 and V after the last token = 0.
VALUES_3 = [0.5, 0.6, 0.7]


def test_gae_lambda_zero_is_the_one_step_td_error():
    rewards, values = t([[1.0, -1.0, 2.0]]), t([VALUES_3])
    adv, ret = gae(rewards, values, torch.ones_like(rewards), gamma=0.9, lam=0.0)
    # delta_2 =  2 + 0.9 * 0   - 0.7 =  1.3
    # delta_1 = -1 + 0.9 * 0.7 - 0.6 = -0.97
    # delta_0 =  1 + 0.9 * 0.6 - 0.5 =  1.04
    close(adv, [[1.04, -0.97, 1.3]])
    close(ret, [[1.54, -0.37, 2.0]])  # A + V


def test_gae_lambda_one_is_reward_to_go_minus_value():
    rewards, values = t([[1.0, -1.0, 2.0]]), t([VALUES_3])
    adv, ret = gae(rewards, values, torch.ones_like(rewards), gamma=0.9, lam=1.0)
    # G_2 = 2;  G_1 = -1 + 0.9 * 2 = 0.8;  G_0 = 1 + 0.9 * 0.8 = 1.72
    # A = G - V = 1.72 - 0.5, 0.8 - 0.6, 2 - 0.7
    close(adv, [[1.22, 0.2, 1.3]])
    close(ret, [[1.72, 0.8, 2.0]])  # with lam = 1 the return is the reward-to-go itself


def test_gae_hand_worked_gamma_09_lambda_08():
    rewards, values = t([[0.0, 0.0, 1.0]]), t([VALUES_3])
    adv, ret = gae(rewards, values, torch.ones_like(rewards), gamma=0.9, lam=0.8)
    # delta_2 = 1 + 0 - 0.7 = 0.3;  delta_1 = 0.9 * 0.7 - 0.6 = 0.03;  delta_0 = 0.9 * 0.6 - 0.5 = 0.04
    # gamma * lam = 0.72
    # A_2 = 0.3
    # A_1 = 0.03 + 0.72 * 0.3   = 0.246
    # A_0 = 0.04 + 0.72 * 0.246 = 0.21712
    close(adv, [[0.21712, 0.246, 0.3]])
    close(ret, [[0.71712, 0.846, 1.0]])


def test_gae_rows_of_different_lengths_and_a_masked_prompt():
    # row 0: the 3-token example above.  row 1: 2 real tokens then a pad holding garbage.
    # row 2: a masked prompt position (garbage), then 2 real tokens.
    rewards = t([[0.0, 0.0, 1.0], [1.0, -1.0, 5.0], [9.0, 1.0, -1.0]])
    values = t([VALUES_3, [0.5, 0.6, 9.0], [7.0, 0.5, 0.6]])
    mask = t([[1, 1, 1], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 1 ends at t = 1, so V_2 counts as 0 and the pad's reward is ignored:
    # delta_1 = -1 + 0 - 0.6 = -1.6;  delta_0 = 1 + 0.9 * 0.6 - 0.5 = 1.04
    # A_1 = -1.6;  A_0 = 1.04 + 0.72 * (-1.6) = -0.112;  returns = -0.112 + 0.5, -1.6 + 0.6
    # row 2 is row 1 shifted right by one; its prompt position gets 0.
    close(adv, [[0.21712, 0.246, 0.3], [-0.112, -1.6, 0.0], [0.0, -0.112, -1.6]])
    close(ret, [[0.71712, 0.846, 1.0], [0.388, -1.0, 0.0], [0.0, 0.388, -1.0]])


def test_gae_rejects_bad_discounts():
    x = t([[1.0]])
    with pytest.raises(ValueError, match="gamma and lam"):
        gae(x, x, torch.ones_like(x), gamma=1.1, lam=0.9)


# ------------------------------------------------------------------------------------ shaped rewards


def test_shaped_rewards_by_hand_sum_is_score_minus_beta_kl():
    kl = t([[0.1, -0.2, 0.3], [0.5, 0.4, 7.0]])  # 7.0 sits on padding
    score = t([2.0, -1.0])
    rewards = shaped_rewards(score, kl, MASK_3_2, beta=0.1)
    # row 0: -0.1 * (0.1, -0.2, 0.3) = -0.01, 0.02, -0.03; score 2 on the last token -> 1.97
    # row 1: -0.1 * (0.5, 0.4) = -0.05, -0.04; score -1 on its last real token (t = 1) -> -1.04
    close(rewards, [[-0.01, 0.02, 1.97], [-0.05, -1.04, 0.0]])
    # sums: 2 - 0.1 * 0.2 = 1.98;  -1 - 0.1 * 0.9 = -1.09
    close(rewards.sum(dim=1), [1.98, -1.09])


def test_shaped_rewards_score_clip_and_masked_prompt():
    kl = torch.zeros(2, 4, dtype=torch.float64)
    mask = t([[0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)  # row 0: prompt, 2 response tokens, pad
    rewards = shaped_rewards(t([2.0, -3.0]), kl, mask, beta=0.1, clip=1.5)
    close(rewards, [[0, 0, 1.5, 0], [0, 0, 0, -1.5]])  # 2 -> 1.5 and -3 -> -1.5, each on its last token
    unclipped = shaped_rewards(t([2.0, -3.0]), kl, mask, beta=0.1)
    close(unclipped, [[0, 0, 2.0, 0], [0, 0, 0, -3.0]])


def test_shaped_rewards_sum_property_on_random_rows():
    gen = torch.Generator().manual_seed(0)
    lengths = [1, 5, 3, 8, 2]
    mask = torch.arange(8)[None, :] < t(lengths, dtype=torch.long)[:, None]
    kl = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    score = torch.randn(5, generator=gen, dtype=torch.float64)
    rewards = shaped_rewards(score, kl, mask, beta=0.05)
    expected = [float(score[b]) - 0.05 * float(kl[b, :n].sum()) for b, n in enumerate(lengths)]
    close(rewards.sum(dim=1), expected)


def test_shaped_rewards_refuse_a_row_without_response_tokens():
    mask = t([[1, 1], [0, 0], [1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rows \[1\] have no response token"):
        shaped_rewards(t([1.0, 2.0, 3.0]), torch.zeros(3, 2, dtype=torch.float64), mask, beta=0.1)


# ------------------------------------------------------------------------------------------------- KL


def test_kl_estimates_by_hand():
    # d = logp - ref_logp = ln 2, -ln 2, 0  (policy twice / half as likely as the reference, equal)
    logp = t([math.log(0.5), math.log(0.25), math.log(0.3)])
    ref_logp = t([math.log(0.25), math.log(0.5), math.log(0.3)])
    k1, k2, k3 = kl_estimates(logp, ref_logp)
    close(k1, [LN2, -LN2, 0.0])
    close(k2, [0.2402265, 0.2402265, 0.0], atol=1e-7)  # ln2^2 / 2 = 0.480453 / 2
    # k3: exp(-ln2) - 1 + ln2 = 0.5 - 1 + 0.6931472 = 0.1931472;  exp(ln2) - 1 - ln2 = 2 - 1 - 0.6931472
    close(k3, [0.1931472, 0.3068528, 0.0], atol=1e-7)


def test_k3_is_accurate_for_tiny_differences():
    d = t([1e-4, -1e-4, 1e-8], dtype=torch.float32)
    k3 = kl_estimates(d, torch.zeros_like(d)).k3
    # k3 = d^2/2 - d^3/6 + ...: 5e-9 -/+ 1.7e-13, and 5e-17 -- all > 0 (naive exp(-d) - 1 + d is not)
    assert torch.all(k3 >= 0)
    torch.testing.assert_close(k3[:2].double(), t([5e-9, 5e-9]), rtol=1e-3, atol=0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-80, 80, allow_nan=False, width=32),
            st.floats(-80, 80, allow_nan=False, width=32),
        ),
        min_size=1,
        max_size=16,
    ),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_k3_is_never_negative(pairs, dtype):
    logp = torch.tensor([p for p, _ in pairs], dtype=dtype)
    ref_logp = torch.tensor([r for _, r in pairs], dtype=dtype)
    est = kl_estimates(logp, ref_logp)
    assert torch.all(est.k3 >= 0)
    assert torch.all(est.k2 >= 0)


def test_kl_penalty_loss_is_the_masked_mean_of_k3():
    logp = t([[math.log(0.5), math.log(0.25)], [math.log(0.3), 123.0]])
    ref_logp = t([[math.log(0.25), math.log(0.5)], [math.log(0.3), -5.0]])
    mask = t([[1, 1], [1, 0]], dtype=torch.bool)
    # (0.1931472 + 0.3068528 + 0) / 3 = 0.5 / 3
    close(kl_penalty_loss(logp, ref_logp, mask), 0.5 / 3, atol=1e-7)


# --------------------------------------------------------------------------------------- policy loss


def test_policy_loss_on_the_first_minibatch():
    # logp == old_logp: ratio 1, nothing clipped, no KL yet; the pad's advantage 10 does not count:
    # loss = -mean(A) = -(1 - 2 + 3 + 0.5 - 3) / 5 = -(-0.5 / 5) = 0.1
    logp = t([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    adv = t([[1.0, -2.0, 3.0], [0.5, -3.0, 10.0]])
    loss, stats = policy_loss(logp, logp.clone(), adv, MASK_3_2, clip_eps=0.2)
    close(loss, 0.1)
    close(stats["clip_fraction"], 0.0)
    close(stats["approx_kl"], 0.0)
    close(stats["approx_kl_k3"], 0.0)
    close(stats["ratio_mean"], 1.0)
    close(stats["ratio_max"], 1.0)


# ratio, advantage and whether the clipped branch wins (so the token gets no gradient), clip_eps = 0.2
CLIP_CASES = [
    (1.5, 1.0, True),  # A > 0, ratio > 1.2: already pushed up enough
    (0.5, -1.0, True),  # A < 0, ratio < 0.8: already pushed down enough
    (0.5, 1.0, False),  # A > 0 but ratio fell: the unclipped (larger) loss keeps its gradient
    (1.5, -1.0, False),  # A < 0 but ratio rose: same
    (1.1, 2.0, False),  # inside the range
    (0.9, -2.0, False),  # inside the range
]


def test_clipped_surrogate_gradient_is_zero_exactly_where_the_clip_is_active():
    ratios = t([[r for r, _, _ in CLIP_CASES] + [3.0]])  # + one pad token
    adv = t([[a for _, a, _ in CLIP_CASES] + [5.0]])
    mask = t([[1] * len(CLIP_CASES) + [0]], dtype=torch.bool)
    old_logp = torch.full_like(ratios, -1.0)
    logp = (old_logp + ratios.log()).requires_grad_()
    loss, stats = policy_loss(logp, old_logp, adv, mask, clip_eps=0.2)
    loss.backward()
    # Per token: max(-A r, -A clip(r)):  -1.2, 0.8, -0.5, 1.5, -2.2, 1.8 -> sum 0.2 over 6 tokens
    close(loss, 0.2 / 6)
    # d loss / d logp_t = -A_t * r_t / 6 where unclipped, 0 where clipped (and on the pad):
    #   0, 0, -0.5 / 6, 1.5 / 6, -2.2 / 6, 1.8 / 6, 0
    close(logp.grad, [[0.0, 0.0, -0.5 / 6, 1.5 / 6, -2.2 / 6, 1.8 / 6, 0.0]])
    for i, (_, _, clipped) in enumerate(CLIP_CASES):
        assert (logp.grad[0, i] == 0) == clipped, CLIP_CASES[i]
    close(stats["clip_fraction"], 2 / 6)
    # approx_kl = mean(-ln r) = -(ln 1.5 + ln 0.5 + ln 0.5 + ln 1.5 + ln 1.1 + ln 0.9) / 6
    #           = -(2 * 0.4054651 - 2 * 0.6931472 + 0.0953102 - 0.1053605) / 6 = 0.5854145 / 6 = 0.0975691
    close(stats["approx_kl"], 0.0975691, atol=1e-7)
    # k3 = r - 1 - ln r: 0.0945349, 0.1931472 (twice each), 0.0046898, 0.0053605 -> 0.5854145 / 6.
    # It equals k1 here only because the ratios average to exactly 1 (sum of r - 1 = 0); the other
    # direction, 1/r - 1 + ln r, would give 0.0721318 for r = 1.5 and a different mean.
    close(stats["approx_kl_k3"], 0.0975691, atol=1e-7)
    close(stats["ratio_mean"], 1.0)  # (1.5 + 0.5 + 0.5 + 1.5 + 1.1 + 0.9) / 6
    close(stats["ratio_max"], 1.5)  # the pad's 3.0 does not count


# ---------------------------------------------------------------------------------------- value loss


def test_value_loss_clipped_term_wins():
    # V moved from 1.0 to 2.0 toward R = 3; clip keeps it at 1.2:
    # unclipped (2 - 3)^2 = 1,  clipped (1.2 - 3)^2 = 3.24 -> max 3.24, loss 0.5 * 3.24
    values = t([[2.0]]).requires_grad_()
    loss, stats = value_loss(values, t([[1.0]]), t([[3.0]]), t([[1]]), clip_eps_v=0.2)
    close(loss, 1.62)
    close(stats["value_clip_fraction"], 1.0)
    loss.backward()
    close(values.grad, [[0.0]])  # the clipped branch does not depend on V: no gradient


def test_value_loss_unclipped_term_wins():
    # V moved from 1.0 to 2.0 away from R = 0: unclipped (2 - 0)^2 = 4 > clipped (1.2 - 0)^2 = 1.44
    values = t([[2.0]]).requires_grad_()
    loss, stats = value_loss(values, t([[1.0]]), t([[0.0]]), t([[1]]), clip_eps_v=0.2)
    close(loss, 2.0)
    close(stats["value_clip_fraction"], 0.0)
    loss.backward()
    close(values.grad, [[2.0]])  # d/dV 0.5 (V - R)^2 = V - R = 2


def test_value_loss_mixed_batch_and_no_clip():
    values = t([[2.0, 2.0], [0.5, 50.0]])
    old = t([[1.0, 1.0], [0.5, -50.0]])
    ret = t([[3.0, 0.0], [1.5, 0.0]])
    mask = t([[1, 1], [1, 0]], dtype=torch.bool)
    # per token: 3.24 (clipped), 4 (unclipped), (0.5 - 1.5)^2 = 1 (no move) -> 0.5 * 8.24 / 3
    loss, stats = value_loss(values, old, ret, mask, clip_eps_v=0.2)
    close(loss, 0.5 * 8.24 / 3)
    close(stats["value_clip_fraction"], 1 / 3)
    # without clipping: 1 + 4 + 1 -> 0.5 * 6 / 3
    loss, stats = value_loss(values, old, ret, mask, clip_eps_v=None)
    close(loss, 1.0)
    close(stats["value_clip_fraction"], 0.0)


def test_explained_variance_by_hand():
    returns = t([[1.0, 2.0, 3.0, 4.0, 100.0]])
    values = t([[1.0, 2.0, 3.0, 3.0, -100.0]])
    mask = t([[1, 1, 1, 1, 0]], dtype=torch.bool)
    # R - V = 0, 0, 0, 1: var = 1/4 - (1/4)^2 = 0.1875;  Var(R) = 1.25;  1 - 0.1875 / 1.25 = 0.85
    close(explained_variance(values, returns, mask), 0.85)
    close(explained_variance(returns, returns, mask), 1.0)
    assert math.isnan(float(explained_variance(values, torch.ones_like(returns), mask)))


# ------------------------------------------------------------------------------------- masks matter


def test_masked_positions_change_no_loss_and_no_gradient():
    gen = torch.Generator().manual_seed(1)
    mask = t([[1, 1, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)  # pads and a masked prompt position

    def run(fill: float):
        def noisy(x):
            return torch.where(mask, x, fill)

        base = [torch.randn(2, 4, generator=gen, dtype=torch.float64) for _ in range(6)]
        logp, old_logp, adv, values, old_values, returns = (noisy(x) for x in base)
        logp.requires_grad_()
        values.requires_grad_()
        p_loss, p_stats = policy_loss(logp, old_logp, adv, mask, clip_eps=0.2)
        v_loss, v_stats = value_loss(values, old_values, returns, mask, clip_eps_v=0.2)
        kl_loss = kl_penalty_loss(logp, old_logp, mask)
        (p_loss + v_loss + kl_loss).backward()
        advantages, rets = gae(adv, values.detach(), mask, gamma=0.9, lam=0.8)
        return [
            p_loss,
            v_loss,
            kl_loss,
            logp.grad,
            values.grad,
            advantages,
            rets,
            masked_whiten(adv, mask),
            *p_stats.values(),
            *v_stats.values(),
        ]

    reference = None
    for fill in (0.0, 1e4, -1e4, math.inf, math.nan):
        gen.manual_seed(1)  # same real values every time; only the masked positions differ
        outputs = run(fill)
        if reference is None:
            reference = outputs
            continue
        for got, want in zip(outputs, reference, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------- from logits


def test_entropy_from_logits():
    vocab = 7
    # uniform over 7 (any constant logit): ln 7 = 1.9459101
    close(entropy_from_logits(torch.zeros(vocab)), math.log(7), atol=1e-6)
    close(entropy_from_logits(torch.full((vocab,), 5.0)), math.log(7), atol=1e-6)
    # one very peaked logit: ~0, and no overflow or NaN at 1e4
    peaked = torch.zeros(2, vocab)
    peaked[0, 3], peaked[1, 0] = 100.0, 1e4
    close(entropy_from_logits(peaked), [0.0, 0.0], atol=1e-6)
    # p = (1/4, 3/4) from logits (0, ln 3): -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.3465736 + 0.2157616
    close(entropy_from_logits(t([0.0, math.log(3)])), 0.5623351, atol=1e-7)


def test_entropy_matches_minus_p_log_p_on_random_logits():
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(2)) * 3
    p = logits.double().softmax(-1)
    reference = -(p * p.log()).sum(-1)
    torch.testing.assert_close(entropy_from_logits(logits).double(), reference, rtol=0, atol=1e-5)
    # bf16 logits are computed in float32
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32


def test_logprobs_from_logits():
    logits = t([[[0.0, math.log(3)], [0.0, math.log(3)]]])  # p = (1/4, 3/4) at both positions
    tokens = torch.tensor([[1, 0]])
    close(logprobs_from_logits(logits, tokens), [[math.log(0.75), math.log(0.25)]])  # -0.2876821, -1.3862944
    with pytest.raises(ValueError, match="vocabulary axis"):
        logprobs_from_logits(logits, torch.tensor([1, 0]))


# -------------------------------------------------------------------------------------- early stop


def test_early_stop_fires_exactly_past_one_and_a_half_targets():
    threshold = 1.5 * 0.01
    assert not should_early_stop(threshold, 0.01)  # equal does not fire
    assert should_early_stop(math.nextafter(threshold, math.inf), 0.01)  # one ulp above does
    assert not should_early_stop(0.0, 0.01)
    # 0.375 = 1.5 * 0.25 exactly in binary
    assert not should_early_stop(0.375, 0.25)
    assert should_early_stop(0.3750001, 0.25)
    assert should_early_stop(torch.tensor(0.4), 0.25)  # a stats tensor works
    assert not should_early_stop(1e9, None)  # no target: never
    with pytest.raises(ValueError):
        should_early_stop(0.1, 0.0)


# ------------------------------------------------------------------------------------ KL controllers


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # n_steps / horizon = 1000 / 10000 = 0.1
    steps = [
        (6.0, 1000, 0.1),  # e = 6/6 - 1 = 0 -> unchanged
        (9.0, 1000, 0.102),  # e = 0.5 clipped to 0.2 -> x (1 + 0.2 * 0.1) = x 1.02
        (6.6, 1000, 0.10302),  # e = 0.1 -> x 1.01
        (0.0, 1000, 0.1009596),  # e = -1 clipped to -0.2 -> x 0.98
        (5.4, 1000, 0.099950004),  # e = -0.1 -> x 0.99
        (12.0, 500, 0.10094950404),  # e = 1 clipped to 0.2, n / horizon = 0.05 -> x 1.01
    ]
    for kl, n_steps, expected in steps:
        assert ctl.update(kl, n_steps) == pytest.approx(expected, rel=1e-12, abs=0)
    assert ctl.value == pytest.approx(0.10094950404, rel=1e-12, abs=0)


def test_adaptive_kl_controller_state_round_trip():
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    ctl.update(9.0, 1000)
    state = ctl.state_dict()
    assert state == {"kind": "adaptive", "value": pytest.approx(0.102), "target": 6.0, "horizon": 10_000.0}
    resumed = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    resumed.load_state_dict(state)
    assert resumed.value == ctl.value
    assert resumed.update(6.6, 1000) == ctl.update(6.6, 1000)  # continues identically
    with pytest.raises(ValueError, match=r"target=7\.0"):
        AdaptiveKLController(init_beta=0.1, target=7.0, horizon=10_000).load_state_dict(state)
    with pytest.raises(ValueError, match="kind"):
        FixedKLController(0.1).load_state_dict(state)


def test_adaptive_kl_controller_refuses_what_would_break_beta():
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10)
    with pytest.raises(ValueError, match="non-positive"):
        ctl.update(0.0, 100)  # 1 - 0.2 * 100 / 10 = -1
    with pytest.raises(ValueError, match="finite"):
        ctl.update(math.nan, 1)
    assert ctl.value == 0.1  # a refused update leaves beta alone


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 64) == 0.05
    state = ctl.state_dict()
    assert state == {"kind": "fixed", "value": 0.05}
    FixedKLController(0.05).load_state_dict(state)
    with pytest.raises(ValueError, match="value"):
        FixedKLController(0.1).load_state_dict(state)


# ------------------------------------------------------------------------------------ GRPO and RLOO

# Two prompts, 4 samples each, samples of a prompt adjacent.
GROUP_REWARDS = [1.0, 0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 8.0]


def test_grpo_advantages_by_hand():
    adv = group_advantages(t(GROUP_REWARDS), group_size=4)
    # group 1: mean 0.25, deviations 0.75 -0.25 -0.25 -0.25, squares 0.5625 + 3 * 0.0625 = 0.75,
    #          unbiased std sqrt(0.75 / 3) = 0.5 -> 1.5, -0.5, -0.5, -0.5
    # group 2: mean 5, deviations -3 -1 1 3, squares 20, std sqrt(20 / 3) = 2.5819889
    #          -> -3 / 2.5819889 = -1.1618950, -1 / 2.5819889 = -0.3872983
    close(adv, [1.5, -0.5, -0.5, -0.5, -1.1618950, -0.3872983, 0.3872983, 1.1618950], atol=1e-5)


def test_dr_grpo_advantages_subtract_the_mean_only():
    adv = group_advantages(t(GROUP_REWARDS), group_size=4, scale=False)
    close(adv, [0.75, -0.25, -0.25, -0.25, -3.0, -1.0, 1.0, 3.0])


def test_rloo_advantages_by_hand():
    adv = rloo_advantages(t(GROUP_REWARDS), group_size=4)
    # group 1: 1 - (0 + 0 + 0) / 3 = 1;  0 - (1 + 0 + 0) / 3 = -1/3
    # group 2: 2 - (4 + 6 + 8) / 3 = -4;  4 - 16/3 = -4/3;  6 - 14/3 = 4/3;  8 - 12/3 = 4
    close(adv, [1.0, -1 / 3, -1 / 3, -1 / 3, -4.0, -4 / 3, 4 / 3, 4.0])


def test_group_with_identical_rewards_gets_zero_advantage_and_bad_groups_are_refused():
    close(group_advantages(t([1.0, 1.0, 1.0, 1.0]), group_size=4), [0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(t([1.0, 2.0, 3.0]), group_size=4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        rloo_advantages(t([1.0, 2.0]), group_size=1)


def test_grpo_advantage_reaches_every_real_token_of_its_sample():
    adv = group_advantages(t([1.0, 0.0, 0.0, 0.0]), group_size=4)
    mask = t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    close(
        broadcast_to_tokens(adv, mask), [[1.5, 1.5, 0], [-0.5, 0, 0], [-0.5] * 3, [0, -0.5, -0.5]], atol=1e-5
    )


def test_gae_steps_over_a_hole_of_tool_tokens():
    # The same three actions as the hand-worked case above, with two tool-result tokens between the
    # first and the second: the hole is skipped, so the actions get the very same advantages.
    rewards, values = t([[0.0, 9.0, 9.0, 0.0, 1.0]]), t([[0.5, 9.0, 9.0, 0.6, 0.7]])
    mask = t([[1, 0, 0, 1, 1]]).bool()
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, [[0.21712, 0.0, 0.0, 0.246, 0.3]])
    close(ret, [[0.71712, 0.0, 0.0, 0.846, 1.0]])
