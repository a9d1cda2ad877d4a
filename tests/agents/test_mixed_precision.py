"""Mixed precision: bf16 compute under autocast, float32 weights, gradients, optimizer state and
log-probs; bounded difference from float32; the setting survives every copy of the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from textgym.agents import PPO, PPOConfig
from toy import make_env

import textgym
from textgym import LanguageModel, decoding
from textgym.hf import as_compute_dtype
from textgym.training import adamw, frozen_copy, sync_weights

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


def test_frozen_copies_hold_bf16_weights_and_stay_close(
    pair: tuple[LanguageModel, LanguageModel],
) -> None:
    fp32, bf16 = pair
    copy = frozen_copy(bf16)
    assert all(p.dtype == torch.bfloat16 for p in copy.model.parameters())
    assert all(p.dtype == torch.float32 for p in frozen_copy(fp32).model.parameters())
    ids, mask = fp32.encode(PROMPTS)
    with torch.no_grad():
        diff = (fp32.logprobs(ids, mask) - copy.logprobs(ids, mask)).abs()
    assert 0 < diff.max() < 0.2, diff.max()
    assert diff.mean() < 0.03, diff.mean()


def test_sync_weights_copies_every_parameter_with_a_cast(embedded_lm: LanguageModel) -> None:
    policy = embedded_lm.wrap(frozen_copy(embedded_lm).model.requires_grad_(True))
    policy.compute_dtype = torch.bfloat16
    target = frozen_copy(policy)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p))
    sync_weights(target, policy)
    got = dict(target.model.named_parameters())
    for name, p in policy.model.named_parameters():
        assert got[name].dtype == torch.bfloat16
        assert torch.equal(got[name], p.detach().to(torch.bfloat16)), name


def test_bf16_agents_sample_with_a_synced_low_precision_copy() -> None:
    bf16 = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu", compute_dtype="bf16")
    env = make_env(bf16, num_envs=4, reward=lambda prompt, completion: float(len(completion)))
    agent = PPO(bf16, env, config=PPOConfig(n_minibatches=2, n_epochs=1), progress_bar=False)
    assert agent.behaviour is not None
    agent.learn(1)  # the policy moved: the next round must sample with its new weights
    rollout = agent.collect()
    for name, p in agent.behaviour.model.named_parameters():
        master = dict(bf16.model.named_parameters())[name]
        assert torch.equal(p, master.detach().to(torch.bfloat16)), name
    # The rollout's log-probs are the copy's; the trainer's (float32 masters under autocast)
    # differ from them only by bf16 rounding, so the first ratio of an update stays near 1.
    with torch.no_grad():
        logp, _, _ = agent.trainable(rollout)
    mask = rollout.completion_mask > 0
    diff = (logp - rollout.logprobs)[mask].abs()
    assert diff.max() < 0.2, diff.max()
    assert diff.mean() < 0.03, diff.mean()
    fp32 = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    env32 = make_env(fp32, num_envs=4, reward=lambda prompt, completion: 1.0)
    assert PPO(fp32, env32, config=PPOConfig(n_minibatches=2), progress_bar=False).behaviour is None


def test_adamw_is_fused_on_cpu_and_steps_like_the_default() -> None:
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused, plain = adamw(a, lr=1e-2, weight_decay=0.1), torch.optim.AdamW(b, 1e-2, weight_decay=0.1)
    assert fused.param_groups[0]["fused"]
    for _ in range(3):
        for p, q in zip(a, b, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_a_bf16_agent_resumes_in_bf16_bit_for_bit(tmp_path: Path) -> None:
    def build() -> tuple[LanguageModel, Any]:
        lm = LanguageModel.from_pretrained(
            textgym.DEFAULT_MODEL, device="cpu", compute_dtype="bf16"
        )
        return lm, make_env(lm, num_envs=4, reward=lambda prompt, completion: len(completion))

    lm, env = build()
    config = PPOConfig(n_minibatches=2, n_epochs=1, beta=0.1)
    agent = PPO(lm, env, config=config, progress_bar=False)
    agent.learn(1)
    agent.save(tmp_path)
    straight = agent.learn(2)
    resumed = PPO.load(tmp_path, build()[1], device="cpu", progress_bar=False)
    assert resumed.policy.compute_dtype is torch.bfloat16
    assert resumed.behaviour is not None
    again = resumed.learn(2)
    for key in ("reward", "kl", "loss"):
        assert [r[key] for r in again] == [r[key] for r in straight], key
