"""Chunked log-probs equal the full computation, values and gradients, on GPT-2 and Llama."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from textgym import LanguageModel


def batch(lm: LanguageModel) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, len(lm.tokenizer), (3, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, -3:] = 0  # right padding
    return ids.masked_fill(mask == 0, lm.pad_token_id), mask


@pytest.mark.parametrize("name", ["tiny_gpt2_lm", "tiny_llama_lm"])
@pytest.mark.parametrize("chunk", [1, 4, 5])
def test_chunked_logprobs_equal_full(name: str, chunk: int, request: pytest.FixtureRequest) -> None:
    lm: LanguageModel = request.getfixturevalue(name)
    ids, mask = batch(lm)
    params = [p for p in lm.model.parameters() if p.requires_grad]

    def run(c: int | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lm.logprob_chunk = c
        lm.model.zero_grad()
        logp = lm.logprobs(ids, mask)
        (logp * torch.arange(1.0, 14.0)).sum().backward()  # weights: every position counts
        return logp.detach(), [p.grad.clone() for p in params if p.grad is not None]

    try:
        full, grads_full = run(None)
        chunked, grads_chunked = run(chunk)
    finally:
        lm.logprob_chunk = None
        lm.model.zero_grad(set_to_none=True)  # a shared fixture: leave no gradients behind
    assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    assert len(grads_full) == len(grads_chunked)
    for a, b in zip(grads_chunked, grads_full, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sequence_logprob_is_chunked_too(tiny_gpt2_lm: LanguageModel) -> None:
    ids, mask = batch(tiny_gpt2_lm)
    prompt, completion = (ids[:, :6], mask[:, :6]), (ids[:, 6:], mask[:, 6:])
    full = tiny_gpt2_lm.sequence_logprob(*prompt, *completion)
    tiny_gpt2_lm.logprob_chunk = 2
    try:
        chunked = tiny_gpt2_lm.sequence_logprob(*prompt, *completion)
    finally:
        tiny_gpt2_lm.logprob_chunk = None
    assert_close(chunked, full, rtol=1e-5, atol=1e-5)


def test_a_model_whose_logits_are_not_its_head_is_refused(tiny_gpt2_lm: LanguageModel) -> None:
    head = tiny_gpt2_lm.model.get_output_embeddings()
    ids, mask = batch(tiny_gpt2_lm)
    hook = head.register_forward_hook(lambda module, args, out: out * 2.0)  # a "scaled" head
    tiny_gpt2_lm.logprob_chunk = 4
    try:
        with pytest.raises(ValueError, match=r"not lm_head\(last hidden state\).*logprob_chunk"):
            tiny_gpt2_lm.logprobs(ids, mask)
    finally:
        hook.remove()
        tiny_gpt2_lm.logprob_chunk = None
