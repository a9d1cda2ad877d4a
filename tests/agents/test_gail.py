"""GAIL: the discriminator loss and rewards by hand, absorbing states, horizon, resume, learning."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
import torch
from textgym.agents import GAIL, GAILConfig, PPOConfig
from textgym.agents.gail import (
    Transitions,
    absorbing_after_eos,
    discriminator_loss,
    fold_absorbing,
    reward_airl,
    reward_gail,
)
from torch.testing import assert_close
from toy import reverse_greedy_scores

import textgym
from textgym import LanguageModel
from textgym.rollout import collect
from textgym.tasks import ReferenceExpert, Task, load

PROMPTS = ["red blue green", "one two", "four five six seven", "the dog runs"]
REFS = [" green blue red", " two one", " seven six five four", " runs dog the"]


def make_env(lm: LanguageModel, num_envs: int = 4, **kwargs: Any) -> Any:
    task = Task.from_list(PROMPTS, REFS, expert=ReferenceExpert())
    kwargs = {"fixed_horizon": True, **kwargs}
    return gym.make_vec(
        "TextGen-v0",
        num_envs=num_envs,
        model=lm,
        task=task,
        reward="exact_match",
        max_new_tokens=6,
        **kwargs,
    )


@pytest.fixture
def lm(tiny_gpt2_dir: str) -> LanguageModel:
    return LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")


def small_config(**ppo: Any) -> GAILConfig:
    ppo_cfg = PPOConfig(lr=1e-3, n_epochs=1, n_minibatches=2, **ppo)
    return GAILConfig(ppo=ppo_cfg, disc_epochs=1, disc_batch_size=2)


def test_discriminator_loss_and_rewards_by_hand() -> None:
    le, lp = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.3, -2.0])
    d_e, d_p = torch.sigmoid(le), torch.sigmoid(lp)
    expected = -torch.log(d_e).mean() - torch.log(1 - d_p).mean()
    assert_close(discriminator_loss(le, lp), expected)
    x = torch.tensor([-30.0, -1.0, 0.0, 2.0, 30.0], dtype=torch.float64)
    d = torch.sigmoid(x)
    assert_close(reward_gail(x[1:4]), -torch.log(1 - d[1:4]))
    assert_close(reward_airl(x[1:4]), torch.log(d[1:4]) - torch.log(1 - d[1:4]))
    # Stable where the direct formulas are not: D -> 1 (1 - D rounds to 0) and D -> 0.
    assert torch.isfinite(reward_gail(x)).all()
    assert torch.isfinite(reward_airl(x)).all()
    assert reward_gail(x)[-1] == pytest.approx(30.0)


def test_absorbing_states_and_folding() -> None:
    ids = torch.tensor([[5, 0, 7, 7], [5, 6, 7, 8], [0, 9, 9, 9]])
    absorbing = absorbing_after_eos(ids, eos=0)
    assert absorbing.tolist() == [
        [False, False, True, True],
        [False] * 4,
        [False, True, True, True],
    ]
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    folded = fold_absorbing(r, absorbing)
    expected = [[1.0, 2.0 + 3.0 + 4.0, 0.0, 0.0], [1.0] * 4, [1.0 + 2.0 + 3.0 + 4.0, 0.0, 0.0, 0.0]]
    assert_close(folded, torch.tensor(expected))
    assert_close(folded.sum(1), r.sum(1))  # every episode's return is unchanged


def test_requires_fixed_horizon(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="fixed_horizon=True"):
        GAIL(lm, make_env(lm, fixed_horizon=False), list(zip(PROMPTS, REFS, strict=True)))


def test_fixed_horizon_episodes_all_have_the_same_length(lm: LanguageModel) -> None:
    env = make_env(lm, num_envs=8)
    raw = collect(lm, env, generator=torch.Generator().manual_seed(0), seed=0)
    assert (raw.completion_mask.sum(1) == 6).all()  # every episode lasts exactly T steps
    agent = GAIL(
        lm, env, list(zip(PROMPTS, REFS, strict=True)), config=small_config(), progress_bar=False
    )
    assert agent.expert.completion_ids.shape == (len(PROMPTS), 6)  # τ_E padded to T steps too
    assert agent.expert.absorbing.sum(1).tolist() == [6 - (len(r.split()) + 1) for r in REFS]


def direct_logits(agent: GAIL, x: Transitions) -> torch.Tensor:
    """D_w's logits row by row, without padding: log π_w(a_t|s_t) - log π_θ(a_t|s_t), or b_w[n]."""
    out = torch.zeros(x.completion_ids.shape)
    for b in range(len(x)):
        prompt = x.prompt_ids[b][x.prompt_mask[b] > 0].tolist()
        n = int((~x.absorbing[b]).sum())
        ids = torch.tensor([prompt + x.completion_ids[b, :n].tolist()])
        with torch.no_grad():
            lw = agent.discriminator.model(input_ids=ids).logits[0].log_softmax(-1)
            lt = agent.policy.model(input_ids=ids).logits[0].log_softmax(-1)
        for t in range(x.completion_ids.shape[1]):
            if t < n:
                a, pos = int(x.completion_ids[b, t]), len(prompt) - 1 + t
                out[b, t] = lw[pos, a] - lt[pos, a]
            else:
                out[b, t] = agent.discriminator.absorbing_logit[n]
    return out


def test_relabel_pays_the_discriminator_reward_on_real_steps(lm: LanguageModel) -> None:
    env = make_env(lm, num_envs=8)
    demos = list(zip(PROMPTS, REFS, strict=True))
    agent = GAIL(lm, env, demos, config=small_config(beta=0.0), progress_bar=False)
    raw = collect(
        lm, env, generator=torch.Generator().manual_seed(1), seed=1, value_fn=agent.ppo._value_fn()
    )
    raw.completion_ids[0, 2] = lm.eos_token_id  # at least one episode ends before T
    absorbing = absorbing_after_eos(raw.completion_ids, lm.eos_token_id)
    episodes = Transitions(raw.prompt_ids, raw.prompt_mask, raw.completion_ids, absorbing)
    with torch.no_grad():
        assert_close(agent._logits(episodes), torch.zeros(8, 6))  # π_w = π_θ: D = 1/2
    out, stats = agent.relabel(raw)
    assert {"disc_loss", "d_expert", "d_policy"} <= set(stats)
    assert torch.equal(out.completion_mask, (~absorbing).float())
    assert out.completion_mask[0].tolist() == [1, 1, 1, 0, 0, 0]
    logits = direct_logits(agent, episodes)  # after the discriminator's steps
    assert logits.abs().max() > 1e-3
    with torch.no_grad():
        assert_close(agent._logits(episodes), logits, atol=1e-4, rtol=1e-4)
    expected = fold_absorbing(reward_airl(logits), absorbing) * out.completion_mask
    assert_close(out.token_rewards, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(out.rewards, raw.rewards)  # the env's reward is kept for logging


# ---------------------------------------------------------------------------- learning


def agreement(lm: LanguageModel, n: int = 150) -> tuple[float, float]:
    """Greedy (expert-agreement rate over the expert's positions, exact match) on test prompts."""
    return reverse_greedy_scores(lm, n)


@pytest.mark.slow
def test_gail_beats_the_untrained_policy() -> None:
    torch.set_num_threads(1)  # 2 threads beside another busy process run 3-6x slower
    gym.register_envs(textgym)
    lm = LanguageModel.from_pretrained(device="cpu")
    before = agreement(lm)
    env = gym.make_vec(
        "textgym/Reverse-v0", num_envs=32, model=lm, max_new_tokens=8, fixed_horizon=True
    )
    demos = load("reverse", split="train").demonstrations()[:500]
    agent = GAIL(lm, env, demos, progress_bar=False)
    agent.learn(30)
    after = agreement(lm)
    assert after[0] > before[0] + 0.05, (before, after)
