"""The toy RL problem of the agent tests: count "good" in 6 tokens after a few short prompts."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from textgym import LanguageModel
from textgym.tasks import Task

PROMPTS = ["the movie was", "i loved the", "a dog runs in the park", "the plot", "this film is"]


def good_count(prompt: str, completion: str) -> float:
    """The reward: how many times the completion says "good"."""
    return float(completion.split().count("good"))


def make_env(lm: LanguageModel, num_envs: int = 8, **kwargs: Any) -> Any:
    """A vector env over ``PROMPTS`` with ``good_count`` and T = 6 (any of them overridable)."""
    kwargs = {"reward": good_count, "max_new_tokens": 6, **kwargs}
    return gym.make_vec(
        "TextGen-v0", num_envs=num_envs, model=lm, task=Task.from_list(PROMPTS), **kwargs
    )
