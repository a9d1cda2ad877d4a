"""perplexity: exp(HF mean loss) when a text fits; strided windows score each token once."""

from __future__ import annotations

import math

import pytest
import torch

import textgym
from textgym.decoding import greedy
from textgym.lm import LanguageModel
from textgym.perplexity import perplexity, windows

TEXT = "the movie was great and i loved it but the plot was bad"
OTHER = "a dog runs in the park with a red ball"
LONG = " ".join(["the movie was great and i loved it but the plot was bad ."] * 10)  # 140 tokens


@pytest.fixture(params=["gpt2", "llama"])
def lm(request: pytest.FixtureRequest) -> LanguageModel:
    return request.getfixturevalue(f"tiny_{request.param}_lm")


def hf_nll(lm: LanguageModel, ids: list[int], labels: list[int] | None = None) -> tuple[float, int]:
    """Summed NLL and token count from HF's own loss (labels -100 = not scored)."""
    x = torch.tensor([ids])
    y = x if labels is None else torch.tensor([labels])
    n = int((y[:, 1:] != -100).sum())
    with torch.no_grad():
        loss = lm.model(x, labels=y).loss
    return float(loss) * n, n


def test_equals_exp_hf_loss_when_text_fits(lm: LanguageModel) -> None:
    nll, n = hf_nll(lm, lm.tokenizer(TEXT)["input_ids"])
    assert perplexity(lm, TEXT) == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_several_texts_pool_their_tokens(lm: LanguageModel) -> None:
    a = hf_nll(lm, lm.tokenizer(TEXT)["input_ids"])
    b = hf_nll(lm, lm.tokenizer(OTHER)["input_ids"])
    expected = math.exp((a[0] + b[0]) / (a[1] + b[1]))
    assert perplexity(lm, [TEXT, OTHER]) == pytest.approx(expected, rel=1e-5)
    assert perplexity(lm, [TEXT, OTHER], batch_size=1) == pytest.approx(expected, rel=1e-5)


def test_stride_equal_to_window_equals_independent_chunks(lm: LanguageModel) -> None:
    ids = lm.tokenizer(LONG)["input_ids"]
    window = 16
    nll, n = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = ids[start : start + window]
        if len(chunk) > 1:
            chunk_nll, chunk_n = hf_nll(lm, chunk)
            nll, n = nll + chunk_nll, n + chunk_n
    got = perplexity(lm, LONG, max_length=window, stride=window)
    assert got == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_overlapping_windows_follow_the_hf_guide(lm: LanguageModel) -> None:
    """The guide's loop: each window scores only its last trg_len = end - prev_end tokens."""
    ids = lm.tokenizer(LONG)["input_ids"]
    max_length, stride = 32, 12
    nll, n, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        trg_len = end - prev_end
        labels = [-100] * (end - begin - trg_len) + ids[end - trg_len : end]
        window_nll, window_n = hf_nll(lm, ids[begin:end], labels)
        nll, n, prev_end = nll + window_nll, n + window_n, end
        if end == len(ids):
            break
    assert n == len(ids) - 1  # every token but the first, once
    got = perplexity(lm, LONG, max_length=max_length, stride=stride)
    assert got == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_defaults_use_the_context_window(lm: LanguageModel) -> None:
    assert lm.max_length == 64
    expected = perplexity(lm, LONG, max_length=64, stride=32)
    assert perplexity(lm, LONG) == pytest.approx(expected, rel=1e-6)


def test_windows_score_each_token_once_with_context() -> None:
    for n_tokens, max_length, stride in [(140, 32, 12), (10, 32, 12), (100, 16, 16), (33, 8, 1)]:
        scored: list[int] = []
        for begin, end, first in windows(n_tokens, max_length, stride):
            assert end - begin <= max_length
            tokens = range(max(first, begin + 1), end)
            scored.extend(tokens)
            if begin > 0 and stride < max_length:
                assert first - begin >= max_length - stride  # context of the first scored token
        if stride < max_length:
            assert scored == list(range(1, n_tokens))
        else:  # disjoint chunks: each chunk's first token has no context
            assert scored == [t for t in range(n_tokens) if t % max_length != 0]


def test_accepts_a_model_path(tiny_gpt2_dir: str, tiny_gpt2_lm: LanguageModel) -> None:
    assert perplexity(tiny_gpt2_dir, TEXT) == pytest.approx(
        perplexity(tiny_gpt2_lm, TEXT), rel=1e-6
    )


def test_errors(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="texts is empty"):
        perplexity(lm, [])
    with pytest.raises(ValueError, match=r"stride must be an int in \[1, max_length=16\], got 0"):
        perplexity(lm, TEXT, max_length=16, stride=0)
    with pytest.raises(ValueError, match="got 17"):
        perplexity(lm, TEXT, max_length=16, stride=17)
    with pytest.raises(ValueError, match="exceeds the model's context window of 64"):
        perplexity(lm, TEXT, max_length=65)
    with pytest.raises(ValueError, match="max_length must be an int >= 2, got 1"):
        perplexity(lm, TEXT, max_length=1)
    with pytest.raises(ValueError, match="no token to predict"):
        perplexity(lm, ["the", "a"])
    with pytest.raises(ValueError, match="batch_size must be"):
        perplexity(lm, TEXT, batch_size=0)


def test_embedded_model(embedded_lm: LanguageModel) -> None:
    # In-domain text, whatever the asset was trained on: the model's own greedy continuation.
    prompt = "Review: The film"
    text = prompt + greedy(embedded_lm, prompt, max_new_tokens=40).texts[0]
    nll, n = hf_nll(embedded_lm, embedded_lm.tokenizer(text)["input_ids"])
    got = perplexity(embedded_lm, text)
    assert got == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert 1.0 < got < 20.0  # a trained model finds its own greedy text likely
    assert perplexity(textgym.DEFAULT_MODEL, text) == pytest.approx(got, rel=1e-6)
