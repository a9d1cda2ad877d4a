"""Decoding: filters as pure functions; greedy and beam search equal HF generate token for token."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch.testing import assert_close

from textgym.decoding import (
    GenerationOutput,
    beam_search,
    filter_logits,
    generate,
    greedy,
    sample,
)
from textgym.lm import LanguageModel

PROMPTS = [
    "the movie was great",
    "a dog",
    "i loved it and the cat runs on the red ball",
    "one two three",
    "bad",
]
EMBEDDED_PROMPTS = [
    "The movie was",
    "I",
    "This film is a story about a dog and",
    "Once upon a time",
]


@pytest.fixture(params=["gpt2", "llama"])
def lm(request: pytest.FixtureRequest) -> LanguageModel:
    return request.getfixturevalue(f"tiny_{request.param}_lm")


@pytest.fixture(params=["gpt2", "llama", "embedded"])
def any_lm(request: pytest.FixtureRequest) -> tuple[LanguageModel, list[str]]:
    """The two tiny models and the embedded one (skipped until it is built), with prompts."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_lm"), EMBEDDED_PROMPTS
    return request.getfixturevalue(f"tiny_{request.param}_lm"), PROMPTS


def hf_generate(
    lm: LanguageModel, ids: torch.Tensor, mask: torch.Tensor, **kwargs: object
) -> torch.Tensor:
    kwargs.setdefault("eos_token_id", lm.eos_token_id)
    with torch.no_grad():
        out: torch.Tensor = lm.model.generate(
            ids, attention_mask=mask, do_sample=False, pad_token_id=lm.pad_token_id, **kwargs
        )
    return out


def frequent_token(lm: LanguageModel, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """A token greedy decoding emits early in some rows: as EOS, it ends rows at different steps."""
    out = greedy(lm, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None)
    return int(out.completion_ids[:, 2].mode().values)


# ------------------------------------------------------------------ greedy / beam == HF


def test_greedy_equals_hf_generate(any_lm: tuple[LanguageModel, list[str]]) -> None:
    lm, prompts = any_lm
    ids, mask = lm.encode(prompts)
    out = greedy(lm, ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(out.sequences, hf_generate(lm, ids, mask, max_new_tokens=12))


def test_greedy_equals_hf_generate_when_rows_end_early(
    any_lm: tuple[LanguageModel, list[str]],
) -> None:
    lm, prompts = any_lm
    ids, mask = lm.encode(prompts)
    eos = frequent_token(lm, ids, mask)
    out = greedy(lm, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos)
    assert out.terminated.any()
    assert torch.equal(
        out.sequences, hf_generate(lm, ids, mask, max_new_tokens=12, eos_token_id=eos)
    )
    # after EOS: pad ids, masked out, zero log-prob
    for row in range(len(prompts)):
        n = int(out.completion_mask[row].sum())
        assert (out.completion_mask[row, :n] == 1).all()
        assert (out.completion_ids[row, n:] == lm.pad_token_id).all()
        assert (out.logprobs[row, n:] == 0).all()
        assert bool(out.terminated[row]) == (n > 0 and int(out.completion_ids[row, n - 1]) == eos)


def test_greedy_without_padding_and_from_text(lm: LanguageModel) -> None:
    ids, mask = lm.encode(["the movie was great"])
    out = greedy(lm, "the movie was great", max_new_tokens=8)
    assert torch.equal(out.sequences, hf_generate(lm, ids, mask, max_new_tokens=8))
    assert out.texts == lm.decode(out.completion_ids)


def test_min_new_tokens_equals_hf(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    eos = frequent_token(lm, ids, mask)
    out = greedy(
        lm, ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos, min_new_tokens=6
    )
    expected = hf_generate(lm, ids, mask, max_new_tokens=10, eos_token_id=eos, min_new_tokens=6)
    assert torch.equal(out.sequences, expected)
    assert (out.completion_ids[:, :6] != eos).all()


@pytest.mark.parametrize(
    ("num_beams", "length_penalty", "early_stopping"),
    [(2, 1.0, False), (3, 0.5, "never"), (4, 2.0, True), (3, -1.0, "never")],
)
def test_beam_search_equals_hf_generate(
    any_lm: tuple[LanguageModel, list[str]],
    num_beams: int,
    length_penalty: float,
    early_stopping: bool | Literal["never"],
) -> None:
    lm, prompts = any_lm
    ids, mask = lm.encode(prompts)
    eos = frequent_token(lm, ids, mask)  # beams that finish at different steps
    for eos_id in (lm.eos_token_id, eos):
        out = beam_search(
            lm, ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos_id,
            num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        )  # fmt: skip
        expected = hf_generate(
            lm, ids, mask, max_new_tokens=8, eos_token_id=eos_id,
            num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        )  # fmt: skip
        assert torch.equal(out.sequences, expected), (eos_id, out.sequences, expected)


def test_beam_search_scores_and_logprobs(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    out = beam_search(
        lm, ids, attention_mask=mask, num_beams=3, max_new_tokens=6, length_penalty=1.0
    )
    with torch.no_grad():
        expected = lm.sequence_logprob(ids, mask, out.completion_ids, out.completion_mask)
    assert_close(out.logprobs.sum(-1), expected, rtol=1e-4, atol=1e-4)
    assert out.sequence_scores is not None
    assert_close(out.sequence_scores, expected / out.completion_mask.sum(-1), rtol=1e-4, atol=1e-4)


def test_one_beam_is_greedy(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    one = beam_search(lm, ids, attention_mask=mask, num_beams=1, max_new_tokens=6)
    assert torch.equal(
        one.sequences, greedy(lm, ids, attention_mask=mask, max_new_tokens=6).sequences
    )


# ------------------------------------------------------------------ sampling


def _step_logits(lm: LanguageModel, out: GenerationOutput, prompt_len: int) -> torch.Tensor:
    """Recomputed logits (B, T, V) that each generated token was drawn from."""
    with torch.no_grad():
        logits = lm.forward(out.sequences, out.attention_mask)  # (B, P + T, V)
    return logits[:, prompt_len - 1 : -1].float()


def test_top_k_samples_stay_in_the_top_k(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS * 4)
    out = generate(
        lm, ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=3,
        generator=torch.Generator().manual_seed(0), eos_token_id=None,
    )  # fmt: skip
    top3 = _step_logits(lm, out, ids.shape[1]).topk(3, dim=-1).indices  # (B, T, 3)
    assert (top3 == out.completion_ids.unsqueeze(-1)).any(-1).all()


def test_top_p_samples_stay_in_the_nucleus(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS * 4)
    top_p = 0.3
    out = generate(
        lm, ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_p=top_p,
        generator=torch.Generator().manual_seed(0), eos_token_id=None,
    )  # fmt: skip
    probs = _step_logits(lm, out, ids.shape[1]).softmax(-1)  # (B, T, V)
    p_token = probs.gather(-1, out.completion_ids.unsqueeze(-1))  # (B, T, 1)
    # in the nucleus iff the mass of strictly more likely tokens is < p
    mass_before = (probs * (probs > p_token)).sum(-1)  # (B, T)
    assert (mass_before < top_p + 1e-5).all()
    assert (mass_before > 0).any()  # not only argmax tokens: the test has teeth


def test_logprobs_are_those_of_the_filtered_distribution(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    settings = {"temperature": 0.7, "top_k": 20, "top_p": 0.8}
    out = generate(
        lm,
        ids,
        attention_mask=mask,
        max_new_tokens=8,
        do_sample=True,
        generator=torch.Generator().manual_seed(1),
        **settings,  # type: ignore[arg-type]
    )
    with torch.no_grad():
        logits = lm.forward(out.sequences, out.attention_mask)[
            :, ids.shape[1] - 1 : -1
        ]  # (B, T, V)
    logp = torch.log_softmax(filter_logits(logits.float(), **settings), dim=-1)  # type: ignore[arg-type]
    expected = logp.gather(-1, out.completion_ids.unsqueeze(-1)).squeeze(-1) * out.completion_mask
    assert_close(out.logprobs, expected, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(out.logprobs).all()


def test_same_seed_same_samples(lm: LanguageModel) -> None:
    def run(seed: int) -> torch.Tensor:
        out = generate(
            lm,
            PROMPTS,
            max_new_tokens=10,
            do_sample=True,
            generator=torch.Generator().manual_seed(seed),
        )
        return out.sequences

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


def test_temperature_to_zero_is_greedy(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    cold = generate(
        lm,
        ids,
        attention_mask=mask,
        max_new_tokens=10,
        do_sample=True,
        temperature=1e-5,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(
        cold.sequences, greedy(lm, ids, attention_mask=mask, max_new_tokens=10).sequences
    )


def test_generation_mask_restricts_tokens(lm: LanguageModel) -> None:
    allowed = torch.zeros(lm.vocab_size, dtype=torch.bool)
    allowed[[5, 7, 11]] = True
    out = generate(
        lm,
        PROMPTS,
        max_new_tokens=6,
        do_sample=True,
        mask=allowed,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isin(out.completion_ids, torch.tensor([5, 7, 11])).all()


# ------------------------------------------------------------------ filter_logits, sample


def test_top_p_keeps_the_smallest_nucleus() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 50, generator=gen) * 2  # (B, V)
    for top_p in (0.05, 0.3, 0.9, 0.999):
        kept = torch.isfinite(filter_logits(logits, top_p=top_p))
        probs = logits.softmax(-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
        expected = torch.zeros_like(kept).scatter(-1, order, before < top_p)
        assert torch.equal(kept, expected)
        # smallest: the kept mass reaches p, and without its least likely token it would not
        mass = (probs * kept).sum(-1)
        assert (mass >= top_p - 1e-6).all()
        least = torch.where(kept, probs, torch.inf).min(-1).values
        assert (mass - least < top_p).all()


def test_top_p_after_top_k_renormalises() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    # top-2 leaves p = [0.731, 0.269]: top_p=0.7 keeps one token, 0.75 keeps both
    assert torch.isfinite(filter_logits(logits, top_k=2, top_p=0.7)).sum() == 1
    assert torch.isfinite(filter_logits(logits, top_k=2, top_p=0.75)).sum() == 2


def test_sampled_tokens_stay_in_top_k_and_nucleus() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 30, generator=gen)  # (B, V)
    for filtered in (
        filter_logits(logits, top_k=4),
        filter_logits(logits, top_p=0.5),
        filter_logits(logits, top_k=10, top_p=0.6, temperature=0.5),
    ):
        tokens = sample(filtered, generator=gen)
        assert torch.isfinite(filtered.gather(-1, tokens.unsqueeze(-1))).all()
    top4 = logits.topk(4, -1).indices
    tokens = sample(filter_logits(logits, top_k=4), generator=gen)
    assert (top4 == tokens.unsqueeze(-1)).any(-1).all()


def test_sample_follows_the_distribution() -> None:
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    logits = probs.log().expand(40000, -1)  # (B, V)
    tokens = sample(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
    assert_close(freq, probs, rtol=0, atol=0.01)
    assert freq[1] == 0  # zero-probability tokens are never drawn ...
    assert freq[4] == 0  # ... including the last one (the end of the cumulative sum)


def test_filter_logits_pure_and_ordered() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    before = logits.clone()
    out = filter_logits(
        logits, temperature=2.0, top_k=2, mask=torch.tensor([True, True, True, False])
    )
    assert torch.equal(logits, before)  # input untouched
    # mask first (drops 4.0), then temperature, then top-k of what is left
    assert_close(out, torch.tensor([[-torch.inf, 1.0, 1.5, -torch.inf]]), rtol=0, atol=0)
    assert torch.equal(filter_logits(logits, top_k=10, top_p=1.0), logits)  # no-ops
    ties = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.isfinite(filter_logits(ties, top_k=1)).sum() == 3  # ties with the k-th are kept


def test_filter_logits_errors() -> None:
    x = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1.5"):
        filter_logits(x, top_p=1.5)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 0"):
        filter_logits(x, top_p=0)
    with pytest.raises(ValueError, match="top_k must be an int >= 1 or None, got 0"):
        filter_logits(x, top_k=0)
    with pytest.raises(ValueError, match="top_k must be an int"):
        filter_logits(x, top_k=2.5)  # type: ignore[arg-type]  # checking the runtime error
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be"):
            filter_logits(x, temperature=bad)
    with pytest.raises(ValueError, match="mask must be a bool"):
        filter_logits(x, mask=torch.ones(5))
    with pytest.raises(ValueError, match=r"does not broadcast to logits \(2, 5\)"):
        filter_logits(x, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="allows no token"):
        filter_logits(x, mask=torch.tensor([[True] * 5, [False] * 5]))
    with pytest.raises(ValueError, match="floating"):
        filter_logits(torch.zeros(2, 5, dtype=torch.long))


def test_generate_errors(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1, got 0"):
        generate(lm, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"exceeds the context window of 64.*at most"):
        generate(lm, PROMPTS, max_new_tokens=60)
    with pytest.raises(ValueError, match="left-padded"):
        generate(lm, ids, attention_mask=mask.flip(-1), max_new_tokens=2)
    with pytest.raises(ValueError, match="texts is empty"):
        generate(lm, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p must be in"):
        generate(lm, PROMPTS, max_new_tokens=2, do_sample=True, top_p=2.0)
    with pytest.raises(ValueError, match="eos_token_id 99 is not a token id"):
        generate(lm, PROMPTS, max_new_tokens=2, eos_token_id=99)
    with pytest.raises(ValueError, match="token id 70 is out of range"):
        generate(lm, torch.tensor([[3, 70]]), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(64,\)"):
        generate(lm, PROMPTS, max_new_tokens=2, mask=torch.ones(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_beams must be an int >= 1, got 0"):
        beam_search(lm, PROMPTS, num_beams=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="early_stopping must be"):
        beam_search(lm, PROMPTS, num_beams=2, max_new_tokens=2, early_stopping="sometimes")  # type: ignore[arg-type]


def test_outputs_support_gradients_later(lm: LanguageModel) -> None:
    """Decoding runs in inference mode; its outputs must still feed a training forward pass."""
    out = generate(
        lm, PROMPTS, max_new_tokens=4, do_sample=True, generator=torch.Generator().manual_seed(0)
    )
    ids, mask = lm.encode(PROMPTS)
    logp = lm.sequence_logprob(ids, mask, out.completion_ids, out.completion_mask)
    logp.sum().backward()
    lm.model.zero_grad(set_to_none=True)
