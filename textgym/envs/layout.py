"""The observation layout of both envs, and its conversion to the layout an LM generates from.

Observations are right-padded (valid prefix first) to L = max_prompt_tokens + max_new_tokens;
``LanguageModel.step`` takes left-padded batches, so that every row's last position is its newest
token. :func:`to_left_padded` is the one conversion (the rollout, DAgger's expert and
``TopPMask`` call it).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

__all__ = ["to_left_padded"]


def observation_space(vocab_size: int, seq_len: int) -> spaces.Dict:
    """``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``."""
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, vocab_size - 1, (seq_len,), np.int64),
            "attention_mask": spaces.Box(0, 1, (seq_len,), np.int64),
        }
    )


def to_left_padded(
    input_ids: np.ndarray,  # (B, L) right-padded
    attention_mask: np.ndarray,  # (B, L) 1 on the valid prefix
    pad_token_id: int,
    *,
    trim: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # (B, L) or (B, P), twice
    """Move each row's valid prefix to the right end (the layout an LM generates from).

    Observations are right-padded (valid prefix first); ``LanguageModel.step`` takes left-padded
    batches so that every row's last position is its newest token.

    Args:
        input_ids: (B, L) right-padded token ids.
        attention_mask: (B, L) 1 on each row's valid prefix, 0 after it.
        pad_token_id: the id written in the padding.
        trim: drop the columns that are padding in every row, keeping P = the longest row's
            length (what a model is fed: no position is spent on padding only).

    Returns:
        (ids, mask), both (B, L) (``trim``: (B, P)), left-padded.
    """
    ids = np.asarray(input_ids)
    mask = np.asarray(attention_mask)
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal (B, L)"
        )
    L = ids.shape[1]
    n = mask.sum(axis=1)  # (B,) valid tokens of each row
    width = int(n.max(initial=0)) if trim else L
    shift = width - n  # (B,) pads each row gets on the left
    cols = np.arange(width)[None, :] - shift[:, None]  # (B, width) source column of each column
    valid = cols >= 0
    out = np.take_along_axis(ids, np.where(valid, cols, 0), axis=1)
    out[~valid] = pad_token_id
    return out, valid.astype(mask.dtype)
