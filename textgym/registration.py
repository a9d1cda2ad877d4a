"""Every Gymnasium id of textgym, and nothing else.

- ``TextGen-v0``: the general env; ``model``, ``task``, ``reward``, ``max_new_tokens``,
  ``max_prompt_tokens``, ``split``, ``truncation``, ``action_mask``, ``fixed_horizon``, ...
  are arguments (the fields of ``textgym.envs.EnvArgs``; see ``textgym.envs.TextGenEnv``). With
  no arguments: the embedded model, the review task, the sentiment reward.
- ``textgym/Reviews-v0``, ``textgym/Concepts-v0``, ``textgym/Reverse-v0``: the built-in tasks
  with their reward pinned; ``textgym/TargetSum-v0``, ``textgym/GridNav-v0``: the dynamic-expert
  tasks with their success reward; ``textgym/Arithmetic-v0``, ``textgym/Format-v0``: the
  verifiable-reward tasks with their exact checkers; ``textgym/Calculator-v0``,
  ``textgym/Guessing-v0``: the multi-turn tasks (``textgym.multiturn``) with their responders;
  ``model`` and the other arguments can still be passed.

Entry points are strings, so importing textgym loads no env code; each id has a
``vector_entry_point``, so ``gym.make_vec(id, num_envs=B)`` builds the natively batched
``TextGenVectorEnv``. A change to the reward, termination or observation of an id bumps its
version.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

_ENTRY = "textgym.envs:TextGenEnv"
_VECTOR_ENTRY = "textgym.envs:TextGenVectorEnv"

IDS: dict[str, dict[str, Any]] = {
    "TextGen-v0": {},
    "textgym/Reviews-v0": {"task": "reviews", "reward": "sentiment", "max_new_tokens": 32},
    "textgym/Concepts-v0": {
        "task": "concepts",
        "reward": {"bleu": 0.5, "rougeL": 0.5},
        "max_new_tokens": 32,
    },
    "textgym/Reverse-v0": {"task": "reverse", "reward": "exact_match", "max_new_tokens": 16},
    # Dynamic-expert tasks (textgym.dynamic_tasks): the task's own success reward; the horizon
    # leaves room to make and repair mistakes (the expert needs at most 13 tokens).
    "textgym/TargetSum-v0": {"task": "target_sum", "max_new_tokens": 24},
    "textgym/GridNav-v0": {"task": "grid_nav", "max_new_tokens": 24},
    # Verifiable-reward tasks (textgym.verifiable): exact checkers; a 5-step worked solution
    # takes about 50 tokens of the embedded tokenizer.
    "textgym/Arithmetic-v0": {"task": "arithmetic", "reward": "math", "max_new_tokens": 64},
    "textgym/Format-v0": {"task": "format", "reward": "format", "max_new_tokens": 24},
}
"""id -> the keyword arguments it registers (the caller's arguments override them)."""

MULTI_TURN_IDS: dict[str, dict[str, Any]] = {
    # The budget counts policy and environment tokens: the expert's 2-call calculator dialogue
    # takes about 50, a 6-guess game 36.
    "textgym/Calculator-v0": {"task": "calculator", "max_new_tokens": 64},
    "textgym/Guessing-v0": {"task": "guessing", "max_new_tokens": 48},
}
"""The multi-turn tasks' ids (``textgym.multiturn``), registered like :data:`IDS`."""


def register_all() -> None:
    """Register the ids in :data:`IDS` and :data:`MULTI_TURN_IDS` (idempotent: a re-import does
    not warn)."""
    for env_id, kwargs in {**IDS, **MULTI_TURN_IDS}.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=_ENTRY,
            vector_entry_point=_VECTOR_ENTRY,
            kwargs=kwargs,
            # Episodes end inside the env (EOS / max_new_tokens): no TimeLimit wrapper.
            max_episode_steps=None,
        )


register_all()
