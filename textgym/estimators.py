"""The estimators every RL agent shares: masked moments, whitening, KL estimators, GAE.

All are pure functions of ``(B, T)`` tensors and a ``(B, T)`` mask of the actions that count (a
rollout's ``completion_mask``); none calls a model. Under data parallelism a ``reduce`` argument
sums over processes, so means and variances are those of the global batch.

- :func:`kl_k1` / :func:`kl_k3`: per-token estimators of KL(π_θ‖π_ref) on samples of π_θ (Schulman
  2020, "Approximating KL divergence"): k1 = log π_θ/π_ref (unbiased, high variance), k3 =
  (r - 1) - log r with r = π_ref/π_θ (unbiased, non-negative).
- :func:`kl_shaped_rewards`: r_t = r(x, y)·1[t = T] - β·k1_t (Ziegler et al. 2019, Eq. 2).
- :func:`gae`: generalised advantage estimation (Schulman et al. 2016) with bootstrapping at
  truncation.

A row's steps need not be contiguous: in a multi-turn rollout the environment's tokens sit between
the policy's turns with mask 0. Masked positions carry nothing: GAE runs over each row's steps in
order (the state after a turn's last action is the next turn's first state, s_{t+1} of the MDP),
and the sequence reward of :func:`kl_shaped_rewards` goes on the last step that counts.

Shapes: B batch, T completion length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "Reduce",
    "gae",
    "kl_k1",
    "kl_k3",
    "kl_shaped_rewards",
    "masked_mean",
    "masked_var",
    "whiten",
]

Reduce = Callable[[Tensor], Tensor]
"""Sums a tensor over data-parallel processes (identity in one process)."""


def masked_mean(
    x: Tensor, mask: Tensor, dim: int | None = None, reduce: Reduce | None = None
) -> Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over ``dim``, or all); ``reduce`` sums over processes."""
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    return total / count.clamp(min=1)


def masked_var(
    x: Tensor, mask: Tensor, unbiased: bool = True, reduce: Reduce | None = None
) -> Tensor:
    """Variance of ``x`` over the positions where ``mask`` is 1 (Bessel-corrected by default)."""
    mean = masked_mean(x, mask, reduce=reduce)
    var = masked_mean((x - mean) ** 2, mask, reduce=reduce)
    if unbiased:
        count = mask.sum() if reduce is None else reduce(mask.sum())
        var = var * count / (count - 1).clamp(min=1)
    return var


def whiten(
    x: Tensor,
    mask: Tensor | None = None,
    shift_mean: bool = True,
    reduce: Reduce | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """(x - mean) / std over the masked entries; masked-out entries come back as 0.

    ``shift_mean=False`` only rescales (keeps the sign of rewards). ``reduce`` makes the moments
    global across data-parallel processes, so a sharded batch whitens like the whole batch.
    """
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    mean = masked_mean(x, m, reduce=reduce)
    var = masked_var(x, m, reduce=reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def kl_k1(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k1 = log π_θ(a|s) - log π_ref(a|s): unbiased for KL(π_θ‖π_ref) under a ~ π_θ, can be < 0.

    Schulman, "Approximating KL divergence" (2020). Elementwise, any shape.
    """
    return logp - logp_ref


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k3 = (r - 1) - log r with r = π_ref/π_θ: unbiased under a ~ π_θ, always >= 0, lower variance.

    Schulman (2020). Elementwise, any shape.
    """
    log_ratio = logp_ref - logp
    return torch.expm1(log_ratio) - log_ratio  # expm1: exact near r = 1, where k3 ~ (log r)^2 / 2


def kl_shaped_rewards(
    score: Tensor, logp: Tensor, logp_ref: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """r_t = r(x, y)·1[t = T] - β·(log π_θ(a_t|s_t) - log π_ref(a_t|s_t)) (Ziegler 2019, Eq. 2).

    Args:
        score: ``(B,)`` sequence rewards, paid at each row's last valid step; or ``(B, T)`` dense
            rewards, added per step.
        logp: ``(B, T)`` behaviour log-probs log π_θ(a_t|s_t).
        logp_ref: ``(B, T)`` reference log-probs.
        mask: ``(B, T)`` 1 = a step of the episode.
        beta: β >= 0.

    Returns:
        ``(rewards, kl)``, both ``(B, T)``: the shaped rewards, and the per-token k1 KL that entered
        them (log this one, so that the logged KL is the penalised one).
    """
    kl = kl_k1(logp, logp_ref) * mask  # (B, T)
    if score.ndim == 1:
        last = _last_step(mask)  # (B,)
        paid = torch.zeros_like(kl).scatter(1, last[:, None], score[:, None].to(kl.dtype))
    else:
        paid = score.to(kl.dtype) * mask
    return paid - beta * kl, kl


def _last_step(mask: Tensor) -> Tensor:  # (B,)
    """Index of each row's last step where ``mask`` is 1 (0 for a row without one)."""
    t = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask > 0, t, -1).amax(-1).clamp(min=0)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    bootstrap_value: Tensor | None = None,
    terminated: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438, Eq. 16).

    δ_t = r_t + γ·V(s_{t+1}) - V(s_t),  A_t = Σ_l (γλ)^l δ_{t+l}. After a row's last step
    V(s_{t+1}) is ``bootstrap_value`` when the episode was truncated and 0 when it terminated
    (or when no bootstrap value is given).

    Args:
        rewards: ``(B, T)`` r_t.
        values: ``(B, T)`` V(s_t).
        mask: ``(B, T)`` 1 = a step of the episode. Steps need not be contiguous: masked positions
            between them (a multi-turn rollout's environment tokens) are skipped, so the step
            after t is the row's next step (its r and V there are ignored, as after the end).
        gamma, lam: γ and λ.
        bootstrap_value: ``(B,)`` V(s_T) after each row's last action.
        terminated: ``(B,)`` bool; rows that ended at EOS get no bootstrap. None = all truncated.

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, returns = A + V, 0 where masked.
    """
    # Each row's steps packed to a prefix (a stable sort: the identity when they already are),
    # the recursion run there, the results put back where the steps were.
    order = torch.sort((mask <= 0).to(torch.uint8), dim=1, stable=True).indices  # (B, T)
    advantages, returns = _gae_prefix(
        rewards.gather(1, order),
        values.gather(1, order),
        mask.gather(1, order),
        gamma,
        lam,
        bootstrap_value,
        terminated,
    )
    return (
        torch.zeros_like(advantages).scatter(1, order, advantages),
        torch.zeros_like(returns).scatter(1, order, returns),
    )


def _gae_prefix(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    bootstrap_value: Tensor | None,
    terminated: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """:func:`gae` where each row's steps are a prefix (its recursion)."""
    B, T = rewards.shape
    end = torch.zeros(B, dtype=values.dtype, device=values.device)
    if bootstrap_value is not None:
        end = bootstrap_value.to(values.dtype)
        if terminated is not None:
            end = torch.where(terminated.bool(), 0.0, end)
    last = mask.sum(-1).long() - 1  # (B,)
    is_last = torch.arange(T, device=values.device)[None, :] == last[:, None]  # (B, T)
    next_values = torch.cat([values[:, 1:], values.new_zeros(B, 1)], dim=1)  # (B, T)
    next_values = torch.where(is_last, end[:, None], next_values * mask)
    deltas = (rewards + gamma * next_values - values) * mask  # (B, T)
    advantages = torch.zeros_like(deltas)
    running = deltas.new_zeros(B)
    for t in reversed(range(T)):
        running = (deltas[:, t] + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask
