"""Shared by the agent tests: the toy RL problem (count "good" in 6 tokens after a few short
prompts) and the reverse task's exact match."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from textgym.agents.dagger import collect_labelled

from textgym import LanguageModel
from textgym.preference import PreferencePair
from textgym.tasks import Task

PROMPTS = ["the movie was", "i loved the", "a dog runs in the park", "the plot", "this film is"]

PAIRS = [  # word-level preference pairs of different lengths (the DPO tests' data)
    PreferencePair("the movie was", "great and i loved it", "bad"),
    PreferencePair("the plot", "is very good", "is awful and bad"),
    PreferencePair("a dog", "plays in the park", "sits"),
    PreferencePair("this film", "was great", "was not good but bad"),
    PreferencePair("i hated", "nothing", "the acting and the story"),
    PreferencePair("the cat", "runs and plays", "sits on the red ball"),
    PreferencePair("a film", "so good", "so bad"),
    PreferencePair("the story", "was fun", "was long and dull"),
]


def good_count(prompt: str, completion: str) -> float:
    """The reward: how many times the completion says "good"."""
    return float(completion.split().count("good"))


def make_env(lm: LanguageModel, num_envs: int = 8, **kwargs: Any) -> Any:
    """A vector env over ``PROMPTS`` with ``good_count`` and T = 6 (any of them overridable)."""
    kwargs = {"reward": good_count, "max_new_tokens": 6, **kwargs}
    return gym.make_vec(
        "TextGen-v0", num_envs=num_envs, model=lm, task=Task.from_list(PROMPTS), **kwargs
    )


def reverse_greedy_scores(lm: LanguageModel, n: int) -> tuple[float, float]:
    """Greedy (agreement with the expert over its positions, exact match) on the first ``n`` test
    prompts of the reverse task (the oracle task)."""
    env = gym.make_vec("textgym/Reverse-v0", num_envs=n, model=lm, split="test", max_new_tokens=8)
    out = collect_labelled(
        lm,
        env,
        0.0,
        generator=torch.Generator(),
        greedy=True,
        options={"prompt_index": np.arange(n)},
    )
    m = out.data.mask > 0
    right = (out.learner_actions == out.data.labels) & m
    # A greedy text that stopped early is wrong too: its last action must be the expert's EOS.
    lengths = out.data.mask.sum(1).long()
    ended = out.data.labels[torch.arange(n), lengths - 1] == lm.eos_token_id
    return float(right.sum() / m.sum()), float(((right.sum(1) == lengths) & ended).float().mean())


def reverse_exact_match(lm: LanguageModel, n: int) -> float:
    """Greedy exact match on the first ``n`` test prompts of the reverse task."""
    return reverse_greedy_scores(lm, n)[1]
