"""Action masks (``info["action_mask"]``): which next tokens are allowed in each state.

The env reports the mask; it does not enforce it. An agent that samples under it records the
log-prob of the masked distribution it really sampled from (DESIGN.md, "Observation, action, info").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from textgym.envs.layout import to_left_padded

__all__ = ["ActionMaskProvider", "TopPMask", "VocabularyMask"]


class ActionMaskProvider(Protocol):
    """Allowed next tokens for a batch of states (``info["action_mask"]``).

    Called by the envs once per step with all B states; must return a fresh (B, V) bool array.
    """

    def __call__(
        self,
        input_ids: np.ndarray,  # (B, L) int64, right-padded prompt + completion so far
        lengths: np.ndarray,  # (B,) int64, valid tokens of each row
    ) -> np.ndarray:  # (B, V) bool, True = allowed
        """Return the mask of allowed next tokens."""
        ...


class VocabularyMask:
    """A fixed vocabulary restriction: only ``allowed_token_ids`` may be chosen.

    Include the EOS id to let episodes terminate. The env reports the mask; it does not enforce
    it (an agent samples under it and records the masked distribution's log-prob).

    Args:
        allowed_token_ids: the permitted token ids.
        vocab_size: V, the action space size.
    """

    def __init__(self, allowed_token_ids: Iterable[int], vocab_size: int) -> None:
        ids = np.asarray(list(allowed_token_ids), dtype=np.int64)
        if ids.size == 0:
            raise ValueError("VocabularyMask needs at least one allowed token id")
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise ValueError(f"allowed token ids {bad[:8].tolist()} are outside [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.row = np.zeros(vocab_size, dtype=bool)  # (V,)
        self.row[ids] = True

    def __call__(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:  # (B, V)
        """The same row for every state (a fresh array: callers keep what they get)."""
        return np.repeat(self.row[None, :], len(lengths), axis=0)


class TopPMask:
    """NLPO's action mask: the top-k / top-p tokens of a frozen mask model π_ψ.

    Ramamurthy et al. 2022 (arXiv:2210.01241) restrict the policy to the top-p tokens of a masking
    policy π_ψ, a copy of π_θ refreshed every μ updates. Refresh it by loading the policy's weights
    into ``self.model``. Each call runs one full forward of π_ψ over the B prefixes (no KV cache:
    the provider is stateless, so it survives autoresets); an agent that needs it faster computes
    the mask beside its policy, with its own cache.

    Args:
        model: a ``textgym.LanguageModel`` (anything with ``vocab_size``, ``tokenizer`` and
            ``step(ids, mask, cache) -> (logits, cache)``).
        top_p: nucleus mass in (0, 1].
        top_k: keep at most this many tokens (applied before ``top_p``); None for no limit.
    """

    def __init__(self, model: Any, top_p: float | None = 0.9, top_k: int | None = None) -> None:
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is None and top_k is None:
            raise ValueError("TopPMask needs top_p or top_k")
        self.model = model
        self.top_p = top_p
        self.top_k = top_k
        self.pad_token_id = int(model.tokenizer.pad_token_id)

    def __call__(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:  # (B, V)
        """Run π_ψ on the B prefixes and keep its top-k / top-p next tokens."""
        import torch

        from textgym.decoding import filter_logits

        L = input_ids.shape[1]
        right_mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int64)  # (B, L)
        ids, mask = to_left_padded(input_ids, right_mask, self.pad_token_id, trim=True)  # (B, P)
        device = getattr(self.model, "device", "cpu")
        with torch.inference_mode():
            logits, _ = self.model.step(
                torch.as_tensor(ids, device=device), torch.as_tensor(mask, device=device), None
            )  # (B, V)
            # The same filter the policy samples under (textgym.decoding), read as a mask.
            keep = torch.isfinite(filter_logits(logits, top_k=self.top_k, top_p=self.top_p))
        return keep.cpu().numpy()
