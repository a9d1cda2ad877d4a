"""log p(x_t | x_<t) of the last n tokens of a batch: the one recipe behind
``LanguageModel.logprobs`` and ``sequence_logprob``, optionally in chunks of positions.

Full: one forward with the LM head on the n + 1 last positions, then gather - logsumexp in float32.
Chunked (``LanguageModel.logprob_chunk = c``): the forward stops at the last hidden state, and the
LM head, the float32 cast and the log-normaliser run on c positions at a time under activation
checkpointing, so neither the forward nor the backward ever holds the (B, n, V) logits: peak
memory grows with c·V instead of n·V (Liger-style chunking; it matters for 50k-token vocabularies).
The chunked path checks once per call that the model's logits are ``lm_head(last hidden state)``
(models that scale or soft-cap their logits are refused with an error naming the fix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from textgym.lm import LanguageModel

__all__ = ["checked_head", "head_logprobs", "last_logprobs"]


def _picked_logp(hidden: Tensor, targets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()  # (B, c, V), freed after the chunk
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, c)
    return picked - torch.logsumexp(logits, dim=-1)  # (B, c)


def last_logprobs(lm: LanguageModel, input_ids: Tensor, attention_mask: Tensor, n: int) -> Tensor:
    """log p(x_t | x_<t) for the last ``n`` positions (n < L); 0 where x_t or x_{t-1} is a pad.

    Returns:
        ``(B, n)`` float32.
    """
    targets = input_ids[:, -n:]  # (B, n)
    chunk = lm.logprob_chunk
    if chunk is None or chunk >= n:
        # Logits at L-n-1 .. L-2 predict tokens L-n .. L-1: the LM head runs on n + 1 positions.
        out = lm._call(input_ids, attention_mask, None, use_cache=False, logits_to_keep=n + 1)
        logits = out.logits[:, -(n + 1) : -1].float()  # (B, n, V)
        # gather - logsumexp == log_softmax at the target, without a (B, n, V) log_softmax
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, n)
        logp = picked - torch.logsumexp(logits, dim=-1)  # (B, n)
    else:
        logp = _chunked(lm, input_ids, attention_mask, n, chunk)
    # A token is predicted only from a real predecessor: the first token of a row (t = 0 or
    # right after left padding) has no context, and padding is no prediction at all.
    valid = attention_mask[:, -n:].bool() & attention_mask[:, -(n + 1) : -1].bool()  # (B, n)
    return torch.where(valid, logp, torch.zeros_like(logp))  # where, not *: never 0 * nan


def checked_head(lm: LanguageModel, hidden: Tensor, logits: Tensor, fix: str) -> torch.nn.Linear:
    """The LM head, once checked to give the model's own logits from the last hidden state.

    Args:
        lm: the model.
        hidden: ``(..., H)`` last hidden states (after the final norm) of a few positions.
        logits: ``(..., V)`` the model's logits at the same positions.
        fix: what the error tells the caller to do when the check fails.

    Raises:
        ValueError: the head is not an ``nn.Linear``, or the logits are scaled or soft-capped.
    """
    head = lm.model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"computing log-probs from hidden states needs an nn.Linear LM head, "
            f"{type(lm.model).__name__} has {type(head).__name__}: {fix}"
        )
    with lm.autocast(), torch.no_grad():
        mine = F.linear(hidden, head.weight, head.bias).float()
    if not torch.allclose(mine, logits.float(), rtol=1e-3, atol=1e-3):
        raise ValueError(
            f"{type(lm.model).__name__}'s logits are not lm_head(last hidden state) (scaled or "
            f"soft-capped): {fix}"
        )
    return head


def head_logprobs(
    lm: LanguageModel, head: torch.nn.Linear, states: Tensor, targets: Tensor, chunk: int | None
) -> Tensor:
    """log p(target | state) through the LM head: ``states[:, i]`` predicts ``targets[:, i]``.

    Args:
        lm: the model (for its autocast).
        head: its LM head, checked by :func:`checked_head`.
        states: ``(B, n, H)`` hidden states after the final norm.
        targets: ``(B, n)`` the token ids they predict.
        chunk: positions per head call under activation checkpointing; None: all at once (the
            ``(B, n, V)`` float32 logits are then kept for the backward, as a plain forward does).

    Returns:
        ``(B, n)`` float32.
    """
    n = targets.shape[1]
    with lm.autocast():
        if chunk is None or chunk >= n:
            return _picked_logp(states, targets, head.weight, head.bias)
        parts = [
            checkpoint(
                _picked_logp,
                states[:, s : s + chunk],
                targets[:, s : s + chunk],
                head.weight,
                head.bias,
                use_reentrant=False,
            )
            for s in range(0, n, chunk)
        ]
    return torch.cat(parts, dim=1)  # (B, n)


def _chunked(lm: LanguageModel, ids: Tensor, mask: Tensor, n: int, chunk: int) -> Tensor:
    hidden, last = lm.last_hidden(ids, mask)  # (B, L, H) after the final norm, (B, 1, V)
    head = checked_head(lm, hidden[:, -1:], last, "set logprob_chunk = None")
    # position t - 1 predicts x_t
    return head_logprobs(lm, head, hidden[:, -(n + 1) : -1], ids[:, -n:], chunk)  # (B, n)
