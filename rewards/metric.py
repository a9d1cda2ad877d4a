"""Reference-based text metrics: BLEU, chrF, TER (sacrebleu), ROUGE (rouge-score), METEOR (nltk).

Two kinds of function live here, and they are not interchangeable:

- **Rewards** (the classes; ``make("bleu")`` etc.) give one *sentence-level* score per completion,
  equal to the reference package's sentence-level function:
  ``BLEU`` = ``sacrebleu.sentence_bleu(y, refs).score / 100`` (sacrebleu's sentence defaults:
  ``smooth_method="exp"``, ``use_effective_order=True``, tokenizer ``13a``, case-sensitive);
  ``ChrF`` = ``sacrebleu.sentence_chrf(y, refs).score / 100``;
  ``TER`` = ``-sacrebleu.sentence_ter(y, refs).score / 100`` (negated so that higher is better);
  ``ROUGE`` = rouge-score's F-measure, the maximum over the references
  (``RougeScorer.score_multi``);
  ``METEOR`` = ``nltk.translate.meteor_score.meteor_score(refs, y)`` over whitespace tokens (nltk
  itself takes the maximum over references).
- **Corpus-level functions** (``corpus_*``) are for evaluation: ``corpus_bleu``, ``corpus_chrf``
  and ``corpus_ter`` are sacrebleu's corpus statistics (n-gram counts pooled over the corpus, *not*
  the mean of sentence scores) on sacrebleu's 0-100 scale; ``corpus_rouge`` and ``corpus_meteor``
  are the mean of the sentence scores (rouge-score and nltk have no pooled corpus statistic), in
  [0, 1].

``references`` is one sequence of reference strings per completion; their number may vary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from textgym.rewards.base import BaseReward, normalize_references

RougeType = Literal["rouge1", "rouge2", "rougeL", "rougeLsum"]
ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class _RefMetric(BaseReward):
    """A metric reward that needs references."""

    needs_references = True

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        assert references is not None  # BaseReward checked needs_references
        # RL batches often repeat a completion for one prompt (greedy or low-temperature
        # samples): each distinct (completion, references) pair is scored once.
        memo: dict[tuple[str, tuple[str, ...]], float] = {}
        out = np.empty(len(completions), dtype=np.float64)
        for i, key in enumerate(zip(completions, references, strict=True)):
            if key not in memo:
                memo[key] = self.sentence(*key)
            out[i] = memo[key]
        return out

    def sentence(self, completion: str, references: Sequence[str]) -> float:
        """Score one completion against its references."""
        raise NotImplementedError


class BLEU(_RefMetric):
    """Sentence BLEU / 100, in [0, 1]: ``sacrebleu.sentence_bleu(y, refs).score / 100``.

    Args:
        **kwargs: sacrebleu ``BLEU`` options; the defaults are ``sentence_bleu``'s
            (``smooth_method="exp"``, ``tokenize="13a"``, ``lowercase=False``,
            ``effective_order=True``).
    """

    name = "bleu"

    def __init__(self, **kwargs: Any) -> None:
        from sacrebleu.metrics import BLEU as SacreBLEU

        # sentence_bleu builds this same object on every call; building it once is the speed-up.
        self.metric = SacreBLEU(**{"effective_order": True, **kwargs})

    def sentence(self, completion: str, references: Sequence[str]) -> float:
        """BLEU of one completion, in [0, 1]."""
        return float(self.metric.sentence_score(completion, list(references)).score) / 100.0


class ChrF(_RefMetric):
    """Sentence chrF / 100, in [0, 1]: ``sacrebleu.sentence_chrf(y, refs).score / 100``.

    Args:
        **kwargs: sacrebleu ``CHRF`` options (``word_order=2`` gives chrF++).
    """

    name = "chrf"

    def __init__(self, **kwargs: Any) -> None:
        from sacrebleu.metrics import CHRF

        self.metric = CHRF(**kwargs)

    def sentence(self, completion: str, references: Sequence[str]) -> float:
        """chrF of one completion, in [0, 1]."""
        return float(self.metric.sentence_score(completion, list(references)).score) / 100.0


class TER(_RefMetric):
    """Negated sentence TER / 100: ``-sacrebleu.sentence_ter(y, refs).score / 100``, in (-inf, 0].

    TER is an edit rate (lower is better, and it can exceed 1), hence the sign.

    Args:
        **kwargs: sacrebleu ``TER`` options (``normalized``, ``no_punct``, ``case_sensitive``...).
    """

    name = "ter"

    def __init__(self, **kwargs: Any) -> None:
        from sacrebleu.metrics import TER as SacreTER

        self.metric = SacreTER(**kwargs)

    def sentence(self, completion: str, references: Sequence[str]) -> float:
        """Negated TER of one completion."""
        return -float(self.metric.sentence_score(completion, list(references)).score) / 100.0


class ROUGE(_RefMetric):
    """ROUGE-1/2/L/Lsum F-measure (rouge-score), the maximum over the references, in [0, 1].

    rouge-score's default tokenizer lower-cases and keeps only ``[a-z0-9]`` runs, so text in other
    scripts scores 0 unless a ``tokenizer`` is given. ``rougeLsum`` splits summaries into sentences
    on newlines.

    Args:
        rouge_type: ``"rouge1"``, ``"rouge2"``, ``"rougeL"`` or ``"rougeLsum"``.
        use_stemmer: Porter-stem words first (rouge-score's default: False).
        measure: ``"fmeasure"`` (default), ``"precision"`` or ``"recall"``.
        tokenizer: an object with ``tokenize(text) -> list[str]`` (rouge-score's option).
    """

    def __init__(
        self,
        rouge_type: RougeType = "rougeL",
        use_stemmer: bool = False,
        measure: Literal["fmeasure", "precision", "recall"] = "fmeasure",
        tokenizer: Any = None,
    ) -> None:
        if rouge_type not in ROUGE_TYPES:
            raise ValueError(f"rouge_type must be one of {ROUGE_TYPES}, got {rouge_type!r}")
        if measure not in ("fmeasure", "precision", "recall"):
            raise ValueError(f"measure must be fmeasure, precision or recall, got {measure!r}")
        from rouge_score.rouge_scorer import RougeScorer

        self.name = rouge_type
        self.rouge_type = rouge_type
        self.measure = measure
        self.scorer = RougeScorer([rouge_type], use_stemmer=use_stemmer, tokenizer=tokenizer)

    def sentence(self, completion: str, references: Sequence[str]) -> float:
        """ROUGE of one completion: the best reference by F-measure (``score_multi``)."""
        score = self.scorer.score_multi(list(references), completion)[self.rouge_type]
        return float(getattr(score, self.measure))


def _tokens(text: str) -> list[str]:
    return text.split()


class _CachedStemmer:
    """nltk's default METEOR stemmer (``PorterStemmer()``), memoised: same stems, paid once."""

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self._stemmer = PorterStemmer()
        self._memo: dict[str, str] = {}

    def stem(self, word: str) -> str:
        """Porter stem of ``word``."""
        out = self._memo.get(word)
        if out is None:
            out = self._memo[word] = self._stemmer.stem(word)
        return out


class _CachedWordNet:
    """Memoises ``synsets(word)``, the WordNet call METEOR makes for every hypothesis word."""

    def __init__(self, wordnet: Any) -> None:
        self._wordnet = wordnet
        self._memo: dict[str, list[Any]] = {}

    def synsets(self, word: str) -> list[Any]:
        """WordNet synsets of ``word`` (all parts of speech)."""
        out = self._memo.get(word)
        if out is None:
            out = self._memo[word] = self._wordnet.synsets(word)
        return out


class METEOR(_RefMetric):
    """METEOR (nltk ``meteor_score``) over whitespace tokens, in [0, 1].

    nltk lower-cases, matches exact words, Porter stems and WordNet synonyms, and returns the
    maximum over the references. Needs WordNet 3.0 for nltk: see ``textgym.rewards.wordnet``.

    Args:
        alpha: nltk's alpha (0.9).
        beta: nltk's beta (3.0).
        gamma: nltk's gamma (0.5).
    """

    name = "meteor"

    def __init__(self, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> None:
        from textgym.rewards.wordnet import require

        require()  # fail at construction, naming the set-up command, not mid-training
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import meteor_score

        self._meteor = meteor_score
        self._wordnet = _CachedWordNet(wordnet)
        self._stemmer = _CachedStemmer()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def sentence(self, completion: str, references: Sequence[str]) -> float:
        """METEOR of one completion."""
        return float(
            self._meteor(
                [_tokens(r) for r in references],
                _tokens(completion),
                wordnet=self._wordnet,
                stemmer=self._stemmer,
                alpha=self.alpha,
                beta=self.beta,
                gamma=self.gamma,
            )
        )


def _refs(references: Sequence[Sequence[str]], n: int) -> list[tuple[str, ...]]:
    out = normalize_references(references, n, "corpus metric", required=True)
    assert out is not None
    return out


def _streams(refs: list[tuple[str, ...]]) -> Any:
    """Per-sentence reference sets -> sacrebleu's reference streams, None where a set is short.

    sacrebleu accepts None for a missing reference although its annotations say ``str``.
    """
    width = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


def corpus_bleu(
    completions: Sequence[str], references: Sequence[Sequence[str]], **kwargs: Any
) -> float:
    """sacrebleu's corpus BLEU (pooled n-gram statistics), on its 0-100 scale.

    Args:
        completions: N hypotheses.
        references: one sequence of references per hypothesis (their number may vary).
        **kwargs: ``sacrebleu.corpus_bleu`` options.
    """
    import sacrebleu

    refs = _refs(references, len(completions))
    return float(sacrebleu.corpus_bleu(list(completions), _streams(refs), **kwargs).score)


def corpus_chrf(
    completions: Sequence[str], references: Sequence[Sequence[str]], **kwargs: Any
) -> float:
    """sacrebleu's corpus chrF (pooled statistics), 0-100."""
    import sacrebleu

    refs = _refs(references, len(completions))
    return float(sacrebleu.corpus_chrf(list(completions), _streams(refs), **kwargs).score)


def corpus_ter(
    completions: Sequence[str], references: Sequence[Sequence[str]], **kwargs: Any
) -> float:
    """sacrebleu's corpus TER (total edits / total reference length), 0-100+, lower is better."""
    import sacrebleu

    refs = _refs(references, len(completions))
    return float(sacrebleu.corpus_ter(list(completions), _streams(refs), **kwargs).score)


def corpus_rouge(
    completions: Sequence[str],
    references: Sequence[Sequence[str]],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = False,
) -> dict[str, float]:
    """Mean over sentences of the ROUGE F-measure (best reference each), in [0, 1].

    Returns:
        rouge type -> mean F-measure.
    """
    refs = _refs(references, len(completions))
    out: dict[str, float] = {}
    for t in rouge_types:
        scores = ROUGE(t, use_stemmer=use_stemmer)(["" for _ in refs], list(completions), refs)  # type: ignore[arg-type]  # checked in ROUGE
        out[t] = float(np.mean(scores, dtype=np.float64))
    return out


def corpus_meteor(completions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over sentences of nltk's METEOR, in [0, 1]."""
    refs = _refs(references, len(completions))
    scores = METEOR()(["" for _ in refs], list(completions), refs)
    return float(np.mean(scores, dtype=np.float64))
