"""Losses for every form of feedback: rankings, ratings, thumbs up/down (pure functions).

Reward-model losses, on scores r = r_φ(x, y)::

    Plackett-Luce (rankings of K, best first; Plackett 1975, Luce 1959):
        L = -(1/N)·Σ_n Σ_{k=1}^{K_n - 1} log( exp(r_{n,k}) / Σ_{j=k}^{K_n} exp(r_{n,j}) )
        K = 2 is Bradley-Terry: -log σ(r_w - r_l).
    ratings, "regression": L = mean (r - ŷ)²,  ŷ = the rating mapped to [-1, 1] on its scale
    ratings, "ordinal" (cumulative logit, McCullagh 1980), thresholds θ_1 < ... < θ_{C-1}:
        P(y ≤ c) = σ(θ_c - r),  L = -mean log( P(y ≤ c) - P(y ≤ c - 1) ) at the observed class c
    thumbs (logistic): L = -mean[ u·log σ(r) + (1 - u)·log σ(-r) ],  u = 1 for a thumb up

Policy losses, on h = log π_θ(y|x) - log π_ref(y|x) summed over the completion's tokens::

    listwise DPO (Rafailov et al. 2023, Appendix A.3): Plackett-Luce on β·h of the K completions.
    KTO (Ethayarajh et al. 2024, arXiv:2402.01306, Eq. 7), unpaired y with a label desirable or not:
        z_0 = max(0, mean over mismatched pairs (x, y') of log π_θ(y'|x) - log π_ref(y'|x)),
              detached (its gradient is not taken)
        v = λ_D·σ(β(h - z_0))  (desirable),   λ_U·σ(β(z_0 - h))  (undesirable)
        L = mean(λ_y - v)

Symbols -> code: r -> scores | K -> list length (mask) | θ -> thresholds | u -> up | β -> beta |
h -> logratios | z_0 -> z0 | λ_D, λ_U -> desirable_weight, undesirable_weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kto_loss",
    "kto_reference_point",
    "listwise_dpo_loss",
    "ordinal_loss",
    "plackett_luce_loss",
    "rating_targets",
    "regression_loss",
    "thumbs_loss",
]


def plackett_luce_loss(
    scores: Tensor,  # (N, K) r of each list's items, best first
    mask: Tensor | None = None,  # (N, K) 1 = an item (a list of K_n < K is padded at the end)
) -> Tensor:  # ()
    """Mean over lists of -log P_PL(order | scores); equals Bradley-Terry for K = 2."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (N, K) with K >= 2, got {tuple(scores.shape)}")
    m = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    if mask is not None and mask.shape != scores.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and scores {tuple(scores.shape)} differ")
    if (m.sum(1) < 2).any():
        raise ValueError("every ranking needs at least two items")
    s = scores.float().masked_fill(~m, -1e9)  # finite: no NaN gradients from the padding
    # log Σ_{j >= k} exp(s_j): a reversed cumulative logsumexp over the list.
    tail = torch.logcumsumexp(s.flip(1), dim=1).flip(1)  # (N, K)
    last = m.sum(1, keepdim=True) - 1  # the final item's position contributes log 1 = 0
    positions = torch.arange(s.shape[1], device=s.device)[None, :]
    terms = torch.where(m & (positions < last), s - tail, torch.zeros_like(s))
    return -(terms.sum(1)).mean()


def listwise_dpo_loss(
    logratios: Tensor,  # (N, K) h_k = log π_θ(y_k|x) - log π_ref(y_k|x), best first
    beta: float,
    mask: Tensor | None = None,  # (N, K)
) -> Tensor:  # ()
    """Plackett-Luce on the implicit rewards β·h (Rafailov et al. 2023, A.3); K = 2 is DPO."""
    return plackett_luce_loss(beta * logratios, mask)


def rating_targets(ratings: Tensor, low: float, high: float) -> Tensor:
    """A rating on [low, high] mapped linearly to [-1, 1] (the regression target ŷ)."""
    if not high > low:
        raise ValueError(f"a rating scale needs high > low, got [{low}, {high}]")
    if ((ratings < low) | (ratings > high)).any():
        raise ValueError(f"ratings outside their scale [{low}, {high}]: {ratings.tolist()}")
    return 2 * (ratings.float() - low) / (high - low) - 1


def regression_loss(scores: Tensor, targets: Tensor) -> Tensor:  # ()
    """Mean squared error between r and ŷ."""
    return F.mse_loss(scores.float(), targets.float())


def ordinal_loss(
    scores: Tensor,  # (N,) r
    classes: Tensor,  # (N,) int, the observed class c in 0..C-1
    thresholds: Tensor,  # (C-1,) θ, increasing
) -> Tensor:  # ()
    """Cumulative-logit negative log-likelihood: P(y ≤ c) = σ(θ_c - r)."""
    n_classes = thresholds.numel() + 1
    if classes.min() < 0 or classes.max() >= n_classes:
        raise ValueError(f"classes must lie in 0..{n_classes - 1}, got {classes.tolist()}")
    r = scores.float()[:, None]
    inf = torch.full((1,), float("inf"), device=r.device)
    bounds = torch.cat([-inf, thresholds.float(), inf])  # (C+1,) θ_0 = -inf, θ_C = +inf
    upper = torch.sigmoid(bounds[classes + 1][:, None] - r)  # P(y ≤ c)
    lower = torch.sigmoid(bounds[classes][:, None] - r)  # P(y ≤ c - 1)
    return -torch.log((upper - lower).clamp(min=1e-12)).mean()


def thumbs_loss(scores: Tensor, up: Tensor) -> Tensor:  # ()
    """Logistic loss of binary feedback: -mean[u·log σ(r) + (1 - u)·log σ(-r)]."""
    return F.binary_cross_entropy_with_logits(scores.float(), up.float())


def kto_reference_point(kl_logratios: Tensor) -> Tensor:  # ()
    """z_0 = max(0, mean of log π_θ(y'|x) - log π_ref(y'|x) over mismatched pairs), detached."""
    return kl_logratios.detach().float().mean().clamp(min=0)


def kto_loss(
    logratios: Tensor,  # (N,) h = log π_θ(y|x) - log π_ref(y|x)
    desirable: Tensor,  # (N,) bool, the thumb
    z0: Tensor,  # () the reference point (kto_reference_point)
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:  # ()
    """mean(λ_y - v(x, y)) of Ethayarajh et al. (Eq. 7) over the N examples."""
    h, d = logratios.float(), desirable.bool()
    z = z0.detach()
    loss = torch.where(
        d,
        desirable_weight * (1 - torch.sigmoid(beta * (h - z))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z - h))),
    )
    return loss.mean()
