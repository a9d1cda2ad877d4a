"""Bad arguments to the envs, and a reward that raises in the middle of an episode.

A step whose reward raises must leave the env exactly as it was, so that the caller can retry the
step (or reset): before the fix the token was written and the clocks advanced first, so a retry
scored a completion one token too long or hit an IndexError past the observation's end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

EOS = 0  # the embedded model's EOS id
PROMPTS = ["The movie was", "Hello there", "A cat sat on"]


class _FailsOnce:
    """Counts its calls and raises on the ``fail_at``-th one (0-based) only."""

    needs_references = False

    def __init__(self, fail_at: int | None = 0) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def _tick(self) -> None:
        call, self.calls = self.calls, self.calls + 1
        if call == self.fail_at:
            raise RuntimeError(f"reward service unavailable (call {call})")


class FlakyReward(_FailsOnce):
    """Words in the completion; raises on its ``fail_at``-th call only."""

    name = "flaky_words"
    token_level = False

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Any = None
    ) -> np.ndarray:
        self._tick()
        return np.array([len(c.split()) + 0.5 for c in completions], dtype=np.float32)


class FlakyTokenReward(_FailsOnce):
    """A token-level reward (+1 per token id 5) that raises on its ``fail_at``-th step only."""

    name = "flaky_tokens"
    token_level = True

    def __call__(self, *args: Any) -> np.ndarray:
        raise NotImplementedError

    def step(self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self._tick()
        return (actions == 5).astype(np.float32)


def _state(env: Any) -> dict[str, Any]:
    """Everything an episode is: the batched arrays, and the env's own episode flags."""
    u = env.unwrapped
    out = {k: np.copy(v) for k, v in vars(u._ep).items() if isinstance(v, np.ndarray)}
    for flag in ("_needs_reset", "_ended"):
        if hasattr(u, flag):
            out[flag] = np.copy(getattr(u, flag))
    return out


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _assert_same_step(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    obs, reward, terminated, truncated, info = got
    w_obs, w_reward, w_terminated, w_truncated, w_info = want
    for key in ("input_ids", "attention_mask"):
        assert np.array_equal(obs[key], w_obs[key]), key
    assert np.array_equal(reward, w_reward)
    assert np.array_equal(terminated, w_terminated)
    assert np.array_equal(truncated, w_truncated)
    assert info.keys() == w_info.keys()
    if "text" in w_info:
        assert list(np.atleast_1d(info["text"])) == list(np.atleast_1d(w_info["text"]))


SINGLE_CASES = {
    # name: (actions, env kwargs); the reward is first called on the last action
    "truncated": ([5, 6, 7], {}),
    "terminated": ([5, EOS], {}),
    "fixed_horizon_eos": ([5, EOS], {"fixed_horizon": True}),
}


@pytest.mark.parametrize("case", sorted(SINGLE_CASES))
def test_a_step_whose_reward_raises_leaves_the_single_env_unchanged(case: str) -> None:
    actions, kwargs = SINGLE_CASES[case]
    kw = {"task": PROMPTS, "max_new_tokens": 3, **kwargs}
    env = gym.make("TextGen-v0", reward=FlakyReward(fail_at=0), **kw)
    ref = gym.make("TextGen-v0", reward=FlakyReward(fail_at=None), **kw)
    env.reset(seed=3)
    ref.reset(seed=3)
    for a in actions[:-1]:
        _assert_same_step(env.step(a), ref.step(a))
    before = _state(env)
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        env.step(actions[-1])
    _assert_same_state(_state(env), before)
    _assert_same_step(env.step(actions[-1]), ref.step(actions[-1]))  # the retry scores right
    if case == "fixed_horizon_eos":  # the rest of the horizon, absorbed
        _assert_same_step(env.step(9), ref.step(9))


def test_a_token_level_reward_that_raises_leaves_the_single_env_unchanged() -> None:
    kw = {"task": PROMPTS, "max_new_tokens": 3}
    env = gym.make("TextGen-v0", reward=FlakyTokenReward(fail_at=1), **kw)
    ref = gym.make("TextGen-v0", reward=FlakyTokenReward(fail_at=None), **kw)
    env.reset(seed=3)
    ref.reset(seed=3)
    _assert_same_step(env.step(5), ref.step(5))
    before = _state(env)
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        env.step(5)
    _assert_same_state(_state(env), before)
    for a in (5, 6):
        _assert_same_step(env.step(a), ref.step(a))


# Three sub-envs: sub-env 0 ends with EOS on step 2 (reward call 0), the others are truncated on
# step 3 (reward call 1) while sub-env 0 autoresets.
VECTOR_ACTIONS = [[5, 5, 5], [EOS, 6, 6], [8, 7, 7], [9, 9, 9]]


@pytest.mark.parametrize("fail_at", [0, 1])
@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_a_step_whose_reward_raises_leaves_the_vector_env_unchanged(
    fail_at: int, mode: str
) -> None:
    kw = {"num_envs": 3, "task": PROMPTS, "max_new_tokens": 3, "autoreset_mode": mode}
    env = gym.make_vec("TextGen-v0", reward=FlakyReward(fail_at=fail_at), **kw)
    ref = gym.make_vec("TextGen-v0", reward=FlakyReward(fail_at=None), **kw)
    env.reset(seed=11)
    ref.reset(seed=11)
    failing_step = {0: 1, 1: 2}[fail_at]  # the step of the reward's fail_at-th call
    for i, actions in enumerate(VECTOR_ACTIONS):
        a = np.array(actions)
        if i == failing_step:
            before = _state(env)
            with pytest.raises(RuntimeError, match="reward service unavailable"):
                env.step(a)
            _assert_same_state(_state(env), before)
        _assert_same_step(env.step(a), ref.step(a))


# --- arguments -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env() -> Any:
    return gym.make("TextGen-v0", task=PROMPTS, reward="length", max_new_tokens=4)


@pytest.fixture(scope="module")
def venv() -> Any:
    return gym.make_vec("TextGen-v0", num_envs=3, task=PROMPTS, reward="length", max_new_tokens=4)


@pytest.mark.parametrize("task", [None, 5, 1.5])
@pytest.mark.parametrize("make", ["make", "make_vec"])
def test_a_task_that_is_not_a_task_names_the_valid_ones(task: Any, make: str) -> None:
    build = gym.make if make == "make" else gym.make_vec
    with pytest.raises(
        TypeError,
        match=rf"task must be a textgym\.tasks\.Task, a built-in task name \(arithmetic, concepts, "
        rf"format, grid_nav, reverse, reviews, target_sum\) or a list of prompt strings, "
        rf"got {task!r}",
    ):
        build("TextGen-v0", task=task)


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (
            "42",
            TypeError,
            r"seed must be an int >= 0, a list of them \(vector env\) or None, got '42'",
        ),
        (1.5, TypeError, r"seed must be an int >= 0.* got 1\.5 \(float\)"),
        (True, TypeError, r"seed must be an int >= 0.* got True \(bool\)"),
        (-1, ValueError, r"seed must be an int >= 0 or None, got -1"),
        ([1, 2, 3], TypeError, r"got \[1, 2, 3\] \(list\)"),
    ],
)
def test_a_bad_seed_of_the_single_env_is_named(
    env: Any, seed: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        env.reset(seed=seed)


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (
            "42",
            TypeError,
            r"seed must be an int >= 0, a list of them \(vector env\) or None, got '42'",
        ),
        (1.5, TypeError, r"seed must be an int >= 0.* got 1\.5 \(float\)"),
        (-1, ValueError, r"seed must be an int >= 0 or None, got -1"),
        ([1, "a", 3], TypeError, r"seed must be an int >= 0.* got 'a'"),
        ([1, -2, 3], ValueError, r"got -2"),
        ([1, 2], ValueError, r"got 2 seeds for 3 sub-envs: \[1, 2\]"),
        ({1, 2, 3}, TypeError, r"got \{1, 2, 3\} \(set\)"),
    ],
)
def test_a_bad_seed_of_the_vector_env_is_named(
    venv: Any, seed: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        venv.reset(seed=seed)


def test_numpy_int_seeds_work_like_ints(env: Any, venv: Any) -> None:
    assert env.reset(seed=np.int64(7))[1] == env.reset(seed=7)[1]
    a = venv.reset(seed=np.int64(7))[1]["prompt_index"]
    b = venv.reset(seed=[7, 8, np.int32(9)])[1]["prompt_index"]
    assert np.array_equal(a, venv.reset(seed=7)[1]["prompt_index"])
    assert np.array_equal(a, b)


def test_a_rejected_vector_reset_changes_nothing(venv: Any) -> None:
    venv.reset(seed=1)
    before = _state(venv)
    with pytest.raises(ValueError, match="prompt_index"):
        venv.reset(seed=2, options={"prompt_index": 99})
    _assert_same_state(_state(venv), before)


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ("x", r"must be an int, got 'x'"),
        (1.5, r"must be an int in \[0, 3\), got 1\.5"),
        (3, r"must be an int in \[0, 3\), got 3"),
        (-1, r"must be an int in \[0, 3\), got -1"),
        (float("inf"), r"must be an int, got inf"),
        (float("nan"), r"must be an int, got nan"),
        (True, r"must be an int, got True"),
        ([0, 1], r"must be an int, got \[0, 1\]"),
    ],
)
def test_a_bad_prompt_index_is_named(env: Any, index: Any, match: str) -> None:
    with pytest.raises(ValueError, match=r"options\['prompt_index'\] " + match):
        env.reset(options={"prompt_index": index})


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ("x", r"must be an int, got 'x'"),
        (7, r"must be an int in \[0, 3\), got 7"),
        (float("inf"), r"must be an int, got inf"),
        ([0, 1], r"must be an int or shape \(3,\), got \(2,\)"),
        ([0, 1, "b"], r"must be an int, got 'b'"),
    ],
)
def test_a_bad_prompt_index_of_the_vector_env_is_named(venv: Any, index: Any, match: str) -> None:
    with pytest.raises(ValueError, match=r"options\['prompt_index'\] " + match):
        venv.reset(options={"prompt_index": index})


@pytest.mark.parametrize("options", [5, "prompt_index", [("prompt_index", 0)]])
def test_options_that_are_not_a_dict_are_named(env: Any, venv: Any, options: Any) -> None:
    for e in (env, venv):
        with pytest.raises(
            TypeError, match=re.escape(f"options must be a dict or None, got {options!r}")
        ):
            e.reset(options=options)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (None, r"shape \(3,\), got shape \(\): None"),
        ("abc", r"shape \(3,\), got shape \(\): 'abc'"),
        ([1, 2], r"shape \(3,\), got shape \(2,\): \[1, 2\]"),
        ([[1], [2, 3], 4], r"shape \(3,\), got shape \(\): \[\[1\], \[2, 3\], 4\]"),
        ([1.0, 2.0, 3.0], r"integer token ids, got dtype float64"),
        ([1, 2, 99999], r"action 99999 of sub-env 2"),
    ],
)
def test_bad_vector_actions_are_named(venv: Any, actions: Any, match: str) -> None:
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        venv.step(actions)
