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

__all__ = ["last_logprobs"]


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


def _chunked(lm: LanguageModel, ids: Tensor, mask: Tensor, n: int, chunk: int) -> Tensor:
    out = lm._call(ids, mask, None, use_cache=False, logits_to_keep=1, output_hidden_states=True)
    hidden = out.hidden_states[-1]  # (B, L, H) after the final norm
    head = lm.model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"logprob_chunk needs an nn.Linear LM head, {type(lm.model).__name__} has "
            f"{type(head).__name__}: set logprob_chunk = None"
        )
    with lm.autocast(), torch.no_grad():
        last = F.linear(hidden[:, -1:], head.weight, head.bias).float()
    if not torch.allclose(last, out.logits[:, -1:].float(), rtol=1e-3, atol=1e-3):
        raise ValueError(
            f"{type(lm.model).__name__}'s logits are not lm_head(last hidden state) (scaled or "
            "soft-capped): set logprob_chunk = None"
        )
    targets = ids[:, -n:]
    states = hidden[:, -(n + 1) : -1]  # (B, n, H): position t - 1 predicts x_t
    parts = []
    with lm.autocast():
        for s in range(0, n, chunk):
            args = (states[:, s : s + chunk], targets[:, s : s + chunk], head.weight, head.bias)
            parts.append(checkpoint(_picked_logp, *args, use_reentrant=False))
    return torch.cat(parts, dim=1)  # (B, n)
