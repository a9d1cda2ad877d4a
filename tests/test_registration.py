"""Every registered id: string entry points, gym.make / make_vec, check_env."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import textgym
from textgym.envs import TextGenEnv, TextGenVectorEnv
from textgym.registration import IDS

HAVE_MODEL = (Path(textgym.DEFAULT_MODEL) / "config.json").is_file()
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="embedded model not built yet")


def test_ids_registered_with_string_entry_points() -> None:
    gym.register_envs(textgym)
    assert set(IDS) == {
        "TextGen-v0",
        "textgym/Reviews-v0",
        "textgym/Concepts-v0",
        "textgym/Reverse-v0",
        "textgym/TargetSum-v0",
        "textgym/GridNav-v0",
        "textgym/Arithmetic-v0",
        "textgym/Format-v0",
    }
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == "textgym.envs:TextGenEnv"
        assert spec.vector_entry_point == "textgym.envs:TextGenVectorEnv"
        assert spec.max_episode_steps is None  # the env ends its own episodes


def _model_for(env_id: str, tiny_gpt2_dir: str) -> str:
    """The tiny fixture model, except for the dynamic-expert tasks (their expert needs every
    action word as one token, which the fixture's word-level tokenizer maps to <unk>) and the
    arithmetic task (its prompts need more than the fixture's 64 positions)."""
    embedded = IDS[env_id].get("task") in ("target_sum", "grid_nav", "arithmetic")
    return textgym.DEFAULT_MODEL if embedded else tiny_gpt2_dir


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_check_env_every_id_on_tiny_model(env_id: str, tiny_gpt2_dir: str) -> None:
    # The word-level fixture tokenizer maps most task words to <unk>: fine for the API checks.
    env = gym.make(env_id, model=_model_for(env_id, tiny_gpt2_dir), max_new_tokens=8)
    assert isinstance(env.unwrapped, TextGenEnv)
    check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_make_vec_is_native(env_id: str, tiny_gpt2_dir: str) -> None:
    venv = gym.make_vec(
        env_id, num_envs=3, model=_model_for(env_id, tiny_gpt2_dir), max_new_tokens=4
    )
    assert isinstance(venv, TextGenVectorEnv)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    obs, info = venv.reset(seed=0)
    assert obs["input_ids"].shape[0] == 3
    assert info["_prompt"].all()
    for _ in range(5):
        obs, _r, _te, _tr, info = venv.step(venv.action_space.sample())
    assert obs in venv.observation_space
    venv.close()


def test_per_task_rewards(tiny_gpt2_dir: str) -> None:
    env = gym.make("textgym/Concepts-v0", model=tiny_gpt2_dir, max_new_tokens=4)
    env.reset(seed=0)
    info: dict = {}
    for _ in range(4):
        _, _, te, tr, info = env.step(0 if _ == 3 else 5)
        if te or tr:
            break
    assert set(info["reward_components"]) == {"bleu", "rougeL"}
    assert len(info["references"]) > 1
    rev = gym.make("textgym/Reverse-v0", model=tiny_gpt2_dir).unwrapped
    rev.reset(seed=0)
    assert isinstance(rev.expert_action(), int)


@needs_model
def test_textgen_v0_defaults_offline() -> None:
    env = gym.make("TextGen-v0")
    check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=0)
    assert env.unwrapped.task.name == "reviews"
    assert env.unwrapped.reward_fn.name == "sentiment"
    assert info["prompt"].startswith("Review:")
    done, r = False, 0.0
    while not done:
        _obs, r, te, tr, info = env.step(env.action_space.sample())
        done = te or tr
    assert isinstance(r, float)
    assert isinstance(info["text"], str)


@needs_model
def test_reverse_expert_solves_on_embedded_model() -> None:
    venv = gym.make_vec("textgym/Reverse-v0", num_envs=8)
    venv.reset(seed=0)
    live = np.ones(8, dtype=bool)
    total = np.zeros(8)
    for _ in range(venv.unwrapped.config.max_new_tokens):
        _, r, te, tr, _ = venv.step(venv.unwrapped.expert_actions())
        total += r * live
        live &= ~(te | tr)
    assert not live.any()
    assert (total == 1.0).all()
