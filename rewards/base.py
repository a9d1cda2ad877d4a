"""The reward protocol every textgym reward keeps.

Sequence-level rewards (the default) score whole completions, batched::

    reward(prompts, completions, references=None) -> np.ndarray  # (B,) float32

``references`` is one tuple of reference strings per prompt (several references are allowed).
A reward that needs references says so with ``needs_references = True``.

Token-level (dense) rewards set ``token_level = True`` and are paid by the env on every step, from
token ids alone so that nothing is decoded on the hot path::

    reward.step(input_ids, lengths, actions) -> np.ndarray  # (B,) float32

where ``input_ids`` (B, L) holds prompt + completion so far (right-padded), ``lengths`` (B,) the
valid length of each row *before* ``actions`` (B,) is appended. Calling a token-level reward on
whole texts (``__call__``) returns the sum of its per-token rewards, so every reward can also be
used for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

References = Sequence[Sequence[str]]


@runtime_checkable
class Reward(Protocol):
    """A batched sequence-level reward r(x, y)."""

    name: str
    token_level: bool
    needs_references: bool

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> np.ndarray:  # (B,) float32
        ...
