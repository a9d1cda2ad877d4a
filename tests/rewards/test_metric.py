"""Metric rewards equal their reference packages (sacrebleu, rouge-score, nltk, pycocoevalcap)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import textgym.rewards as R
from rouge_score.rouge_scorer import RougeScorer
from textgym.rewards.cider import CIDErD, corpus_cider_d
from textgym.rewards.metric import (
    corpus_bleu,
    corpus_chrf,
    corpus_meteor,
    corpus_rouge,
    corpus_ter,
)
from textgym.rewards.wordnet import SETUP_HINT, is_available

FIXTURE = Path(__file__).with_name("cider_fixture.json")

HAND: list[tuple[str, list[str]]] = [
    ("The cat sat on the mat.", ["The cat sat on the mat."]),
    ("the cat sat on the mat", ["A cat was sitting on the mat.", "There is a cat on the mat."]),
    ("", ["An empty completion."]),
    ("A completion with an empty reference set member", ["", "a completion"]),
    ("Der Bär läuft über die Straße.", ["Der Bär geht über die Straße.", "Ein Bär läuft."]),
    ("東京は大きい都市です。", ["東京は大都市です。"]),
    ("¡Hola! ¿Qué tal? 😀", ["hola que tal 😀"]),
    ("dogs running quickly in parks", ["the dog runs quickly in the park"]),
    ("one", ["one two three four five six seven eight"]),
    ("the the the the the the", ["the cat", "the dog", "the bird"]),
    ("First sentence.\nSecond sentence here.", ["First sentence.\nA second one here."]),
]

VOCAB = [
    "the",
    "a",
    "cat",
    "dog",
    "runs",
    "sat",
    "on",
    "mat",
    ".",
    ",",
    "!",
    "big",
    "small",
    "house",
    "street",
    "ran",
    "running",
    "walked",
    "walk",
    "car",
    "café",
    "Straße",
    "東京",
    "😀",
    "and",
    "of",
    "to",
    "in",
    "is",
    "was",
]


def random_cases(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = np.random.default_rng(seed)

    def sent(lo: int) -> str:
        return " ".join(rng.choice(VOCAB, size=int(rng.integers(lo, 16))).tolist())

    return [(sent(0), [sent(1) for _ in range(int(rng.integers(1, 5)))]) for _ in range(n)]


CASES = HAND + random_cases(50, seed=1)
HYPS = [h for h, _ in CASES]
REFS = [r for _, r in CASES]
PROMPTS = ["" for _ in CASES]


def test_bleu_equals_sacrebleu_sentence_bleu() -> None:
    got = R.make("bleu")(PROMPTS, HYPS, REFS)
    want = [sacrebleu.sentence_bleu(h, r).score / 100 for h, r in CASES]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[0] == pytest.approx(1.0)


def test_bleu_options_reach_sacrebleu() -> None:
    got = R.make("bleu", lowercase=True, smooth_method="floor")(PROMPTS, HYPS, REFS)
    want = [
        sacrebleu.sentence_bleu(h, r, lowercase=True, smooth_method="floor").score / 100
        for h, r in CASES
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_chrf_equals_sacrebleu_sentence_chrf() -> None:
    got = R.make("chrf")(PROMPTS, HYPS, REFS)
    want = [sacrebleu.sentence_chrf(h, r).score / 100 for h, r in CASES]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_ter_is_negated_sacrebleu_sentence_ter() -> None:
    got = R.make("ter")(PROMPTS, HYPS, REFS)
    want = [-sacrebleu.sentence_ter(h, r).score / 100 for h, r in CASES]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert (got <= 0).all()


@pytest.mark.parametrize("rouge_type", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
def test_rouge_is_max_over_references_of_rouge_score(rouge_type: str) -> None:
    scorer = RougeScorer([rouge_type])
    got = R.make(rouge_type)(PROMPTS, HYPS, REFS)
    want = [max(scorer.score(ref, h)[rouge_type].fmeasure for ref in refs) for h, refs in CASES]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_rouge_stemmer_option() -> None:
    got = R.make("rouge1", use_stemmer=True)(
        ["", ""], ["dogs running", "dog run"], [["dog runs"]] * 2
    )
    np.testing.assert_allclose(got, [1.0, 1.0])


@pytest.mark.skipif(not is_available(), reason=f"WordNet for nltk missing; set up: {SETUP_HINT}")
def test_meteor_equals_nltk() -> None:
    from nltk.translate.meteor_score import meteor_score

    got = R.make("meteor")(PROMPTS, HYPS, REFS)
    want = [meteor_score([r.split() for r in refs], h.split()) for h, refs in CASES]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # WordNet synonyms count: "fast" ~ "quick"
    meteor = R.make("meteor")
    syn, other = meteor(
        ["", ""], ["the cat is fast", "the cat is slow"], [["the cat is quick"]] * 2
    )
    assert syn > 0.99 > 0.8 > other


def test_meteor_missing_wordnet_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import textgym.rewards.wordnet as wn

    monkeypatch.setattr(wn, "is_available", lambda: False)
    with pytest.raises(LookupError, match="wordnet-base wordnet-sense-index"):
        R.make("meteor")


def test_corpus_functions_equal_sacrebleu_corpus() -> None:
    # sacrebleu's reference streams, None where a sample has fewer references.
    width = max(len(r) for r in REFS)
    streams = [[r[k] if k < len(r) else None for r in REFS] for k in range(width)]
    assert corpus_bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
    assert corpus_chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
    assert corpus_ter(HYPS, REFS) == pytest.approx(sacrebleu.corpus_ter(HYPS, streams).score)


def test_corpus_rouge_is_mean_of_sentence_scores() -> None:
    out = corpus_rouge(HYPS, REFS, rouge_types=["rouge1", "rougeL"])
    for t in ("rouge1", "rougeL"):
        assert out[t] == pytest.approx(float(np.mean(R.make(t)(PROMPTS, HYPS, REFS))), rel=1e-6)


@pytest.mark.skipif(not is_available(), reason=f"WordNet for nltk missing; set up: {SETUP_HINT}")
def test_corpus_meteor_is_mean_of_sentence_scores() -> None:
    want = float(np.mean(R.make("meteor")(PROMPTS[:10], HYPS[:10], REFS[:10])))
    assert corpus_meteor(HYPS[:10], REFS[:10]) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["bleu", "chrf", "ter", "rougeL", "cider"])
def test_metric_without_references_names_itself(name: str) -> None:
    with pytest.raises(ValueError, match=f"reward '{name}' needs references"):
        R.make(name)(["p"], ["c"])


@pytest.mark.parametrize("corpus", ["hand", "random"])
def test_cider_d_equals_pycocoevalcap_fixture(corpus: str) -> None:
    fx = json.loads(FIXTURE.read_text(encoding="utf-8"))[corpus]
    mean, scores = corpus_cider_d(fx["completions"], fx["references"])
    np.testing.assert_allclose(scores, fx["scores"], rtol=1e-9, atol=1e-12)
    assert mean == pytest.approx(float(np.mean(fx["scores"])), rel=1e-12)


def test_cider_d_with_fixed_corpus_is_batch_independent() -> None:
    fx = json.loads(FIXTURE.read_text(encoding="utf-8"))["random"]
    reward = R.make("cider", corpus=fx["references"])
    order = np.arange(len(fx["completions"]))[::-3]  # a reordered subset, as a batch would be
    got = reward(
        ["" for _ in order],
        [fx["completions"][i] for i in order],
        [fx["references"][i] for i in order],
    )
    np.testing.assert_allclose(got, np.asarray(fx["scores"])[order], rtol=1e-5, atol=1e-6)


def test_cider_d_clips_repeated_words() -> None:
    refs = [["a dog runs in the park"], ["a cat sits"], ["the sun is hot"]]
    reward = CIDErD(corpus=refs)
    good, spam = reward(["", ""], ["a dog runs", "dog dog dog"], [refs[0], refs[0]])
    assert good > spam
