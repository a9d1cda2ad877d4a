"""Token-level rewards: step() on ids, vectorised, and __call__ = sum of steps."""

from __future__ import annotations

import numpy as np
import pytest
import textgym.rewards as R
from textgym.rewards.token import BannedTokens, TokenRepetition
from transformers import AutoTokenizer


def test_banned_tokens_step() -> None:
    r = R.make("banned_tokens", banned_ids=[5, 7], penalty=0.5)
    assert r.token_level
    ids = np.zeros((3, 4), dtype=np.int64)
    out = r.step(ids, np.array([1, 2, 0]), np.array([5, 6, 7]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-0.5, 0.0, -0.5])


def test_token_repetition_step_by_hand() -> None:
    r = TokenRepetition(n=2)
    ids = np.array([[3, 4, 5, 3, 0, 0], [3, 4, 5, 3, 0, 0], [9, 9, 0, 0, 0, 0]])
    lengths = np.array([4, 4, 2])
    # row 0: appending 4 makes (3, 4), seen at 0-1; row 1: (3, 6) is new; row 2: (9, 9) seen.
    np.testing.assert_array_equal(r.step(ids, lengths, np.array([4, 6, 9])), [-1.0, 0.0, -1.0])
    # the padding beyond a row's length never counts
    assert r.step(np.array([[3, 7, 3, 4]]), np.array([1]), np.array([4]))[0] == 0.0
    windowed = TokenRepetition(n=2, window=2)
    assert windowed.step(ids[:1], lengths[:1], np.array([4]))[0] == 0.0  # (3,4) is 4 tokens back


def _naive_repeated(row: list[int], action: int, n: int, window: int | None) -> bool:
    seq = [*row, action]
    if len(seq) < n:
        return False
    new = tuple(seq[-n:])
    first = 0 if window is None else max(0, len(row) - window)
    return any(tuple(seq[k : k + n]) == new for k in range(first, len(row) - n + 1))


@pytest.mark.parametrize(("n", "window"), [(1, None), (2, None), (3, None), (2, 5), (4, 6)])
def test_token_repetition_equals_naive_loop(n: int, window: int | None) -> None:
    rng = np.random.default_rng(n * 10 + (window or 0))
    batch, width = 64, 12
    ids = rng.integers(0, 4, size=(batch, width))
    lengths = rng.integers(0, width + 1, size=batch)
    actions = rng.integers(0, 4, size=batch)
    got = TokenRepetition(n=n, window=window).repeated(ids, lengths, actions)
    want = [
        _naive_repeated(ids[b, : lengths[b]].tolist(), int(actions[b]), n, window)
        for b in range(batch)
    ]
    np.testing.assert_array_equal(got, want)


def test_call_on_texts_sums_the_steps(tiny_gpt2_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    banned = tok.convert_tokens_to_ids(["bad", "awful"])
    r = BannedTokens(banned, tokenizer=tok)
    out = r(["the movie", "a", "x"], ["was bad bad and awful", "good film", ""])
    np.testing.assert_array_equal(out, [-3.0, 0.0, 0.0])
    rep = R.make("token_repetition", n=1, tokenizer=tok)
    # prompt "the cat": "the" repeats the prompt's, then "cat", then "the" again -> 3
    np.testing.assert_array_equal(rep(["the cat"], ["the cat the dog"]), [-3.0])


def test_call_without_tokenizer_explains() -> None:
    with pytest.raises(ValueError, match="needs tokenizer="):
        R.make("banned_tokens", banned_ids=[1])(["p"], ["c"])


def test_step_shape_errors() -> None:
    r = BannedTokens([1])
    with pytest.raises(ValueError, match=r"input_ids \(B, L\), lengths \(B,\), actions \(B,\)"):
        r.step(np.zeros((2, 3)), np.zeros(3), np.zeros(2))


def test_weighted_sum_of_token_rewards_is_token_level() -> None:
    r = R.make({BannedTokens([5]): 2.0, TokenRepetition(n=1): 0.5})
    assert r.token_level
    ids = np.array([[5, 6, 0], [1, 2, 0]])
    out = r.step(ids, np.array([2, 2]), np.array([5, 3]))
    np.testing.assert_allclose(out, [-2.0 - 0.5, 0.0])


def test_mixing_token_and_sequence_rewards_raises() -> None:
    with pytest.raises(ValueError, match="cannot sum token-level rewards"):
        R.make({BannedTokens([5]): 1.0, "length": 1.0})
