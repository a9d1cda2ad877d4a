"""Token-level (dense) rewards r_t, paid by the env on every step from token ids alone.

Protocol (see ``rewards/base.py``)::

    reward.step(input_ids, lengths, actions) -> (B,) float32

``input_ids`` (B, L) is prompt + completion so far, right-padded; ``lengths`` (B,) the valid
length of each row before ``actions`` (B,) is appended. ``step`` is vectorised over the batch: no
Python loop over rows, no decoding.

Called on texts (``reward(prompts, completions)``), a token-level reward returns the sum of its
per-token rewards over the completion: prompts are encoded with the tokenizer's defaults (special
tokens included, as ``tokenizer(prompt)`` does), completions without special tokens, and ``step``
is replayed one completion token at a time. This needs the ``tokenizer`` the env uses.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from textgym.rewards.base import BaseReward


def _check_step_args(
    input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    input_ids = np.asarray(input_ids)
    lengths = np.asarray(lengths, dtype=np.int64)
    actions = np.asarray(actions, dtype=np.int64)
    batch = input_ids.shape[0] if input_ids.ndim == 2 else -1
    if lengths.shape != (batch,) or actions.shape != (batch,):
        raise ValueError(
            f"step expects input_ids (B, L), lengths (B,), actions (B,); got {input_ids.shape}, "
            f"{lengths.shape}, {actions.shape}"
        )
    if (lengths < 0).any() or (lengths > input_ids.shape[1]).any():
        raise ValueError(f"lengths must be in [0, {input_ids.shape[1]}], got {lengths}")
    return input_ids, lengths, actions


class TokenLevelReward(BaseReward):
    """Base of token-level rewards: subclasses implement ``step``; ``__call__`` replays it.

    Args:
        tokenizer: the env's tokenizer (object, or path for ``AutoTokenizer``); only needed to
            call the reward on texts.
        trust_remote_code: let a tokenizer path run its own code; default False.
    """

    token_level = True

    def __init__(self, tokenizer: Any = None, trust_remote_code: bool = False) -> None:
        if isinstance(tokenizer, str | os.PathLike):
            from textgym.lm import load_tokenizer

            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer

    @abstractmethod
    def step(
        self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:  # (B,) float32
        """r_t for appending ``actions`` (B,) to ``input_ids`` (B, L) rows of ``lengths`` (B,)."""

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        if self.tokenizer is None:
            raise ValueError(
                f"token-level reward {self.name!r} needs tokenizer=... to score texts "
                "(step() works on token ids without one)"
            )
        p_ids = self.tokenizer(list(prompts))["input_ids"]
        c_ids = self.tokenizer(list(completions), add_special_tokens=False)["input_ids"]
        return self.replay(p_ids, c_ids)

    def replay(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> np.ndarray:  # (B,)
        """Sum of ``step`` over each completion's tokens, batched over rows.

        Args:
            prompt_ids: B prompt token lists.
            completion_ids: B completion token lists.

        Returns:
            (B,) float64 summed rewards.
        """
        batch = len(prompt_ids)
        p_len = np.array([len(p) for p in prompt_ids], dtype=np.int64)
        c_len = np.array([len(c) for c in completion_ids], dtype=np.int64)
        width = int((p_len + c_len).max(initial=0))
        ids = np.zeros((batch, max(width, 1)), dtype=np.int64)  # (B, L)
        for b in range(batch):
            ids[b, : p_len[b]] = prompt_ids[b]
            ids[b, p_len[b] : p_len[b] + c_len[b]] = completion_ids[b]
        total = np.zeros(batch, dtype=np.float64)
        rows = np.arange(batch)
        for t in range(int(c_len.max(initial=0))):
            live = t < c_len  # rows whose completion has a t-th token
            lengths = p_len + t
            actions = ids[rows, np.minimum(lengths, ids.shape[1] - 1)]
            r = self.step(ids[live], lengths[live], actions[live])
            total[live] += r
        return total


class BannedTokens(TokenLevelReward):
    """r_t = -penalty when the token a_t is in a banned set, else 0.

    Args:
        banned_ids: the banned token ids.
        penalty: the cost per banned token (>= 0).
        tokenizer, trust_remote_code: see ``TokenLevelReward``.
    """

    name = "banned_tokens"

    def __init__(
        self,
        banned_ids: Sequence[int],
        penalty: float = 1.0,
        tokenizer: Any = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(tokenizer, trust_remote_code)
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.banned_ids = np.unique(np.asarray(banned_ids, dtype=np.int64))
        self.penalty = float(penalty)

    def step(
        self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:  # (B,) float32
        """-penalty where ``actions`` is banned."""
        _, _, actions = _check_step_args(input_ids, lengths, actions)
        return (-self.penalty * np.isin(actions, self.banned_ids)).astype(np.float32)


class TokenRepetition(TokenLevelReward):
    """r_t = -penalty when a_t completes an n-gram of token ids already in the row, else 0.

    The row is prompt + completion so far (``step`` cannot tell them apart), so copying an n-gram
    of the prompt also costs; ``window`` limits the look-back to the last ``window`` tokens.

    Args:
        n: n-gram order (1: any repeated token; 3: a repeated trigram).
        penalty: the cost per repetition (>= 0).
        window: only n-grams starting within the last ``window`` tokens count (None: all).
        tokenizer, trust_remote_code: see ``TokenLevelReward``.
    """

    name = "token_repetition"

    def __init__(
        self,
        n: int = 3,
        penalty: float = 1.0,
        window: int | None = None,
        tokenizer: Any = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(tokenizer, trust_remote_code)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        if window is not None and window < n:
            raise ValueError(f"window must be >= n ({n}) or None, got {window}")
        self.n, self.penalty, self.window = n, float(penalty), window

    def repeated(
        self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:  # (B,) bool
        """Whether appending ``actions`` repeats an n-gram already in each row."""
        input_ids, lengths, actions = _check_step_args(input_ids, lengths, actions)
        batch, width = input_ids.shape
        n = self.n
        rows = np.arange(batch)
        seq = np.concatenate([input_ids, np.zeros((batch, 1), input_ids.dtype)], axis=1)  # (B, L+1)
        seq[rows, lengths] = actions
        if width + 1 < n:
            return np.zeros(batch, dtype=bool)
        grams = sliding_window_view(seq, n, axis=1)  # (B, L+2-n, n), gram k = seq[k:k+n]
        start_new = np.maximum(lengths + 1 - n, 0)  # (B,) start of the n-gram ending at a_t
        new = grams[rows, np.minimum(start_new, grams.shape[1] - 1)]  # (B, n)
        starts = np.arange(grams.shape[1])[None, :]  # (1, K)
        earlier = starts + n <= lengths[:, None]  # (B, K): gram lies inside the old prefix
        if self.window is not None:
            earlier &= starts >= (lengths - self.window)[:, None]
        same = (grams == new[:, None, :]).all(axis=-1)  # (B, K)
        return (same & earlier).any(axis=1) & (lengths + 1 >= n)

    def step(
        self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:  # (B,) float32
        """-penalty where the new token repeats an n-gram."""
        return (-self.penalty * self.repeated(input_ids, lengths, actions)).astype(np.float32)
