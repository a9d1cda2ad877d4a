"""CIDEr-D: Vedantam, Zitnick & Parikh 2015, "CIDEr: Consensus-based Image Description
Evaluation", arXiv:1411.5726, Sec. 3 (CIDEr) and Sec. 4.2 (the D variant).

For a candidate c, references S = {s_1..s_m} and n-gram orders n = 1..N (N = 4):

    g_k(s) = h_k(s) / sum_l h_l(s) * log(|I| / max(1, sum_p min(1, sum_q h_k(s_pq))))   (Eq. 1)
    CIDEr-D_n(c, S) = 10/m * sum_j exp(-(l(c) - l(s_j))^2 / (2 σ^2))
                      * <min(g^n(c), g^n(s_j)), g^n(s_j)> / (||g^n(c)|| ||g^n(s_j)||)
    CIDEr-D(c, S)   = 1/N * sum_n CIDEr-D_n(c, S)

h_k(s): count of n-gram ω_k in s; I: the reference corpus (one document per sample: its set of
references); l(·): length in words; σ = 6. The term-frequency normaliser of Eq. 1 cancels in the
cosine, so raw counts are used, as in the authors' code. The min() is the clipping that stops a
candidate from gaming the score by repeating confident words.

Symbols -> code: h_k -> ``Counter`` of n-grams | |I| -> ``len(corpus)`` | document frequency
sum_p min(1, ...) -> ``self.df`` | σ -> ``sigma`` | N -> ``n``.

Document frequencies come from a given reference corpus (``corpus=``: e.g. all reference sets of a
task's training split) so that a reward is the same whatever batch it is computed in; with
``corpus=None`` each call uses the references it is given, as the COCO evaluation code does for a
whole test set (``corpus_cider_d``). Scores match ``pycocoevalcap``'s ``CiderScorer`` (which is
CIDEr-D) on the same whitespace tokens: see ``tests/rewards/make_cider_fixture.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from textgym.rewards.base import BaseReward, normalize_references

NGram = tuple[str, ...]


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[NGram]:
    """h_k for every n-gram of orders 1..n in ``tokens``."""
    counts: Counter[NGram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def document_frequency(corpus: Sequence[Sequence[Sequence[str]]], n: int) -> Counter[NGram]:
    """For each n-gram, the number of documents (reference sets) whose references contain it.

    Args:
        corpus: per document, its references as token lists.
        n: the highest n-gram order.
    """
    df: Counter[NGram] = Counter()
    for refs in corpus:
        seen: set[NGram] = set()
        for ref in refs:
            seen.update(ngram_counts(ref, n))
        df.update(seen)
    return df


class _Vec:
    """g^n(s) for n = 1..N: TF-IDF weights per order, their norms, and the length l(s)."""

    __slots__ = ("length", "norms", "weights")

    def __init__(self, tokens: Sequence[str], n: int, df: Counter[NGram], log_size: float) -> None:
        self.weights: list[dict[NGram, float]] = [{} for _ in range(n)]
        for gram, tf in ngram_counts(tokens, n).items():
            # An n-gram absent from the corpus counts as seen once: idf = log |I|.
            self.weights[len(gram) - 1][gram] = tf * (log_size - math.log(max(1.0, df[gram])))
        self.norms = [math.sqrt(sum(w * w for w in ws.values())) for ws in self.weights]
        self.length = len(tokens)


def _similarity(c: _Vec, s: _Vec, sigma: float) -> float:
    """mean_n of the clipped, length-penalised cosine between g^n(c) and g^n(s)."""
    penalty = math.exp(-((c.length - s.length) ** 2) / (2.0 * sigma**2))
    total = 0.0
    for wc, ws, nc, ns in zip(c.weights, s.weights, c.norms, s.norms, strict=True):
        dot = sum(min(w, ws[g]) * ws[g] for g, w in wc.items() if g in ws)
        if nc != 0.0 and ns != 0.0:
            dot /= nc * ns
        total += dot * penalty
    return total / len(c.weights)


class CIDErD(BaseReward):
    """CIDEr-D of each completion against its references (x10 scale: typically 0 to ~10).

    Args:
        corpus: the reference corpus I for document frequencies: one sequence of reference
            strings per document. ``None``: use the references of each call.
        n: the highest n-gram order N (4).
        sigma: σ of the Gaussian length penalty (6).
        tokenize: text -> tokens; default whitespace split (COCO feeds PTB-tokenised,
            lower-cased text: tokenise the same way for COCO numbers).
    """

    name = "cider"
    needs_references = True

    def __init__(
        self,
        corpus: Sequence[Sequence[str]] | None = None,
        n: int = 4,
        sigma: float = 6.0,
        tokenize: Callable[[str], list[str]] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.n = n
        self.sigma = float(sigma)
        self.tokenize: Callable[[str], list[str]] = tokenize or str.split
        self.df: Counter[NGram] | None = None
        self.log_size = 0.0
        if corpus is not None:
            docs = normalize_references(corpus, len(corpus), "cider corpus", required=True)
            assert docs is not None
            if not docs:
                raise ValueError("corpus must hold at least one reference set")
            self.df, self.log_size = self._fit(docs)

    def _fit(self, docs: Sequence[Sequence[str]]) -> tuple[Counter[NGram], float]:
        tokenized = [[self.tokenize(r) for r in refs] for refs in docs]
        return document_frequency(tokenized, self.n), math.log(float(len(docs)))

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        assert references is not None  # BaseReward checked needs_references
        df, log_size = (self.df, self.log_size) if self.df is not None else self._fit(references)
        scores = np.empty(len(completions), dtype=np.float64)
        for i, (c, refs) in enumerate(zip(completions, references, strict=True)):
            vc = _Vec(self.tokenize(c), self.n, df, log_size)
            sims = [
                _similarity(vc, _Vec(self.tokenize(r), self.n, df, log_size), self.sigma)
                for r in refs
            ]
            scores[i] = 10.0 * sum(sims) / len(refs)
        return scores


def corpus_cider_d(
    completions: Sequence[str],
    references: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, np.ndarray]:
    """COCO-style corpus CIDEr-D: document frequencies from these references, mean of the scores.

    Args:
        completions: N candidates (whitespace-tokenised text).
        references: one sequence of references per candidate.
        n: highest n-gram order.
        sigma: length-penalty σ.

    Returns:
        (mean score, (N,) per-candidate scores), as ``pycocoevalcap``'s ``Cider.compute_score``.
    """
    refs = normalize_references(references, len(completions), "cider", required=True)
    assert refs is not None
    # _score directly: the float64 scores, not the float32 a reward returns.
    scores = CIDErD(corpus=refs, n=n, sigma=sigma)._score([], list(completions), refs)
    return float(np.mean(scores)), scores
