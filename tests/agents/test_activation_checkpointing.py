"""Activation checkpointing: the same gradients, fewer saved activations, dropout stays off."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from transformers import GPT2Config, GPT2LMHeadModel

from textgym import LanguageModel
from textgym.training import checkpoint_activations


def _saved_bytes_and_grads(lm: LanguageModel, ids: torch.Tensor) -> tuple[int, list[torch.Tensor]]:
    """Bytes autograd saves for backward in one log-prob pass, and the parameters' gradients."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    lm.model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp = lm.logprobs(ids, torch.ones_like(ids))  # (B, L - 1)
    logp.sum().backward()
    return saved, [p.grad.clone() for p in lm.model.parameters() if p.grad is not None]


@pytest.fixture
def lm(tiny_gpt2_dir: str) -> LanguageModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=3, n_head=4)
    assert config.resid_pdrop > 0  # dropout in the config: it must stay off all the same
    return LanguageModel(
        GPT2LMHeadModel(config).eval(),
        LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu").tokenizer,
    )


def test_checkpointed_gradients_equal_and_fewer_activations_are_saved(lm: LanguageModel) -> None:
    ids = torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(1))
    plain_bytes, plain = _saved_bytes_and_grads(lm, ids)
    checkpoint_activations(lm)
    lm.model.eval()  # agents call eval() after the switch: checkpointing must survive it
    ckpt_bytes, ckpt = _saved_bytes_and_grads(lm, ids)
    for a, b in zip(plain, ckpt, strict=True):
        assert_close(a, b)  # no dropout in the recomputation, same arithmetic
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)
    checkpoint_activations(lm, enabled=False)
    assert _saved_bytes_and_grads(lm, ids)[0] == plain_bytes


def test_a_model_without_checkpointable_blocks_is_refused() -> None:
    class Plain(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    fake = LanguageModel.__new__(LanguageModel)
    fake.model = Plain()  # type: ignore[assignment]  # just enough of a LanguageModel
    with pytest.raises(ValueError, match="no transformers GradientCheckpointingLayer"):
        checkpoint_activations(fake)
