"""Simple rewards: length, repetition, keyword inclusion, exact match."""

from __future__ import annotations

import numpy as np
import pytest
import textgym.rewards as R
from textgym.rewards.wordnet import SETUP_HINT, is_available
from transformers import AutoTokenizer


def test_length_in_words_peaks_at_target() -> None:
    r = R.make("length", target=4)
    out = r([""] * 5, ["", "a b", "a b c d", "a  b\nc d e f", "a " * 8])
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 0.5, 0.0])


def test_length_in_chars_and_tokens(tiny_gpt2_dir: str) -> None:
    np.testing.assert_allclose(R.make("length", target=2, unit="chars")([""], ["é😀"]), [1.0])
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    r = R.make("length", target=3, unit="tokens", tokenizer=tok)
    np.testing.assert_allclose(r(["", ""], ["the cat runs", "the cat"]), [1.0, 2 / 3], rtol=1e-6)
    by_path = R.make("length", target=3, unit="tokens", tokenizer=tiny_gpt2_dir)
    np.testing.assert_allclose(by_path([""], ["the cat runs"]), [1.0])


def test_length_validates() -> None:
    with pytest.raises(ValueError, match="target must be > 0, got 0"):
        R.make("length", target=0)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        R.make("length", unit="tokens")


def test_repetition_penalty() -> None:
    r = R.make("repetition", n=2)
    out = r([""] * 4, ["", "a b c d", "a b a b a b", "The the cat"])
    # "a b a b a b": bigrams ab ba ab ba ab -> 2 distinct of 5 -> -(1 - 2/5)
    np.testing.assert_allclose(out, [0.0, 0.0, -0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        R.make("repetition", n=1)([""], ["The the cat"]), [-1 / 3], rtol=1e-6
    )


def test_keywords_from_prompt_are_inflection_tolerant() -> None:
    r = R.make("keywords")
    prompts = ["dog frisbee catch throw"] * 3
    out = r(
        prompts,
        [
            "The dogs caught a Frisbee after I was throwing it.",  # catch/caught: irregular
            "A dog catches the frisbee that the boy throws.",
            "",
        ],
    )
    np.testing.assert_allclose(out, [0.75, 1.0, 0.0])


def test_keywords_read_the_concepts_template() -> None:
    from textgym.rewards.simple import prompt_concepts

    prompt = "Concepts: child, farm, feed. Sentence:"
    assert prompt_concepts(prompt) == ["child", "farm", "feed"]
    assert prompt_concepts("concept: ice cream\nWrite") == ["ice cream"]
    r = R.make("keywords")
    out = r([prompt] * 2, [" A child is feeding the ducks on a farm.", "The sentence is short."])
    np.testing.assert_allclose(out, [1.0, 0.0])


def test_keywords_from_references_and_custom_extract() -> None:
    r = R.make("keywords", source="references")
    assert r.needs_references
    out = r(["ignored"], ["Two men are playing soccer"], [["man", "play soccer", "ball"]])
    np.testing.assert_allclose(out, [1 / 3], rtol=1e-6)  # "men" is irregular: no Porter match
    with pytest.raises(ValueError, match="'keywords' needs references"):
        r(["x"], ["y"])
    custom = R.make("keywords", extract=lambda p: p.split("Concepts:")[1].split(","))
    np.testing.assert_allclose(custom(["Concepts: cat, sofa"], ["cats on sofas"]), [1.0])
    assert R.make("keywords")(["!!!"], ["anything"])[0] == 0.0  # no concepts


@pytest.mark.skipif(not is_available(), reason=f"WordNet for nltk missing; set up: {SETUP_HINT}")
def test_keywords_wordnet_matches_irregular_forms() -> None:
    r = R.make("keywords", source="references", wordnet=True)
    out = r(
        ["", ""], ["Two men caught the ball", "the dogs ran"], [["man", "catch", "ball"], ["run"]]
    )
    np.testing.assert_allclose(out, [1.0, 1.0])


def test_exact_match_normalisations() -> None:
    refs = [["The Eiffel Tower"], ["Paris", "paris, France"], ["42"]]
    completions = ["eiffel tower.", " paris ", "forty-two"]
    np.testing.assert_array_equal(R.make("exact_match")([""] * 3, completions, refs), [1, 1, 0])
    np.testing.assert_array_equal(
        R.make("exact_match", normalize="strip")([""] * 3, completions, refs), [0, 0, 0]
    )
    np.testing.assert_array_equal(
        R.make("exact_match", normalize="none")([""], ["Paris"], [["Paris"]]), [1]
    )
    with pytest.raises(ValueError, match="normalize must be one of"):
        R.make("exact_match", normalize="lower")
