"""TransformerPolicy for SB3's unmodified PPO: heads equal the LM's, SB3 trains and saves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from textgym.agents.sb3 import TransformerPolicy
from torch.testing import assert_close

from textgym import LanguageModel
from textgym.rollout import evaluate_policy
from textgym.tasks import Task
from textgym.training import frozen_copy

PROMPTS = ["the movie was", "i loved the", "a dog runs in the park", "the plot"]


def good_count(prompt: str, completion: str) -> float:
    # Never constant on a random model, so that SB3's normalised advantages are not all zero.
    return float(completion.split().count("good")) + 0.1 * len(set(completion.split()))


def make_vec(model_dir: str, n: int = 4) -> DummyVecEnv:
    task = Task.from_list(PROMPTS)

    def make() -> Any:
        return gym.make(
            "TextGen-v0", model=model_dir, task=task, reward=good_count, max_new_tokens=5
        )

    env = DummyVecEnv([make] * n)
    env.seed(0)
    return env


def test_heads_equal_the_language_model(tiny_gpt2_dir: str) -> None:
    env = make_vec(tiny_gpt2_dir)
    model = PPO(
        TransformerPolicy,
        env,
        n_steps=8,
        batch_size=16,
        policy_kwargs={"model": tiny_gpt2_dir},
        device="cpu",
        seed=0,
    )
    obs = env.reset()
    obs_t, _ = model.policy.obs_to_tensor(obs)
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    rows = []
    for ids, mask in zip(obs["input_ids"], obs["attention_mask"], strict=True):
        n = int(mask.sum())
        rows.append(
            lm.step(torch.as_tensor(ids[None, :n]), torch.ones(1, n, dtype=torch.long))[0][0]
        )
    expected = torch.log_softmax(torch.stack(rows), -1)  # (B, V)
    actions = torch.tensor([3, 5, 7, 9])
    with torch.no_grad():
        values, logp, entropy = model.policy.evaluate_actions(obs_t, actions)
    assert_close(logp, expected[torch.arange(4), actions], rtol=0, atol=1e-5)
    assert values.shape == (4, 1)
    assert entropy is not None
    assert entropy.shape == (4,)
    # SB3 stores observations as float32 in its buffer: the policy must read them the same way.
    as_float = {k: v.float() for k, v in obs_t.items()}
    with torch.no_grad():
        assert_close(model.policy.evaluate_actions(as_float, actions)[1], logp)
    greedy, _ = model.predict(obs, deterministic=True)
    assert (greedy == expected.argmax(-1).numpy()).all()


def test_sb3_ppo_trains_saves_and_loads(tiny_gpt2_dir: str, tmp_path: Path) -> None:
    env = make_vec(tiny_gpt2_dir)
    model = PPO(
        TransformerPolicy,
        env,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        learning_rate=1e-3,
        policy_kwargs={"model": tiny_gpt2_dir},
        device="cpu",
        seed=0,
    )
    before = next(model.policy.lm_model.parameters()).detach().clone()
    model.learn(64)
    assert not torch.equal(before, next(model.policy.lm_model.parameters()))
    assert not model.policy.lm_model.training  # dropout stays off in SB3's training mode
    model.save(tmp_path / "sb3")
    loaded = PPO.load(tmp_path / "sb3", env=env, device="cpu")
    obs = env.reset()
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_wrong_action_space_is_refused(tiny_gpt2_dir: str) -> None:
    obs_space = spaces.Dict(
        {
            "input_ids": spaces.Box(0, 63, (8,), np.int64),
            "attention_mask": spaces.Box(0, 1, (8,), np.int64),
        }
    )
    with pytest.raises(ValueError, match="Discrete\\(64\\)"):
        TransformerPolicy(obs_space, spaces.Discrete(10), lambda _: 1e-3, model=tiny_gpt2_dir)


@pytest.mark.slow
def test_sb3_ppo_with_the_transformer_policy_raises_sentiment() -> None:
    lm = LanguageModel.from_pretrained(device="cpu")
    ref = frozen_copy(lm)
    kwargs = {"model": lm, "task": "reviews", "reward": "sentiment", "max_new_tokens": 16}
    held_out = gym.make_vec("TextGen-v0", num_envs=64, split="validation", **kwargs)
    before = evaluate_policy(lm, held_out, ref=ref, seed=1)

    def make() -> Any:
        return gym.make("TextGen-v0", split="train", **kwargs)

    venv = DummyVecEnv([make] * 16)
    venv.seed(0)
    model = PPO(
        TransformerPolicy,
        venv,
        n_steps=64,
        batch_size=256,
        n_epochs=1,
        learning_rate=3e-4,
        gamma=1.0,
        policy_kwargs={"model": lm},
        seed=0,
        device="cpu",
    )
    model.learn(4096)  # trains lm.model in place: the policy wraps it
    after = evaluate_policy(lm, held_out, ref=ref, seed=1)
    # Measured (seed 0): 0.533 -> 0.736 (KL 4.4); experiments/repro_rl_sentiment.py
    assert after["reward"] > before["reward"] + 0.1, (before, after)


def test_make_vec_env_needs_render_mode_none_and_says_so(tiny_gpt2_dir: str) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    task = Task.from_list(PROMPTS)
    kwargs = {"model": tiny_gpt2_dir, "task": task, "reward": good_count, "max_new_tokens": 5}
    with pytest.raises(ValueError, match=r"env_kwargs=\{'render_mode': None\}"):
        make_vec_env("TextGen-v0", n_envs=2, env_kwargs=kwargs)
    venv = make_vec_env("TextGen-v0", n_envs=2, env_kwargs={**kwargs, "render_mode": None})
    assert venv.reset()["input_ids"].shape[0] == 2
