"""Feature maps φ(s, a) of the token MDP, for rewards linear in features (R = wᵀφ, e.g. IRL).

A feature map turns B (prompt, completion) texts into their feature counts, one protocol::

    features(prompts, completions) -> np.ndarray  # (B, K) float64: Φ(x, y) = Σ_t γ^t φ(s_t, a_t)
    features.names                                 # K names

A *token-level* map (``token_level = True``) also gives the per-step features from token ids,
``steps(completion_ids, mask) -> (B, T, K)`` (φ(s_t, a_t), undiscounted), with its discount
``gamma``; its ``__call__`` is :func:`discounted_sum` of them over the tokenised completion. An
agent uses ``steps`` to pay r_t = γ^t wᵀφ(s_t, a_t) on the tokens really sampled (dense credit), and
``__call__`` wherever only texts exist (demonstrations, an env's reward).

Three maps: :class:`NgramCounts` (counts of given token n-grams, token-level),
:class:`FunctionFeatures` (a user callable returning the task's own signals) and
:class:`HiddenFeatures` (the mean-pooled last hidden state of a frozen LM over the completion).

Completions are tokenised on their own without special tokens, as
``textgym.agents.bc.Demonstrations.from_pairs`` does; t counts completion tokens from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from textgym.lm import LanguageModel
from textgym.training import frozen_copy

__all__ = [
    "FeatureMap",
    "FunctionFeatures",
    "HiddenFeatures",
    "NgramCounts",
    "TokenFeatureMap",
    "check_features",
    "discounted_sum",
]


@runtime_checkable
class FeatureMap(Protocol):
    """Φ(x, y) for B texts: ``(prompts, completions) -> (B, K)``, with ``names`` (K)."""

    names: Sequence[str]

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class TokenFeatureMap(FeatureMap, Protocol):
    """A feature map that also gives φ(s_t, a_t) per step from token ids."""

    token_level: bool
    gamma: float

    def steps(self, completion_ids: Tensor, mask: Tensor) -> Tensor: ...


def check_features(out: object, names: Sequence[str], batch: int, what: str) -> np.ndarray:
    """``out`` as a finite (B, K) float64 array, or a ``ValueError`` naming ``what`` and shapes."""
    arr = np.asarray(out, dtype=np.float64)
    if arr.shape != (batch, len(names)):
        raise ValueError(
            f"{what} returned shape {arr.shape}, expected ({batch}, {len(names)}): one row of "
            f"{len(names)} features per completion"
        )
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
        raise ValueError(f"{what} returned non-finite features for completion {row}: {arr[row]}")
    return arr


def discounted_sum(steps: Tensor, gamma: float) -> Tensor:  # (B, K)
    """Σ_t γ^t φ_t over the T axis of ``steps`` (B, T, K) (masked steps hold 0)."""
    t = torch.arange(steps.shape[1], device=steps.device, dtype=torch.float64)
    return (steps.double() * (gamma**t)[None, :, None]).sum(1)


def _pad_rows(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    T = max([len(r) for r in rows] + [1])
    ids = torch.full((len(rows), T), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(rows), T)  # (B, T)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1.0
    return ids, mask


class NgramCounts:
    """Discounted counts of token n-grams: φ_k(s_t, a_t) = 1 when the completion's tokens ending
    at a_t are entry k of ``vocabulary`` (an n-gram counts where its last token is sampled, and
    only inside the completion).

    Args:
        tokenizer: the env's tokenizer (or a ``LanguageModel``, whose tokenizer is used).
        vocabulary: K strings; each is tokenised without special tokens into its n-gram (a word
            such as ``" great"`` is one token of a byte-level BPE).
        gamma: γ of Φ = Σ_t γ^t φ_t (1: plain counts).
    """

    token_level = True

    def __init__(self, tokenizer: Any, vocabulary: Sequence[str], gamma: float = 1.0) -> None:
        self.tokenizer = tokenizer.tokenizer if isinstance(tokenizer, LanguageModel) else tokenizer
        if isinstance(vocabulary, str) or not vocabulary:
            raise ValueError(f"vocabulary must be a non-empty list of strings, got {vocabulary!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.names, self.gamma = list(vocabulary), float(gamma)
        self.ngrams = [self._ids(entry) for entry in vocabulary]
        for entry, ids in zip(vocabulary, self.ngrams, strict=True):
            if not ids:
                raise ValueError(f"vocabulary entry {entry!r} encodes to no tokens")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def steps(self, completion_ids: Tensor, mask: Tensor) -> Tensor:  # (B, T, K)
        """φ(s_t, a_t) of right-padded completions (B, T) with their mask (B, T), float32."""
        B, T = completion_ids.shape
        valid = mask > 0  # (B, T)
        out = torch.zeros(B, T, len(self.ngrams), device=completion_ids.device)  # (B, T, K)
        for k, gram in enumerate(self.ngrams):
            n = len(gram)
            if n > T:
                continue
            hit = valid[:, n - 1 :].clone()  # (B, T - n + 1) windows ending at t = n - 1 ...
            for j, token in enumerate(gram):  # window position j holds the token at t - n + 1 + j
                hit &= completion_ids[:, j : T - n + 1 + j] == token
            out[:, n - 1 :, k] = hit.float()
        return out

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:  # (B, K)
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask = _pad_rows([self._ids(c) for c in completions], pad)
        return discounted_sum(self.steps(ids, mask), self.gamma).numpy()


class FunctionFeatures:
    """Φ from a callable returning the task's own signals, ``fn(prompts, completions) -> (B, K)``.

    Args:
        fn: the batched feature function.
        names: the K feature names (its output is checked against them).
    """

    token_level = False

    def __init__(
        self, fn: Callable[[Sequence[str], Sequence[str]], Any], names: Sequence[str]
    ) -> None:
        if isinstance(names, str) or not names:
            raise ValueError(f"names must be a non-empty list of feature names, got {names!r}")
        self.fn, self.names = fn, list(names)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:  # (B, K)
        what = f"feature function {getattr(self.fn, '__name__', self.fn)!r}"
        return check_features(self.fn(prompts, completions), self.names, len(completions), what)


class HiddenFeatures:
    """Φ(x, y) = mean over the completion's tokens of a frozen LM's last hidden state (after the
    final norm), the prompt as context: K = H features.

    Args:
        lm: the LM trunk; a frozen copy is taken, so training ``lm`` afterwards changes nothing.
        batch_size: rows per forward pass.
    """

    token_level = False

    def __init__(self, lm: LanguageModel, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lm, self.batch_size = frozen_copy(lm), batch_size
        self.names = [f"h{i}" for i in range(int(self.lm.model.config.hidden_size))]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:  # (B, H)
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        out = []
        tok = self.lm.tokenizer
        for start in range(0, len(prompts), self.batch_size):
            p_ids, p_mask = self.lm.encode(list(prompts[start : start + self.batch_size]))  # (b, P)
            chunk = completions[start : start + self.batch_size]
            rows = [tok(c, add_special_tokens=False)["input_ids"] for c in chunk]
            c_ids, c_mask = (x.to(self.lm.device) for x in _pad_rows(rows, self.lm.pad_token_id))
            ids = torch.cat([p_ids, c_ids], 1)  # (b, L)
            attention = torch.cat([p_mask, c_mask.long()], 1)  # (b, L)
            with self.lm.autocast():
                hidden = self.lm.forward_with_hidden(ids, attention)[1]  # (b, L, H)
            h = hidden[:, p_ids.shape[1] :].float()  # (b, T, H) the completion's states
            pooled = (h * c_mask[..., None]).sum(1) / c_mask.sum(1, keepdim=True).clamp(min=1)
            out.append(pooled.double().cpu())  # (b, H); an empty completion pools to 0
        return torch.cat(out).numpy()
