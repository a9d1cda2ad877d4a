"""The distribution really sampled from: pure functions over logits (no model calls).

:func:`filter_logits` applies the allowed-token mask, then temperature, then top-k, then top-p
(the order of ``transformers``' processors and warpers); :func:`sample` draws one token per row by
inverting the cumulative distribution with one uniform per row from the caller's generator (drawn
for the whole batch when finished rows were compacted away, so that the other rows' draws stay);
:func:`check_finite_logits` refuses NaN or infinite logits instead of drawing token V.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_finite_logits", "filter_logits", "sample"]

_NUCLEUS_START = 128
"""Top-p first looks at this many top tokens and widens only if their mass is below p: a full sort
of a (64, 8192) batch took ~20x a top-k on this CPU, and trained models have small nuclei."""


def _check_filter_args(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    mask: Tensor | None,
) -> None:
    if not logits.is_floating_point() or logits.ndim < 1:
        raise ValueError(
            f"logits must be a floating tensor (..., V), got {logits.dtype} of shape "
            f"{tuple(logits.shape)}"
        )
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and temperature > 0
    ):
        raise ValueError(f"temperature must be a float > 0, got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = allowed), got {mask.dtype}")
        try:
            shape = torch.broadcast_shapes(mask.shape, logits.shape)
        except RuntimeError:
            shape = None
        if shape != logits.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to logits "
                f"{tuple(logits.shape)}"
            )


def _nucleus(x: Tensor, top_p: float, sorted_top: Tensor | None) -> Tensor:
    """Top-p on (..., V) logits; ``sorted_top`` = the top-k values (descending) when known."""
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (..., 1)
    V = x.shape[-1]
    k = min(V, _NUCLEUS_START)
    while True:
        # After top-k every other token is -inf: its sorted values are all the candidates.
        values = x.topk(k, dim=-1).values if sorted_top is None else sorted_top  # (..., k)
        probs = (values - lse).exp()  # (..., k)
        cum = probs.cumsum(-1)  # (..., k)
        # Widen until every row's candidates hold mass >= p (any token past them is then out).
        if sorted_top is not None or k == V or bool((cum[..., -1] >= top_p).all()):
            break
        k = min(V, 8 * k)
    # Keep a token iff the mass strictly before it is < p: the smallest set with mass >= p
    # (the top token always has mass-before 0, so at least one survives).
    n_keep = ((cum - probs) < top_p).sum(-1, keepdim=True)  # (..., 1) >= 1
    threshold = values.gather(-1, n_keep - 1)  # (..., 1)
    return x.masked_fill(x < threshold, float("-inf"))


def _filter(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    mask: Tensor | None,
) -> Tensor:
    """:func:`filter_logits` without argument checks, for decoding loops that checked them once."""
    x = logits if mask is None else logits.masked_fill(~mask, float("-inf"))  # (..., V)
    if temperature != 1.0:
        x = x / temperature  # (..., V)
    sorted_top = None
    if top_k is not None and top_k < x.shape[-1]:
        sorted_top = x.topk(top_k, dim=-1).values  # (..., k) descending
        x = x.masked_fill(x < sorted_top[..., -1:], float("-inf"))  # (..., V)
    if top_p is not None and top_p < 1.0:
        x = _nucleus(x, top_p, sorted_top)  # (..., V)
    return x


def filter_logits(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """The logits of the distribution tokens are sampled from; filtered-out entries are -inf.

    Applied in this order: ``mask`` (allowed tokens), temperature, top-k, top-p. Top-p keeps the
    smallest set of most likely tokens whose probability (after the steps before it) is >= p,
    always at least one token; tokens tied with the last one kept are kept too. The input is not
    modified. ``log_softmax`` of the output gives the log-probs of what is really sampled.

    Args:
        logits: ``(..., V)`` float logits, e.g. ``(B, V)`` from :meth:`LanguageModel.step`.
        temperature: > 0; logits are divided by it.
        top_k: keep the k largest logits (None: all).
        top_p: in (0, 1]; nucleus mass (None or 1: all).
        mask: bool, broadcastable to ``logits`` (e.g. ``(V,)`` or ``(B, V)``); True = allowed.

    Returns:
        ``(..., V)`` filtered logits, same dtype.

    Raises:
        ValueError: a bad argument, or a mask that allows no token in some row.
    """
    _check_filter_args(logits, temperature, top_k, top_p, mask)
    if mask is not None and not bool(mask.any(-1).all()):
        raise ValueError("mask allows no token in some row: every row needs at least one True")
    return _filter(logits, temperature, top_k, top_p, mask)


def sample(
    logits: Tensor,
    *,
    generator: torch.Generator | None = None,
    rows: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Draw one token per row from ``softmax(logits)`` (e.g. the output of :func:`filter_logits`).

    Args:
        logits: ``(..., V)``; -inf entries are never drawn.
        generator: the source of randomness (on the logits' device); None uses torch's default.
        rows, batch_size: for a compacted batch (finished rows dropped): ``logits`` ``(n, V)``
            are the rows ``rows`` ``(n,)`` of a batch of ``batch_size``. The uniforms are drawn
            for all ``batch_size`` rows, as for the full batch, and those at ``rows`` are used,
            so each row draws what it would have drawn in the full batch.

    Returns:
        ``(...)`` int64 token ids.

    Raises:
        ValueError: ``rows`` without ``batch_size`` (or the reverse), or shapes that disagree.
        FloatingPointError: a row's logits are NaN or all -inf.
    """
    if rows is not None or batch_size is not None:
        if rows is None or batch_size is None:
            raise ValueError("rows and batch_size go together: pass both or neither")
        if logits.ndim != 2 or rows.shape != logits.shape[:1] or batch_size < logits.shape[0]:
            raise ValueError(
                f"rows {tuple(rows.shape)} must index the first dim of logits (n, V) "
                f"{tuple(logits.shape)}, with batch_size {batch_size} >= n"
            )
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (..., 1)
    check_finite_logits(torch.isfinite(lse))
    return _draw(logits, lse, generator, rows, batch_size)


def check_finite_logits(finite: Tensor, step: int | None = None) -> None:
    """Raise ``FloatingPointError`` unless every row's log-normaliser is finite.

    A NaN or infinite logit (a diverged model, ``lr=inf``) would otherwise be drawn as token id V,
    outside the vocabulary, or taken as argmax 0, and generation would go on with garbage.

    Args:
        finite: bool, one entry per row: ``isfinite(logsumexp(logits))``.
        step: the generation step, for the message.
    """
    if not bool(finite.all()):
        rows = (~finite).reshape(-1).nonzero().flatten()[:8].tolist()
        at = "" if step is None else f" at step {step}"
        raise FloatingPointError(
            f"the model's logits are not finite (NaN or inf){at} in rows {rows}: the model has "
            "diverged (check the learning rate and the loss) or its weights hold NaN"
        )


def _draw(
    logits: Tensor,
    lse: Tensor,
    generator: torch.Generator | None,
    rows: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Inverse-CDF sampling: one uniform per row, searched in the cumulative probabilities.

    With ``rows`` (``(n,)``, of a batch of ``batch_size``), ``batch_size`` uniforms are drawn and
    those at ``rows`` used: the generator advances as for the full batch and no row's uniform
    depends on which other rows are present.
    """
    lead = logits.shape[:-1]
    cum = (logits - lse).exp().cumsum(-1).reshape(-1, logits.shape[-1])  # (N, V)
    total = cum[:, -1:]  # (N, 1) ~1, exactly what the cumsum reached
    drawn = total.shape[0] if rows is None or batch_size is None else batch_size
    u = torch.rand((drawn, 1), generator=generator, device=logits.device, dtype=cum.dtype)
    if rows is not None:
        u = u[rows]  # (N, 1): the rows' own uniforms of the full batch's
    # Strictly below the total: token i is drawn iff cum[i-1] <= v < cum[i], so zero-probability
    # tokens (flat steps of cum) are never drawn, including a -inf tail after the last real token.
    v = torch.minimum(u * total, total.nextafter(torch.zeros_like(total)))  # (N, 1)
    return torch.searchsorted(cum, v, right=True).reshape(lead)  # (...)
