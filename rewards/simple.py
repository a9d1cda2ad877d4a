"""Simple text rewards: length, repetition, keyword inclusion, exact match.

All are pure Python over whitespace words unless stated, deterministic, and need no data files.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from textgym.rewards.base import BaseReward

_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits of any script; punctuation splits


class Length(BaseReward):
    """Closeness of the completion's length n to a target T: r = max(0, 1 - |n - T| / T).

    Range [0, 1], 1 exactly at the target, 0 at n = 0 or n >= 2T.

    Args:
        target: T, the wanted length (> 0) in ``unit``.
        unit: ``"words"`` (whitespace-separated, the default), ``"chars"``, or ``"tokens"`` (needs
            ``tokenizer``; special tokens are not counted).
        tokenizer: a Hugging Face tokenizer, or a path/name for ``AutoTokenizer``, for tokens.
        trust_remote_code: let a tokenizer path run its own code; default False.
    """

    name = "length"

    def __init__(
        self,
        target: float = 20,
        unit: Literal["words", "chars", "tokens"] = "words",
        tokenizer: Any = None,
        trust_remote_code: bool = False,
    ) -> None:
        if not target > 0:
            raise ValueError(f"target must be > 0, got {target}")
        if unit not in ("words", "chars", "tokens"):
            raise ValueError(f"unit must be 'words', 'chars' or 'tokens', got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("unit='tokens' needs a tokenizer (an object or a path)")
        if isinstance(tokenizer, str | os.PathLike):
            from textgym.lm import load_tokenizer

            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        self.target = float(target)
        self.unit = unit
        self.tokenizer = tokenizer

    def lengths(self, completions: Sequence[str]) -> np.ndarray:  # (B,)
        """Length of each completion in ``unit``."""
        if self.unit == "words":
            return np.array([len(c.split()) for c in completions], dtype=np.float64)
        if self.unit == "chars":
            return np.array([len(c) for c in completions], dtype=np.float64)
        ids = self.tokenizer(list(completions), add_special_tokens=False)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.float64)

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        n = self.lengths(completions)
        return np.maximum(0.0, 1.0 - np.abs(n - self.target) / self.target)


def repeated_fraction(words: Sequence[str], n: int) -> float:
    """Fraction of the n-grams of ``words`` that repeat an earlier one: 1 - distinct / total.

    Args:
        words: the tokens.
        n: the n-gram order.

    Returns:
        A value in [0, 1); 0 when there are no n-grams.
    """
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


class Repetition(BaseReward):
    """Repetition penalty: r = -(1 - distinct n-grams / n-grams) of the completion's words.

    Range [-1, 0]: 0 when no n-gram repeats (or the text is shorter than n words), towards -1 when
    one n-gram fills the text. Words are lower-cased whitespace tokens.

    Args:
        n: the n-gram order (1 penalises repeated words, 2 repeated bigrams, ...).
    """

    name = "repetition"

    def __init__(self, n: int = 2) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        return -np.array([repeated_fraction(c.lower().split(), self.n) for c in completions])


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    # Porter needs no data files, so the reward is the same on every machine; the cache makes
    # the stemmer's Python cost paid once per distinct word.

    return _porter().stem(word)


@lru_cache(maxsize=1)
def _porter() -> Any:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def words(text: str) -> list[str]:
    """Lower-cased words (runs of letters/digits of any script) of ``text``."""
    return _WORD.findall(text.lower())


_CONCEPT_LIST = re.compile(r"concepts?\s*:\s*(.*?)\s*(?:\.(?:\s|$)|\n|$)", re.IGNORECASE)


def prompt_concepts(prompt: str) -> list[str]:
    """Default concept extraction from a prompt.

    ``"Concepts: dog, frisbee, catch. Sentence:"`` (the built-in concepts task's template) gives
    the comma-separated items after ``Concepts:`` up to the first full stop or line end; any other
    prompt gives its distinct words in order (see ``words``).
    """
    found = _CONCEPT_LIST.search(prompt)
    if found:
        items = [c.strip() for c in found.group(1).split(",")]
        return [c for c in dict.fromkeys(items) if c]
    return list(dict.fromkeys(words(prompt)))


def _porter_forms(word: str) -> frozenset[str]:
    return frozenset((_stem(word),))


@lru_cache(maxsize=65536)
def _wordnet_forms(word: str) -> frozenset[str]:
    from nltk.corpus import wordnet as wn

    # _morphy lists every base form ("men" -> men, man); public morphy() returns only the first.
    analyse = getattr(wn, "_morphy", None)
    bases = {word}
    for pos in (wn.NOUN, wn.VERB, wn.ADJ):
        if analyse is not None:
            bases.update(analyse(word, pos))
        elif (base := wn.morphy(word, pos)) is not None:
            bases.add(base)
    return frozenset(_stem(b) for b in bases)


class KeywordInclusion(BaseReward):
    """Fraction of the concepts that appear in the completion, inflection-tolerant.

    For concept-to-sentence tasks (CommonGen): r = |{c : c appears in y}| / |concepts|, range
    [0, 1] (0 when there are no concepts). A concept appears when each of its words shares a
    normal form with a word of the completion. Normal forms are the Porter stem (so "dog"/"dogs"
    and "throw"/"throwing" match) and, with ``wordnet=True``, also the stems of WordNet's base
    forms (``morphy`` for nouns, verbs, adjectives), which adds irregular forms ("man"/"men",
    "catch"/"caught"). The default needs no data files, so the reward is the same everywhere.

    Where the concepts come from (``source``):
        ``"prompt"`` (default): ``extract(prompt)``; the default extractor (``prompt_concepts``)
        reads ``"Concepts: a, b, c."`` and otherwise takes every distinct word of the prompt;
        pass ``extract`` to parse another template.
        ``"references"``: the sample's references are the concepts, one per string.

    Args:
        source: ``"prompt"`` or ``"references"``.
        extract: ``prompt -> list of concepts`` for ``source="prompt"``.
        wordnet: also match irregular forms through WordNet (needs it set up for nltk; see
            ``textgym.rewards.wordnet``).
    """

    name = "keywords"

    def __init__(
        self,
        source: Literal["prompt", "references"] = "prompt",
        extract: Callable[[str], list[str]] | None = None,
        wordnet: bool = False,
    ) -> None:
        if source not in ("prompt", "references"):
            raise ValueError(f"source must be 'prompt' or 'references', got {source!r}")
        if wordnet:
            from textgym.rewards.wordnet import require

            require()
        self.source = source
        self.extract = extract or prompt_concepts
        self.needs_references = source == "references"
        self.forms = _wordnet_forms if wordnet else _porter_forms

    def coverage(self, concepts: Sequence[str], completion: str) -> float:
        """Fraction of ``concepts`` present in ``completion`` (0.0 when there are none)."""
        present: set[str] = set()
        for w in words(completion):
            present |= self.forms(w)
        concept_words = [cw for cw in (words(c) for c in concepts) if cw]
        if not concept_words:
            return 0.0
        hits = sum(all(self.forms(w) & present for w in cw) for cw in concept_words)
        return hits / len(concept_words)

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        if self.source == "references":
            assert references is not None  # BaseReward checked needs_references
            concepts: list[Sequence[str]] = list(references)
        else:
            concepts = [self.extract(p) for p in prompts]
        return np.array([self.coverage(k, c) for k, c in zip(concepts, completions, strict=True)])


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = str.maketrans("", "", string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD answer normalisation: lower-case, drop punctuation and articles, collapse spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "squad": squad_normalize,
    "strip": lambda s: " ".join(s.split()),
    "none": lambda s: s,
}


class ExactMatch(BaseReward):
    """1.0 when the normalised completion equals a normalised reference, else 0.0.

    Args:
        normalize: ``"squad"`` (lower-case, no punctuation or articles, single spaces; the
            default), ``"strip"`` (whitespace collapsed only) or ``"none"``.
    """

    name = "exact_match"
    needs_references = True

    def __init__(self, normalize: Literal["squad", "strip", "none"] = "squad") -> None:
        if normalize not in _NORMALIZERS:
            raise ValueError(f"normalize must be one of {sorted(_NORMALIZERS)}, got {normalize!r}")
        self.normalize = normalize
        self._norm = _NORMALIZERS[normalize]

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        assert references is not None  # BaseReward checked needs_references
        texts = dict.fromkeys([*completions, *(r for refs in references for r in refs)])
        norm = {t: self._norm(t) for t in texts}
        return np.array(
            [
                float(any(norm[c] == norm[r] for r in refs))
                for c, refs in zip(completions, references, strict=True)
            ]
        )
