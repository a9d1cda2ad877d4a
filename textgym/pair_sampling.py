"""Preference pairs made by sampling a policy: on-policy pairs ranked by a reward or a preference
(iterative DPO), and synthetic pairs labelled by a gold reward (reward models and their studies).

Both sample K completions per prompt with the caller's generator, score them, and keep pairs whose
score margin clears a threshold; the pairs carry their token ids, so tokenisation is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from textgym.preference import PreferenceFn, PreferencePair, RewardFn, completion_ids

if TYPE_CHECKING:
    from textgym.lm import LanguageModel

__all__ = ["SampledPreferences", "sample_pairs", "synthetic_preferences"]


@dataclass
class SampledPreferences:
    """What ``sample_pairs`` made: the kept pairs and the scores of every candidate."""

    pairs: list[PreferencePair]
    scores: np.ndarray  # (N, K') float32: reward, or mean win rate, of each candidate
    texts: list[list[str]] = field(repr=False)  # N lists of K' candidate completions
    n_sampled: int = 0  # K, candidates sampled from the model (the gold reference, if any, is last)

    @property
    def sample_scores(self) -> np.ndarray:  # (N, K)
        """Scores of the model's own samples (the gold reference excluded)."""
        return self.scores[:, : self.n_sampled]


def _win_rates(
    preference: PreferenceFn, prompts: Sequence[str], texts: list[list[str]]
) -> np.ndarray:  # (N, K)
    """Mean P(y_j ≻ y_j' | x) of each candidate against the others, all pairs in one call."""
    n, k = len(texts), len(texts[0])
    ii, aa, bb = zip(
        *[(i, a, b) for i in range(n) for a in range(k) for b in range(a + 1, k)], strict=True
    )
    p = np.asarray(
        preference(
            [prompts[i] for i in ii],
            [texts[i][a] for i, a in zip(ii, aa, strict=True)],
            [texts[i][b] for i, b in zip(ii, bb, strict=True)],
        ),
        dtype=np.float64,
    )
    if p.shape != (len(ii),) or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(
            f"preference must return {len(ii)} probabilities in [0, 1], got shape {p.shape}, "
            f"range [{np.nanmin(p):.3g}, {np.nanmax(p):.3g}]"
        )
    wins = np.zeros((n, k))
    # P(b ≻ a) = 1 - P(a ≻ b): one call per unordered pair.
    np.add.at(wins, (np.array(ii), np.array(aa)), p)
    np.add.at(wins, (np.array(ii), np.array(bb)), 1.0 - p)
    return (wins / (k - 1)).astype(np.float32)


def sample_pairs(
    lm: LanguageModel,
    prompts: Sequence[str],
    *,
    k: int = 4,
    reward: RewardFn | None = None,
    preference: PreferenceFn | None = None,
    references: Sequence[Sequence[str]] | None = None,
    include_reference: bool = False,
    min_margin: float = 0.0,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> SampledPreferences:
    """Sample K completions per prompt, rank them, keep (best, worst) pairs with a large margin.

    Exactly one of ``reward`` (r(x, y), higher is better) or ``preference`` (P(y ≻ y' | x); each
    candidate is scored by its mean win rate against the other candidates) ranks the candidates.

    Args:
        lm: the policy π_t to sample from.
        prompts: N prompts x.
        k: K, completions sampled per prompt (≥ 2, or ≥ 1 with ``include_reference``).
        reward: batched reward ``(prompts, completions, references) -> (B,)``.
        preference: batched ``(prompts, a, b) -> (B,)`` probability that a is preferred to b.
        references: one sequence of gold completions per prompt, passed to the reward.
        include_reference: add the first gold completion as a candidate (DNO-Prct).
        min_margin: keep a pair only when score(y_w) - score(y_l) > min_margin.
        max_new_tokens: longest sampled completion.
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        batch_size: prompts sampled per ``generate`` call (each repeated K times).
        generator: torch RNG for sampling, for reproducible pairs.

    Returns:
        ``SampledPreferences`` with the kept pairs (their token ids and margins) and all scores.
    """
    from textgym.decoding import generate  # decoding imports lm; keep this module light

    if (reward is None) == (preference is None):
        raise ValueError("sample_pairs needs exactly one of reward= or preference=")
    if include_reference and references is None:
        raise ValueError("include_reference=True needs references")
    if k < (1 if include_reference else 2):
        raise ValueError(f"k must be >= 2 (>= 1 with include_reference), got {k}")
    if references is not None and len(references) != len(prompts):
        raise ValueError(f"{len(references)} reference sets for {len(prompts)} prompts")
    if not 0 < top_p <= 1 or not temperature > 0:
        raise ValueError(f"need 0 < top_p <= 1 and temperature > 0, got {top_p}, {temperature}")
    if not math.isfinite(min_margin):
        raise ValueError(f"min_margin must be finite, got {min_margin}")
    texts: list[list[str]] = []
    ids: list[list[tuple[int, ...]]] = []
    step = max(1, batch_size)
    for start in range(0, len(prompts), step):
        chunk = [p for p in prompts[start : start + step] for _ in range(k)]
        out = generate(
            lm,
            chunk,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=top_p if top_p < 1 else None,
            generator=generator,
        )
        comp = out.completion_ids.cpu()  # (B, T)
        mask = out.completion_mask.cpu().bool()  # (B, T)
        for i in range(0, len(chunk), k):
            texts.append(list(out.texts[i : i + k]))
            ids.append([tuple(comp[j][mask[j]].tolist()) for j in range(i, i + k)])
    if include_reference:
        assert references is not None
        gold = [refs[0] if not isinstance(refs, str) else refs for refs in references]
        gold_ids = completion_ids(lm, gold, add_eos=True)
        for i in range(len(prompts)):
            texts[i].append(gold[i])
            ids[i].append(tuple(gold_ids[i]))
    n_cand = len(texts[0])
    if reward is not None:
        flat_p = [p for p in prompts for _ in range(n_cand)]
        flat_r = None if references is None else [r for r in references for _ in range(n_cand)]
        flat_y = [y for row in texts for y in row]
        scores = np.asarray(reward(flat_p, flat_y, flat_r), dtype=np.float32).reshape(-1, n_cand)
    else:
        assert preference is not None
        scores = _win_rates(preference, prompts, texts)
    pairs: list[PreferencePair] = []
    for i, prompt in enumerate(prompts):
        w, lo = int(np.argmax(scores[i])), int(np.argmin(scores[i]))
        margin = float(scores[i, w] - scores[i, lo])
        if margin > min_margin and ids[i][w] != ids[i][lo]:
            pairs.append(
                PreferencePair(prompt, texts[i][w], texts[i][lo], ids[i][w], ids[i][lo], margin)
            )
    return SampledPreferences(pairs, scores, texts, n_sampled=k)


def synthetic_preferences(
    lm: LanguageModel,
    prompts: Sequence[str],
    gold: RewardFn,
    *,
    k: int = 4,
    pairs: Literal["all", "best_worst"] = "all",
    min_margin: float = 0.1,
    max_new_tokens: int = 32,
    references: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
) -> list[PreferencePair]:
    """Preference pairs of a policy's samples, labelled by a hidden gold reward.

    For each prompt, K completions are sampled from ``lm`` (temperature 1) with
    :func:`sample_pairs`, scored by ``gold`` and paired by it; a pair is kept when the gold margin
    exceeds ``min_margin``. Rafailov et al. 2023 (arXiv:2305.18290, §6.1) build their controlled
    sentiment set-up this way, with a sentiment classifier as the gold reward. Same seed, same
    pairs.

    Args:
        lm: the policy to sample from.
        prompts: N prompts x.
        gold: the gold reward, batched ``(prompts, completions, references) -> (B,)`` (any
            ``textgym.rewards.make(...)`` result; ``make`` also wraps a per-text callable).
        k: K, completions per prompt (>= 2).
        pairs: ``"all"``: every pair of a prompt's K candidates with a large margin (up to
            K(K-1)/2, as Ouyang et al. 2022 use all comparisons of a ranking); ``"best_worst"``:
            only (best, worst), as ``sample_pairs`` and iterative DPO keep.
        min_margin: keep a pair when gold(y_w) - gold(y_l) > this.
        max_new_tokens: longest completion.
        references: one sequence of references per prompt, passed to ``gold``.
        seed: seed of the sampling generator.

    Returns:
        The pairs, prompt by prompt, each with its gold ``margin``; ``"all"`` pairs hold text
        only, without token ids.
    """
    if pairs not in ("all", "best_worst"):
        raise ValueError(f"pairs must be 'all' or 'best_worst', got {pairs!r}")
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
    generator = torch.Generator(device=lm.device).manual_seed(seed)
    sampled = sample_pairs(
        lm,
        prompts,
        k=k,
        reward=gold,
        references=references,
        min_margin=min_margin,
        max_new_tokens=max_new_tokens,
        generator=generator,
    )
    if pairs == "best_worst":
        return [replace(p, chosen_ids=None, rejected_ids=None) for p in sampled.pairs]
    out: list[PreferencePair] = []
    for prompt, texts, scores in zip(prompts, sampled.texts, sampled.scores, strict=True):
        for a in range(len(texts)):
            for b in range(a + 1, len(texts)):
                w, lo = (a, b) if scores[a] >= scores[b] else (b, a)
                margin = float(scores[w] - scores[lo])
                if margin > min_margin and texts[w] != texts[lo] and texts[w] and texts[lo]:
                    out.append(PreferencePair(prompt, texts[w], texts[lo], margin=margin))
    return out
