"""The formulas of the RL stage (PPO, GRPO, RLOO), as plain functions of tensors.

Every per-token tensor is (B, T) over RESPONSE positions, with a ``mask`` (B, T) that is nonzero on real
response tokens and zero on padding (and on prompt tokens, if a caller keeps them in the tensor). The
rules every function here follows:

- Masked positions never matter. Inputs are replaced by 0 at masked positions before any arithmetic
  (``torch.where``, not multiplication), so garbage there -- even inf or NaN, e.g. the log-prob of a pad
  token -- changes no output and no gradient. Per-token outputs are 0 at masked positions.
- Losses and token statistics are a masked mean over ALL real tokens of the batch passed in (token-level
  mean, as OpenRLHF, TRL's PPO and Dr.GRPO do), not a mean of per-sequence means.
- Rollout constants (``old_logp``, ``ref_logp``, advantages, ``old_values``, returns) are detached inside
  the losses: PPO treats them as fixed targets, and a caller's stray graph must not leak a gradient.
- An empty selection is an error, not a NaN: a masked mean over zero tokens, a variance over fewer than
  two, a row with no response token to carry its score. The check reads one number back from the device,
  which costs microseconds next to a training step and turns a silent NaN into a message that says where.

Mask values: any nonzero entry counts as a real token (bool, 0/1 int or 0/1 float masks all work).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

# PPO epochs stop when the measured policy change exceeds this multiple of the target KL (OpenAI baselines
# and Stable-Baselines3 both use 1.5).
EARLY_STOP_KL_FACTOR = 1.5
# Ziegler et al. clip the proportional error of the adaptive KL controller to +-0.2.
ADAPTIVE_KL_ERROR_CLIP = 0.2


# --------------------------------------------------------------------------------------------------------
# Masks and masked statistics
# --------------------------------------------------------------------------------------------------------


def _bool_mask(x: Tensor, mask: Tensor, name: str = "x") -> Tensor:
    """``mask`` as a bool tensor of ``x``'s shape; a shape mismatch is an error (no silent broadcasting)."""
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but {name} has shape {tuple(x.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """x with masked positions replaced by 0, so that inf/NaN there cannot reach a sum or a gradient."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the real tokens: sum(x * mask) / sum(mask), over all elements or along ``dim``.

    Raises ValueError when the selection (or, with ``dim``, any slice of it) holds no real token: a
    mean over nothing has no value, and returning 0 or NaN would hide an upstream bug.
    """
    m = _bool_mask(x, mask)
    count = m.sum() if dim is None else m.sum(dim=dim)
    if bool((count == 0).any()):
        where = "the whole mask" if dim is None else f"{int((count == 0).sum())} slice(s) along dim {dim}"
        raise ValueError(f"masked_mean over an empty selection: {where} has no real token")
    total = _zero_masked(x, m).sum() if dim is None else _zero_masked(x, m).sum(dim=dim)
    return total / count.to(total.dtype)


def sft_likelihood_bonus(score: Tensor, ref_logp: Tensor, mask: Tensor, coef: float) -> Tensor:
    """Each reply's score plus ``coef`` times its mean log-probability per token under the reference (the
    SFT model): what the SFT model knows of the facts, which a reward read at one position can miss.

        score'[b] = score[b] + coef * sum_t(ref_logp[b, t] * mask[b, t]) / sum_t(mask[b, t])

    A mean, not a sum: every token adds a negative log-probability, so a sum favours any shorter reply
    (on the tiny world's held-out pairs, added to the RM at coef 0.05, a sum took arithmetic from 1.0 to
    0.74 and wrong vs degenerate from 1.0 to 0.80; the mean keeps both at 1.0)."""
    if coef == 0:
        return score
    return score + coef * masked_mean(ref_logp, mask, dim=1).to(score.dtype)


def masked_var(x: Tensor, mask: Tensor, dim: int | None = None, *, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over the real tokens, over all elements or along ``dim``.

        mu  = sum(x * mask) / n,                n = sum(mask)
        var = sum((x - mu)^2 * mask) / (n - 1)  if unbiased (Bessel's correction; TRL's default)
        var = sum((x - mu)^2 * mask) / n        if not (OpenRLHF's advantage normalization)

    Raises ValueError when a selection has fewer than 2 real tokens (unbiased) or none (biased).
    """
    m = _bool_mask(x, mask)
    if dim is None:  # one code path: reduce the flattened tensor along its only axis
        x, m, dim = x.reshape(-1), m.reshape(-1), 0
    count = m.sum(dim=dim, keepdim=True)
    need = 2 if unbiased else 1
    if bool((count < need).any()):
        raise ValueError(
            f"masked_var needs at least {need} real token(s) per selection "
            f"({'unbiased' if unbiased else 'biased'} variance); some selection along dim {dim} has fewer"
        )
    n = count.to(x.dtype)
    mean = _zero_masked(x, m).sum(dim=dim, keepdim=True) / n
    squares = _zero_masked((x - mean) ** 2, m).sum(dim=dim, keepdim=True)
    var = squares / (n - 1 if unbiased else n)
    return var.squeeze(dim)


def masked_whiten(
    x: Tensor, mask: Tensor, shift_mean: bool = True, *, unbiased: bool = True, eps: float = 1e-8
) -> Tensor:
    """Normalize ``x`` over all real tokens of the batch: (x - mu) / sqrt(var + eps).

    mu and var are ``masked_mean`` / ``masked_var(unbiased=...)`` over every real token (not per row).
    With ``shift_mean=False`` the mean is added back, (x - mu) / sqrt(var + eps) + mu: only the scale
    changes (TRL's option, used for rewards whose sign carries meaning). Masked positions are 0 in the
    output. Unbiased by default as TRL's ``masked_whiten``; OpenRLHF divides by n -- the two differ by
    a factor sqrt(n / (n - 1)), negligible at the thousands of tokens of a rollout.
    """
    m = _bool_mask(x, mask)
    mean = masked_mean(x, m)
    var = masked_var(x, m, unbiased=unbiased)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_masked(whitened, m)


def broadcast_to_tokens(per_sequence: Tensor, mask: Tensor) -> Tensor:
    """A per-sequence value (B,) copied to every real token of its row: out[b, t] = v[b] * mask[b, t].

    GRPO and RLOO compute one advantage per sequence; the token-level policy loss needs it per token.
    """
    if per_sequence.dim() != 1 or mask.dim() != 2 or per_sequence.shape[0] != mask.shape[0]:
        raise ValueError(
            f"expected per_sequence (B,) and mask (B, T); got {tuple(per_sequence.shape)} "
            f"and {tuple(mask.shape)}"
        )
    m = mask if mask.dtype == torch.bool else mask != 0
    return _zero_masked(per_sequence[:, None].expand(m.shape), m)


# --------------------------------------------------------------------------------------------------------
# KL estimators and the shaped per-token reward
# --------------------------------------------------------------------------------------------------------


class KLEstimates(NamedTuple):
    """Schulman's three per-token estimators of KL(pi || pi_ref) from samples of pi, d = logp - ref_logp."""

    k1: Tensor  # d: unbiased, can be negative per token; what goes into the PPO reward
    k2: Tensor  # d^2 / 2: biased, low variance, always >= 0
    k3: Tensor  # exp(-d) - 1 + d: unbiased and always >= 0; GRPO's KL loss term


def kl_estimates(logp: Tensor, ref_logp: Tensor) -> KLEstimates:
    """Per-token KL estimators with d = logp - ref_logp (no masking: apply the mask where you reduce).

        k1 = d,   k2 = d^2 / 2,   k3 = exp(-d) - 1 + d

    k3 is computed as expm1(-d) + d: for small |d| the naive exp(-d) - 1 loses the d^2/2 it is made of
    to rounding and can come out slightly negative; expm1 keeps it >= 0.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ in shape")
    d = logp - ref_logp
    return KLEstimates(k1=d, k2=0.5 * d**2, k3=torch.expm1(-d) + d)


def kl_penalty_loss(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """GRPO's KL term: masked mean over real tokens of k3 = exp(-d) - 1 + d, d = logp - ref_logp.

    The gradient flows into ``logp`` only; ``ref_logp`` (the frozen reference) is detached.
    """
    m = _bool_mask(logp, mask, "logp")
    _bool_mask(ref_logp, m, "ref_logp")
    k3 = kl_estimates(_zero_masked(logp, m), _zero_masked(ref_logp.detach(), m)).k3
    return masked_mean(k3, m)


def _last_token_index(mask: Tensor) -> Tensor:
    """(B,) index of the last real token of each row, or -1 for a row with none."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand(mask.shape)
    return torch.where(mask, positions, -1).amax(dim=1)


def shaped_rewards(
    score: Tensor, kl: Tensor, mask: Tensor, beta: float, *, clip: float | None = None
) -> Tensor:
    """Per-token PPO reward: the KL penalty on every response token, the sequence score on the last one.

        r[b, t] = -beta * kl[b, t] * mask[b, t]  +  [t == last(b)] * clip(score[b], -clip, +clip)

    so that sum_t r[b, t] = clip(score[b]) - beta * sum_t kl[b, t] * mask[b, t]. ``last(b)`` is the
    last real token of row b (rows may end at different positions; leading masked prompt positions are
    fine). ``kl`` is usually k1 from ``kl_estimates(logp, ref_logp)``; ``clip=None`` leaves the score as
    it is (TRL), OpenRLHF clips to +-10 and DeepSpeed-Chat to +-5.

    Raises ValueError naming the rows that have no real token: such a row has nowhere to put its score
    and would silently train on nothing. Drop those samples before shaping (a response that is only the
    stop token still has one token).
    """
    if kl.dim() != 2:
        raise ValueError(f"kl must be (B, T); got shape {tuple(kl.shape)}")
    m = _bool_mask(kl, mask, "kl")
    if score.shape != (kl.shape[0],):
        raise ValueError(f"score must be (B,) = ({kl.shape[0]},); got shape {tuple(score.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (it weighs a penalty); got {beta}")
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be > 0 or None; got {clip}")
    last = _last_token_index(m)
    empty = (last < 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty} have no response token (mask all zero): there is no token to carry their "
            "score; drop these samples before shaping rewards"
        )
    if clip is not None:
        score = score.clamp(-clip, clip)
    rewards = _zero_masked(-beta * kl, m)
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


# --------------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over each row's response tokens; returns (advantages, returns).

        delta_t = r_t + gamma * V_{t+1} - V_t         (V after the last real token = 0: episode ends)
        A_t     = delta_t + gamma * lam * A_{t+1}     (A after the last real token = 0)
        R_t     = A_t + V_t                            (the critic's regression target)

    lam = 0 gives the one-step TD error; lam = 1 gives sum_k gamma^k r_{t+k} - V_t. Masked positions
    contribute nothing and get A = R = 0, and the recursion steps over them: t + 1 is the row's next
    real token, so a hole inside a reply (tokens a tool injected, which are not the policy's actions)
    does not end the episode there. Whiten the advantages
    afterwards (``masked_whiten``), not the returns: the critic regresses onto the raw A + V.
    Computed without gradient: advantages and returns are targets.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, T); got shape {tuple(rewards.shape)}")
    m = _bool_mask(rewards, mask, "rewards")
    _bool_mask(values, m, "values")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1]; got gamma={gamma}, lam={lam}")
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    r = _zero_masked(rewards.to(dtype), m)
    v = _zero_masked(values.to(dtype), m)  # V = 0 on padding is what makes "V after the last token = 0"
    advantages = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])
    next_advantage = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        # A masked position carries the next real token's value and advantage through unchanged (it is
        # skipped) and gets A = 0 itself; trailing padding carries the zeros the recursion starts with.
        next_advantage = torch.where(m[:, t], delta + gamma * lam * next_advantage, next_advantage)
        advantages[:, t] = torch.where(m[:, t], next_advantage, 0.0)
        next_value = torch.where(m[:, t], v[:, t], next_value)
    returns = _zero_masked(advantages + v, m)
    return advantages, returns


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """(N,) rewards as (N / group_size, group_size); the samples of one prompt must be adjacent."""
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must be (N,) with each prompt's samples adjacent; got {tuple(rewards.shape)}"
        )
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a group of one has no baseline); got {group_size}")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    return rewards.reshape(-1, group_size)


def group_advantages(rewards: Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO's per-sequence advantage, normalized within each prompt's group of samples.

        scale=True  (GRPO):     A_i = (r_i - mean_group) / (std_group + eps)
        scale=False (Dr.GRPO):  A_i =  r_i - mean_group

    ``rewards`` is (N,) with the ``group_size`` samples of each prompt adjacent ([p0s0, p0s1, ...,
    p1s0, ...]). std_group is the unbiased (n - 1) standard deviation, as ``torch.std`` and TRL's
    GRPOTrainer. A group whose samples all scored the same gets A = 0 (eps only prevents 0 / 0).
    Returns (N,); ``broadcast_to_tokens`` spreads it over the response.
    """
    grouped = _grouped(rewards, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO's per-sequence advantage: each sample's reward minus the mean of the OTHER k - 1 in its group.

        A_i = r_i - (sum_group - r_i) / (k - 1)   ( = k / (k - 1) * (r_i - mean_group) )

    The leave-one-out baseline does not depend on r_i, so the estimate stays unbiased. Same layout as
    ``group_advantages``; returns (N,).
    """
    grouped = _grouped(rewards, group_size)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).reshape(-1)


# --------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------


def policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate loss and its diagnostics.

        ratio = exp(logp - old_logp)
        loss  = masked_mean( max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) )

    The max picks the pessimistic branch, so the gradient is zero on a token whose ratio already moved
    past the clip range in the direction its advantage pushes (A > 0, ratio > 1 + eps; A < 0,
    ratio < 1 - eps) and is -A * ratio / n elsewhere. Stats (detached 0-dim tensors, read them when you
    log):

    - ``clip_fraction``: fraction of real tokens where the clipped branch is STRICTLY larger, i.e.
      exactly the tokens that get no gradient (ties at the boundary and A = 0 do not count);
    - ``approx_kl``: masked_mean(old_logp - logp), the k1 estimate of KL(old || new) -- the number
      ``should_early_stop`` compares with the target;
    - ``approx_kl_k3``: masked_mean(ratio - 1 - log ratio), the k3 estimate of the same KL (>= 0);
    - ``ratio_mean``, ``ratio_max`` over real tokens.

    ``old_logp`` and ``advantages`` are detached.
    """
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps must lie in (0, 1); got {clip_eps}")
    m = _bool_mask(logp, mask, "logp")
    _bool_mask(old_logp, m, "old_logp")
    _bool_mask(advantages, m, "advantages")
    log_ratio = _zero_masked(logp, m) - _zero_masked(old_logp.detach(), m)
    adv = _zero_masked(advantages.detach(), m)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {
            "loss": loss.detach(),
            "clip_fraction": masked_mean((clipped > unclipped).to(ratio.dtype), m),
            "approx_kl": masked_mean(-log_ratio, m),
            # k3 with d = old_logp - logp: exp(-d) - 1 + d = expm1(log_ratio) - log_ratio
            "approx_kl_k3": masked_mean(torch.expm1(log_ratio) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
            "ratio_max": torch.where(m, ratio, -math.inf).amax(),
        }
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """How much of the returns' variance the critic explains: 1 - Var(R - V) / Var(R) over real tokens.

    1 is perfect, 0 is no better than predicting the mean, negative is worse. Biased variances (the
    n vs n - 1 choice cancels in the ratio). NaN when Var(R) = 0: the quantity is undefined there.
    Detached: a diagnostic, never a loss.
    """
    m = _bool_mask(values, mask, "values")
    _bool_mask(returns, m, "returns")
    values, returns = values.detach(), returns.detach()
    var_returns = masked_var(returns, m, unbiased=False)
    var_residual = masked_var(returns - values, m, unbiased=False)
    return torch.where(var_returns > 0, 1.0 - var_residual / var_returns, math.nan)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps_v: float | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss and its diagnostics.

        V_clip = clip(V, V_old - eps_v, V_old + eps_v)
        loss   = 0.5 * masked_mean( max((V - R)^2, (V_clip - R)^2) )

    Like the policy loss it is pessimistic: a prediction that moved more than eps_v from the rollout's
    value gets no gradient when the move made the clipped error the larger one. ``clip_eps_v=None``
    turns clipping off: 0.5 * masked_mean((V - R)^2). Stats (detached): ``loss``,
    ``value_clip_fraction`` (fraction of real tokens where the clipped error is strictly larger),
    ``explained_variance`` of ``values`` w.r.t. ``returns``, ``value_mean``. ``old_values`` and
    ``returns`` are detached.
    """
    if clip_eps_v is not None and clip_eps_v <= 0:
        raise ValueError(f"clip_eps_v must be > 0 or None; got {clip_eps_v}")
    m = _bool_mask(values, mask, "values")
    _bool_mask(old_values, m, "old_values")
    _bool_mask(returns, m, "returns")
    v = _zero_masked(values, m)
    v_old = _zero_masked(old_values.detach(), m)
    ret = _zero_masked(returns.detach(), m)
    unclipped = (v - ret) ** 2
    if clip_eps_v is None:
        per_token = unclipped
        clip_fraction = torch.zeros((), dtype=v.dtype, device=v.device)
    else:
        v_clipped = v_old + (v - v_old).clamp(-clip_eps_v, clip_eps_v)
        clipped = (v_clipped - ret) ** 2
        per_token = torch.maximum(unclipped, clipped)
        clip_fraction = masked_mean((clipped > unclipped).to(v.dtype).detach(), m)
    loss = 0.5 * masked_mean(per_token, m)
    stats = {
        "loss": loss.detach(),
        "value_clip_fraction": clip_fraction,
        "explained_variance": explained_variance(v, ret, m),
        "value_mean": masked_mean(v.detach(), m),
    }
    return loss, stats


# --------------------------------------------------------------------------------------------------------
# From logits
# --------------------------------------------------------------------------------------------------------


def _at_least_float32(logits: Tensor) -> Tensor:
    # bf16 / fp16 logits lose the small differences a log-prob or an entropy is made of.
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(z) along the last axis: H = logsumexp(z) - sum_i softmax(z)_i * z_i.

    Equal to -sum p log p but never forms log 0: a very peaked distribution gives ~0, not NaN, and large
    logits do not overflow (logsumexp and softmax both shift by the max). Logits must be finite (no
    -inf masking: 0 * -inf is NaN). Computed in at least float32. (..., V) -> (...).
    """
    z = _at_least_float32(logits)
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(z)[token] = z[token] - logsumexp(z): (..., V) logits and (...) tokens -> (...).

    ``logits[..., t, :]`` must be the scores FOR ``tokens[..., t]`` -- for a causal LM, shift first
    (logits[:, :-1] score tokens[:, 1:]). Gathers before normalizing, so no (..., V) log-softmax tensor
    is materialized. Computed in at least float32.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be tokens {tuple(tokens.shape)} plus a vocabulary axis"
        )
    z = _at_least_float32(logits)
    return z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


# --------------------------------------------------------------------------------------------------------
# Control: early stopping and the KL coefficient
# --------------------------------------------------------------------------------------------------------


def should_early_stop(approx_kl: float | Tensor, target_kl: float | None) -> bool:
    """True exactly when approx_kl > 1.5 * target_kl: stop the remaining PPO epochs on this rollout.

    ``approx_kl`` is the ``approx_kl`` stat of ``policy_loss`` (mean of old_logp - logp over the
    mini-batch). Equality does not stop. ``target_kl=None`` never stops. The comparison is in Python
    floats (a tensor is read back once: this is a host-side decision anyway).
    """
    if target_kl is None:
        return False
    if target_kl <= 0:
        raise ValueError(f"target_kl must be > 0 or None; got {target_kl}")
    return float(approx_kl) > EARLY_STOP_KL_FACTOR * target_kl


def _check_state(state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a checkpoint written under a different controller config: resuming would silently change it."""
    for key, value in expected.items():
        if state.get(key) != value:
            raise ValueError(
                f"KL controller state has {key}={state.get(key)!r} but this controller has {key}={value!r}; "
                "resume with the config the checkpoint was written with"
            )


class FixedKLController:
    """A constant KL coefficient beta (TRL PPO 0.05, DeepSpeed-Chat 0.1, OpenRLHF 0.01 without a target).

    Same interface as ``AdaptiveKLController`` so a trainer does not care which one it holds.
    """

    def __init__(self, init_beta: float) -> None:
        if not (math.isfinite(init_beta) and init_beta >= 0):
            raise ValueError(f"init_beta must be finite and >= 0; got {init_beta}")
        self.value = float(init_beta)

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        """No-op; returns beta."""
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state(state, {"kind": "fixed", "value": self.value})


class AdaptiveKLController:
    """Ziegler et al. (2019): steer beta so that the measured KL stays near a target.

        e    = clip(KL / target - 1, -0.2, +0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    ``n_steps`` is the number of samples (sequences) in the rollout just measured and ``horizon`` is in
    the same unit (Ziegler et al. and TRL: 10,000), so beta can change by at most 20% per ``horizon``
    samples. ``value`` is the current beta.
    """

    def __init__(self, init_beta: float, target: float, horizon: float) -> None:
        if not (math.isfinite(init_beta) and init_beta > 0):
            raise ValueError(
                f"init_beta must be finite and > 0 (a multiplicative update of 0 stays 0); got {init_beta}"
            )
        if not target > 0:
            raise ValueError(f"target must be > 0; got {target}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0; got {horizon}")
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        """Apply one update from the rollout's measured KL, in the unit of ``target`` (Ziegler et al.:
        nats per sequence: the per-token KL summed over a response, averaged over the batch). Returns beta.
        """
        kl = float(current_kl)
        if not math.isfinite(kl):
            # A NaN here would poison beta for the rest of the run and be written into the checkpoint.
            raise ValueError(f"current_kl must be finite; got {kl}")
        if n_steps <= 0:
            raise ValueError(f"n_steps must be > 0; got {n_steps}")
        error = min(max(kl / self.target - 1.0, -ADAPTIVE_KL_ERROR_CLIP), ADAPTIVE_KL_ERROR_CLIP)
        factor = 1.0 + error * n_steps / self.horizon
        if factor <= 0:
            raise ValueError(
                f"n_steps={n_steps} is so large against horizon={self.horizon} that beta would turn "
                f"non-positive (factor {factor}); raise the horizon"
            )
        self.value *= factor
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state(state, {"kind": "adaptive", "target": self.target, "horizon": self.horizon})
        self.value = float(state["value"])
