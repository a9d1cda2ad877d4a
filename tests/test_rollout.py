"""textgym.rollout: GAE, KL estimators, whitening by hand; sampling; collect() on a tiny model."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from torch.testing import assert_close

from textgym import LanguageModel
from textgym.rollout import (
    Sampling,
    collect,
    evaluate,
    evaluate_policy,
    gae,
    kl_k1,
    kl_k3,
    kl_shaped_rewards,
    masked_mean,
    masked_var,
    whiten,
)
from textgym.tasks import Task

# ---------------------------------------------------------------------------- GAE by hand


def test_gae_matches_three_step_example_with_truncation_and_termination() -> None:
    # γ = 0.9, λ = 0.8, so γλ = 0.72.
    # Row 0 truncated after 3 steps, bootstrapped with V(s_3) = 0.4:
    #   δ2 = 1 + 0.9·0.4 - 0.7 = 0.66      A2 = 0.66
    #   δ1 = 0 + 0.9·0.7 - 0.6 = 0.03      A1 = 0.03 + 0.72·0.66   = 0.5052
    #   δ0 = 0 + 0.9·0.6 - 0.5 = 0.04      A0 = 0.04 + 0.72·0.5052 = 0.403744
    # Row 1 terminated after 2 steps (its bootstrap 0.3 must be ignored; step 3 is padding):
    #   δ1 = 2 + 0 - 0.5 = 1.5             A1 = 1.5
    #   δ0 = 0 + 0.9·0.5 - 1.0 = -0.55     A0 = -0.55 + 0.72·1.5 = 0.53
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(
        rewards,
        values,
        mask,
        gamma=0.9,
        lam=0.8,
        bootstrap_value=torch.tensor([0.4, 0.3]),
        terminated=torch.tensor([False, True]),
    )
    assert_close(adv, torch.tensor([[0.403744, 0.5052, 0.66], [0.53, 1.5, 0.0]]), rtol=0, atol=1e-6)
    assert_close(ret, torch.tensor([[0.903744, 1.1052, 1.36], [1.53, 2.0, 0.0]]), rtol=0, atol=1e-6)


def test_gae_without_bootstrap_treats_every_end_as_terminal() -> None:
    rewards = torch.tensor([[0.0, 1.0]])
    values = torch.tensor([[0.2, 0.3]])
    adv, _ = gae(rewards, values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    assert_close(adv, torch.tensor([[0.8, 0.7]]))  # Monte Carlo return minus V


# ---------------------------------------------------------------------------- KL, moments


def test_kl_estimators_match_direct_computation() -> None:
    logp = torch.log(torch.tensor([0.5, 0.1, 0.9]))
    logp_ref = torch.log(torch.tensor([0.25, 0.3, 0.9]))
    r = torch.tensor([0.25 / 0.5, 0.3 / 0.1, 1.0])  # π_ref / π_θ
    assert_close(kl_k1(logp, logp_ref), -torch.log(r))
    assert_close(kl_k3(logp, logp_ref), (r - 1) - torch.log(r))
    assert (kl_k3(logp, logp_ref) >= 0).all()


def test_k1_and_k3_are_unbiased_for_the_true_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=gen), 0)
    q = torch.softmax(torch.randn(6, generator=gen), 0)
    true_kl = (p * (p / q).log()).sum()
    a = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    assert_close(kl_k1(p.log()[a], q.log()[a]).mean(), true_kl, rtol=0.05, atol=0.005)
    assert_close(kl_k3(p.log()[a], q.log()[a]).mean(), true_kl, rtol=0.05, atol=0.005)


def test_kl_shaped_rewards_pay_score_on_last_valid_step() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    logp_ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_shaped_rewards(torch.tensor([1.0, 2.0]), logp, logp_ref, mask, beta=0.1)
    assert_close(kl, torch.tensor([[0.5, 0.0, -1.0], [1.0, -0.5, 0.0]]))
    assert_close(rewards, torch.tensor([[-0.05, 0.0, 1.1], [-0.1, 2.05, 0.0]]))


def test_masked_moments_and_whiten() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    valid = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert_close(masked_mean(x, mask), valid.mean())
    assert_close(masked_var(x, mask), valid.var())
    assert_close(masked_var(x, mask, unbiased=False), valid.var(unbiased=False))
    w = whiten(x, mask)
    assert_close(w[mask.bool()], (valid - valid.mean()) / valid.std(), rtol=1e-5, atol=1e-6)
    assert (w[~mask.bool()] == 0).all()
    assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.5]))


def test_whiten_with_a_sum_reduce_uses_global_moments() -> None:
    # A "reduce" that doubles stands for two processes holding identical shards: same moments.
    x, mask = torch.tensor([1.0, 2.0, 5.0]), torch.ones(3)
    assert_close(whiten(x, mask, reduce=lambda t: 2 * t), whiten(torch.cat([x, x]))[:3])


# ---------------------------------------------------------------------------- sampling


def test_sampling_validates() -> None:
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        Sampling(top_k=0)


def test_sampling_logprobs_is_a_filtered_distribution() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    logp = Sampling(temperature=2.0, top_k=2).logprobs(logits)
    assert_close(logp[0, :2], torch.log_softmax(logits[0, :2] / 2, 0))
    assert torch.isinf(logp[0, 2:]).all()
    allowed = torch.tensor([[False, True, True, False]])
    logp = Sampling().logprobs(logits, allowed)
    assert_close(logp[0, 1:3], torch.log_softmax(logits[0, 1:3], 0))


# ---------------------------------------------------------------------------- collect


PROMPTS = ["the movie was", "i loved the", "a dog runs in the park", "the plot"]


def words(prompt: str, completion: str) -> float:
    return float(len(completion.split()))


@pytest.fixture
def tiny_env(tiny_gpt2_dir: str) -> tuple[LanguageModel, gym.vector.VectorEnv]:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    env = gym.make_vec(
        "TextGen-v0",
        num_envs=8,
        model=lm,
        task=Task.from_list(PROMPTS),
        reward=words,
        max_new_tokens=6,
    )
    return lm, env


def test_collect_masks_steps_after_each_episode_end(
    tiny_env: tuple[LanguageModel, gym.vector.VectorEnv],
) -> None:
    lm, env = tiny_env
    # The final norm outputs one vector h for every state, so that p(EOS) is the same at every
    # step (about 0.2): some episodes terminate early, others are truncated.
    with torch.no_grad():
        ln_f, head = lm.model.transformer.ln_f, lm.model.lm_head.weight
        ln_f.weight.zero_()
        ln_f.bias.copy_(head[lm.eos_token_id] / head[lm.eos_token_id].norm() ** 2 * 2.75)
    out = collect(lm, env, generator=torch.Generator().manual_seed(0), seed=0)
    mask, lengths = out.completion_mask, out.lengths
    assert out.terminated.any()
    assert out.truncated.any()
    assert not (out.terminated & out.truncated).any()
    # Each row's steps are a prefix; the last one is EOS exactly when the episode terminated.
    assert (mask == (torch.arange(mask.shape[1])[None, :] < lengths[:, None]).float()).all()
    last = out.completion_ids[torch.arange(len(out)), lengths - 1]
    assert ((last == lm.eos_token_id) == out.terminated).all()
    assert (out.truncated == (lengths == 6)).all()
    # Masked steps carry nothing; rewards are the env's, paid once per episode, for the env's text.
    assert (out.logprobs[mask == 0] == 0).all()
    assert (out.completion_ids[mask == 0] == lm.pad_token_id).all()
    expected = torch.tensor([words(p, t) for p, t in zip(out.prompts, out.texts, strict=True)])
    assert_close(out.rewards, expected)
    assert ((out.token_rewards != 0).sum(1) <= 1).all()
    assert out.prompts == [PROMPTS[i] for i in out.prompt_indices]


def test_collect_reproduces_under_seeds_and_evaluate_policy_is_deterministic(
    tiny_env: tuple[LanguageModel, gym.vector.VectorEnv],
) -> None:
    lm, env = tiny_env
    a = collect(lm, env, generator=torch.Generator().manual_seed(3), seed=1)
    b = collect(lm, env, generator=torch.Generator().manual_seed(3), seed=1)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert a.texts == b.texts
    first = evaluate_policy(lm, env, ref=lm, seed=5, rounds=2)
    assert first == evaluate_policy(lm, env, ref=lm, seed=5, rounds=2)
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)


def test_values_come_from_the_policy_trunk_at_each_step(
    tiny_env: tuple[LanguageModel, gym.vector.VectorEnv],
) -> None:
    lm, env = tiny_env

    def head(hidden: torch.Tensor) -> torch.Tensor:  # a fixed "value head": (..., H) -> (...)
        return hidden[..., :3].sum(-1)

    out = collect(lm, env, generator=torch.Generator().manual_seed(0), seed=0, value_fn=head)
    assert out.values is not None
    assert out.bootstrap_values is not None
    # The same values from one full forward pass: s_t ends at position P - 1 + t.
    with torch.no_grad():
        _, hidden = lm.forward_with_hidden(out.input_ids, out.attention_mask)
    P, T = out.prompt_ids.shape[1], out.completion_ids.shape[1]
    full = head(hidden)  # (B, L)
    assert_close(out.values, full[:, P - 1 : P - 1 + T] * out.completion_mask, rtol=1e-4, atol=1e-5)
    last = (P - 1 + out.lengths)[:, None]
    assert_close(out.bootstrap_values, full.gather(1, last).squeeze(1), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        values = evaluate(lm, out, value_head=head)[2]
    assert values is not None
    assert_close(values, out.values, rtol=1e-4, atol=1e-5)


def test_rollout_rows_index_every_field(
    tiny_env: tuple[LanguageModel, gym.vector.VectorEnv],
) -> None:
    lm, env = tiny_env
    out = collect(lm, env, generator=torch.Generator().manual_seed(0), seed=0)
    sub = out[torch.tensor([5, 1])]
    assert len(sub) == 2
    assert sub.texts == [out.texts[5], out.texts[1]]
    assert torch.equal(sub.completion_ids, out.completion_ids[[5, 1]])
    assert list(sub.prompt_indices) == [out.prompt_indices[5], out.prompt_indices[1]]
    assert out[2:4].prompts == out.prompts[2:4]
