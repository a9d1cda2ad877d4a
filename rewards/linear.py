"""A reward linear in features: r(x, y) = c·wᵀΦ(x, y), e.g. the reward IRL recovers.

Φ is any :class:`textgym.features.FeatureMap` (``(prompts, completions) -> (B, K)`` with ``names``);
w holds one weight per feature name. The reward is sequence-level: the env pays it on the last
step (a token-level Φ = Σ_t γ^t φ_t is summed over the completion first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from textgym.rewards.base import BaseReward


class LinearReward(BaseReward):
    """r(x, y) = scale·wᵀΦ(x, y).

    Args:
        features: the feature map Φ (``textgym.features``: ``NgramCounts``, ``FunctionFeatures``,
            ``HiddenFeatures``, or any object with ``names`` and the batched ``__call__``).
        weights: w, K numbers in the order of ``features.names``, or a mapping name -> weight
            (missing names weigh 0).
        scale: c, multiplies every score.
        name: the reward's name.
    """

    def __init__(
        self,
        features: Any,
        weights: Sequence[float] | np.ndarray | Mapping[str, float],
        scale: float = 1.0,
        name: str = "linear",
    ) -> None:
        names = list(features.names)
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValueError(f"weights for unknown features {unknown}; features: {names}")
            weights = [float(weights.get(n, 0.0)) for n in names]
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(names),) or not np.isfinite(w).all():
            raise ValueError(
                f"weights must be {len(names)} finite numbers (one per feature), got shape "
                f"{w.shape}: {w[:8]}"
            )
        if not np.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        self.features, self.weights, self.scale, self.name = features, w, float(scale), name

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        phi = np.asarray(self.features(prompts, completions), dtype=np.float64)  # (B, K)
        if phi.shape != (len(completions), len(self.weights)):
            raise ValueError(
                f"reward {self.name!r}: features returned shape {phi.shape}, expected "
                f"({len(completions)}, {len(self.weights)})"
            )
        return self.scale * (phi @ self.weights)

    def __repr__(self) -> str:
        top = np.argsort(-np.abs(self.weights))[:4]
        shown = ", ".join(f"{self.features.names[i]!r}: {self.weights[i]:.3g}" for i in top)
        return f"LinearReward(name={self.name!r}, scale={self.scale:g}, w={{{shown}, ...}})"
