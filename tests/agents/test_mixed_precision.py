"""Mixed precision: bf16 compute under autocast, float32 weights, gradients, optimizer state and
log-probs; bounded difference from float32; the setting survives every copy of the model."""

from __future__ import annotations

import pytest
import torch
from textgym.agents import PPO, PPOConfig
from toy import make_env

import textgym
from textgym import LanguageModel, decoding
from textgym.hf import as_compute_dtype
from textgym.training import frozen_copy

PROMPTS = ["Review: The plot of this film was", "Review: I watched"]


@pytest.fixture
def pair(embedded_lm: LanguageModel) -> tuple[LanguageModel, LanguageModel]:
    bf16 = embedded_lm.wrap()
    bf16.compute_dtype = torch.bfloat16
    return embedded_lm, bf16


def test_compute_dtype_names_and_errors() -> None:
    assert as_compute_dtype(None) is None
    assert as_compute_dtype("bf16") is torch.bfloat16
    assert as_compute_dtype("bfloat16") is torch.bfloat16
    assert as_compute_dtype(torch.float16) is torch.float16
    for bad in ("fp8", torch.float32, "float32", 16):
        with pytest.raises(ValueError, match="compute_dtype must be"):
            as_compute_dtype(bad)  # type: ignore[arg-type]  # under test


def test_bf16_log_probs_are_float32_and_close_to_float32(
    pair: tuple[LanguageModel, LanguageModel],
) -> None:
    fp32, bf16 = pair
    ids, mask = fp32.encode(PROMPTS)
    with torch.no_grad():
        a, b = fp32.logprobs(ids, mask), bf16.logprobs(ids, mask)
        assert bf16.forward(ids, mask).dtype == torch.bfloat16  # the matmuls ran in bf16
        step_a, _ = fp32.step(ids, mask)
        step_b, _ = bf16.step(ids, mask)
    assert a.dtype == b.dtype == step_b.dtype == torch.float32
    diff = (a - b).abs()
    assert 0 < diff.max() < 0.2, diff.max()  # bf16 did run, and stays within 0.2 nats
    assert diff.mean() < 0.03, diff.mean()
    assert (step_a.log_softmax(-1) - step_b.log_softmax(-1)).abs().max() < 0.2


def test_the_setting_survives_copies_and_loading(pair: tuple[LanguageModel, LanguageModel]) -> None:
    _, bf16 = pair
    assert frozen_copy(bf16).compute_dtype is torch.bfloat16
    assert bf16.wrap(device="cpu").compute_dtype is torch.bfloat16
    loaded = LanguageModel.from_pretrained(
        textgym.DEFAULT_MODEL, device="cpu", compute_dtype="bf16"
    )
    assert loaded.compute_dtype is torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.float32  # master weights


def test_sampling_under_bf16_draws_valid_tokens(pair: tuple[LanguageModel, LanguageModel]) -> None:
    _, bf16 = pair
    g = torch.Generator().manual_seed(0)
    out = decoding.generate(bf16, PROMPTS, max_new_tokens=8, do_sample=True, generator=g)
    assert out.logprobs.dtype == torch.float32
    assert bool(((out.completion_ids >= 0) & (out.completion_ids < bf16.vocab_size)).all())
    assert bool((out.logprobs <= 0).all())


def test_a_bf16_ppo_update_keeps_float32_weights_and_optimizer_state() -> None:
    bf16 = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu", compute_dtype="bf16")
    before = [p.detach().clone() for p in bf16.model.parameters()]
    env = make_env(bf16, num_envs=4, reward=lambda prompt, completion: float(len(completion)))
    agent = PPO(bf16, env, config=PPOConfig(n_minibatches=2, n_epochs=1), progress_bar=False)
    row = agent.learn(1)[0]
    assert all(torch.isfinite(torch.tensor(v)) for v in row.values())
    params = list(bf16.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    moments = [s["exp_avg"] for s in agent.optimizer.state.values()]
    assert moments
    assert all(m.dtype == torch.float32 for m in moments)
