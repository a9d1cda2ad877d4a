"""make(spec): names, weighted sums, objects, callables, validation."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import numpy as np
import pytest
import textgym.rewards as R
from textgym.rewards.base import References

PROMPTS = ["Write:", "Review:", "Say:"]
COMPLETIONS = ["what a lovely wonderful day", "awful, terrible and sad", ""]


def test_every_name_is_listed_in_unknown_name_error() -> None:
    with pytest.raises(ValueError, match="unknown reward 'blue'") as err:
        R.make("blue")
    for name in R.names():
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["length", "sentiment", "repetition"])
def test_make_by_name_returns_float32_batch(name: str) -> None:
    r = R.make(name)
    out = r(PROMPTS, COMPLETIONS)
    assert isinstance(r, R.Reward)
    assert out.dtype == np.float32
    assert out.shape == (3,)
    assert r.name == name
    assert not r.token_level


def test_make_passes_kwargs_to_the_reward() -> None:
    r = R.make("length", target=4)
    assert r(["p"], ["a b c d"])[0] == pytest.approx(1.0)


def test_weighted_sum_equals_sum_of_weighted_components() -> None:
    r = R.make({"length": 0.3, "sentiment": 0.7})
    assert isinstance(r, R.WeightedSum)
    comps = r.components(PROMPTS, COMPLETIONS)
    assert set(comps) == {"length", "sentiment"}
    expected = 0.3 * comps["length"] + 0.7 * comps["sentiment"]
    np.testing.assert_allclose(r(PROMPTS, COMPLETIONS), expected, rtol=1e-6, atol=1e-7)


def test_weighted_sum_accepts_configured_reward_objects_as_keys() -> None:
    length = R.make("length", target=2)
    r = R.make({length: 1.0, "sentiment": 0.0})
    np.testing.assert_allclose(r(["p"], ["a b"]), [1.0])


def test_weighted_sum_rejects_duplicate_names_and_bad_weights() -> None:
    with pytest.raises(ValueError, match="distinct"):
        R.make({R.make("length", target=3): 1.0, "length": 1.0})
    with pytest.raises(TypeError, match="must be a number"):
        R.make({"length": "high"})  # type: ignore[dict-item]


def test_weighted_sum_needing_references_names_the_component() -> None:
    r = R.make({"length": 0.5, "exact_match": 0.5})
    assert r.needs_references
    with pytest.raises(ValueError, match="'exact_match' needs references"):
        r.components(["p"], ["c"])
    with pytest.raises(ValueError, match="'exact_match' needs references"):
        r(["p"], ["c"])


def test_builtin_reward_object_passes_through() -> None:
    r = R.make("length")
    assert R.make(r) is r


def test_foreign_reward_object_is_wrapped_and_validated() -> None:
    class Foreign:
        name = "foreign"
        token_level = False
        needs_references = False

        def __call__(
            self,
            prompts: Sequence[str],
            completions: Sequence[str],
            references: References | None = None,
        ) -> np.ndarray:
            return np.array([1.0, np.inf])[: len(completions)]

    r = R.make(Foreign())
    assert r.name == "foreign"
    np.testing.assert_array_equal(r(["p"], ["c"]), [1.0])
    with pytest.raises(ValueError, match=r"returned inf for sample 1.*completion='second'"):
        r(["p", "q"], ["first", "second"])


def test_plain_callable_is_called_per_sample() -> None:
    calls: list[tuple[str, str]] = []

    def count_chars(prompt: str, completion: str) -> float:
        calls.append((prompt, completion))
        return float(len(completion))

    r = R.make(count_chars)
    np.testing.assert_array_equal(r(["a", "b"], ["xy", "xyz"]), [2.0, 3.0])
    assert calls == [("a", "xy"), ("b", "xyz")]
    assert r.name == "count_chars"


def test_callable_with_third_argument_gets_references() -> None:
    r = R.make(lambda p, c, refs: float(c in refs), name="in_refs", needs_references=True)
    np.testing.assert_array_equal(r(["p", "p"], ["a", "b"], [["a", "z"], "c"]), [1.0, 0.0])
    assert r.name == "in_refs"


def test_batched_callable_is_called_once() -> None:
    n_calls = 0

    @R.batched
    def lengths(prompts: Sequence[str], completions: Sequence[str]) -> list[int]:
        nonlocal n_calls
        n_calls += 1
        return [len(c) for c in completions]

    out = R.make(lengths)(["a", "b", "c"], ["x", "xx", ""])
    np.testing.assert_array_equal(out, [1, 2, 0])
    assert n_calls == 1


def test_wrong_shape_raises_with_both_shapes() -> None:
    r = R.make(R.batched(lambda p, c: np.zeros((len(c), 2))), name="wide")
    with pytest.raises(ValueError, match=r"'wide' returned shape \(2, 2\), expected \(2,\)"):
        r(["a", "b"], ["x", "y"])


def test_nan_raises_with_offending_sample() -> None:
    r = R.make(lambda p, c: float("nan") if c == "bad" else 0.0, name="flaky")
    with pytest.raises(ValueError, match=r"'flaky' returned nan for sample 1.*completion='bad'"):
        r(["a", "b"], ["good", "bad"])


def test_non_number_from_callable_raises() -> None:
    r = R.make(lambda p, c: "high", name="word")
    with pytest.raises(TypeError, match="'word' must return a float"):
        r(["a"], ["b"])


def test_mismatched_batch_sizes_raise() -> None:
    r = R.make("length")
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        r(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="batched"):
        r("a", "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 reference sets for 1 completions"):
        R.make("exact_match")(["a"], ["b"], [["x"], ["y"]])


def test_bare_string_reference_is_one_reference() -> None:
    r = R.make("exact_match")
    np.testing.assert_array_equal(r(["p"], ["the cat"], ["The cat!"]), [1.0])


def test_empty_batch_gives_empty_array() -> None:
    out = R.make("length")([], [])
    assert out.shape == (0,)
    assert out.dtype == np.float32


def test_make_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="cannot make a reward from int"):
        R.make(3)  # type: ignore[arg-type]


def test_classes_are_exported_lazily() -> None:
    for name in ("BLEU", "CIDErD", "corpus_bleu", "HFClassifier", "Length", "TokenRepetition"):
        assert name in R.__all__
        assert getattr(R, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Blue'"):
        R.Blue  # noqa: B018


def test_weighted_sum_with_callable_key() -> None:
    def shout(prompt: str, completion: str) -> float:
        return float(completion.isupper())

    r = R.make({shout: 2.0, "length": 1.0})
    assert set(r.components(["p"], ["HI"])) == {"shout", "length"}
    np.testing.assert_allclose(r(["p"], ["HI"]), 2.0 + R.make("length")(["p"], ["HI"]))


class _Picklable:
    name = "picklable"
    token_level = False
    needs_references = False

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> np.ndarray:
        return np.ones(len(completions))


@pytest.mark.parametrize("spec", ["bleu", "sentiment", "cider", {"length": 0.5, "rouge1": 0.5}])
def test_rewards_survive_pickling(spec: object) -> None:
    # Vector-env workers receive rewards through pickle (gymnasium's AsyncVectorEnv).
    r = R.make(spec)  # type: ignore[arg-type]
    clone = pickle.loads(pickle.dumps(r))
    args = (["p", "q"], ["the cat sat", ""], [["the cat sat"], ["x y"]])
    np.testing.assert_array_equal(clone(*args), r(*args))


def test_checked_reward_survives_pickling() -> None:
    clone = pickle.loads(pickle.dumps(R.make(_Picklable())))
    np.testing.assert_array_equal(clone(["p"], ["c"]), [1.0])
