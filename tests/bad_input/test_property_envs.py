"""Property tests: whatever is passed to reset / step / rewards.make, the answer is a valid result
or a ValueError / TypeError whose message names the bad value (never a KeyError, IndexError, a
gymnasium error or a corrupted env).

The envs are built once per module (the embedded model, T = 4) and reused across examples.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from textgym.rewards import make

PROMPTS = ["The movie was", "Hello there", "A cat sat on"]
T = 4
V = 1536  # the embedded model's head size
NUM_ENVS = 2

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def env() -> Any:
    e = gym.make("TextGen-v0", task=PROMPTS, reward="length", max_new_tokens=T)
    assert e.action_space.n == V
    return e


@pytest.fixture(scope="module")
def venv() -> Any:
    return gym.make_vec(
        "TextGen-v0", num_envs=NUM_ENVS, task=PROMPTS, reward="length", max_new_tokens=T
    )


def _texts(value: Any) -> list[str]:
    """Ways a message may show ``value``: its repr or str (a prefix), or one of its elements."""
    out = [repr(value)[:40], str(value)[:40]]
    if isinstance(value, np.ndarray) and value.ndim:
        value = value.tolist()
    if isinstance(value, list | tuple | dict):
        items = list(value.items()) if isinstance(value, dict) else [(v,) for v in value]
        for item in items:
            for v in item:
                v = v.item() if isinstance(v, np.generic) else v
                out += [repr(v)[:40], str(v)[:40]]
    return out


def _assert_names(err: Exception, value: Any) -> None:
    msg = str(err)
    assert any(t in msg for t in _texts(value)), f"{type(err).__name__}({msg!r}) names no {value!r}"


def _check_obs(obs: dict[str, np.ndarray], shape: tuple[int, ...]) -> None:
    assert obs["input_ids"].shape == shape
    assert obs["input_ids"].dtype == np.int64
    assert ((obs["input_ids"] >= 0) & (obs["input_ids"] < V)).all()
    assert set(np.unique(obs["attention_mask"])) <= {0, 1}


# --- strategies ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.integers(-3, V + 3),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.float32, np.bool_]),
    shape=st.sampled_from([(), (1,), (NUM_ENVS,), (NUM_ENVS + 1,), (NUM_ENVS, 1)]),
)
good_vector_actions = hnp.arrays(np.int64, (NUM_ENVS,), elements=st.integers(-2, V + 2))
actions = st.one_of(scalars, arrays, st.lists(scalars, max_size=3))
seeds = st.one_of(
    st.none(),
    st.integers(-5, 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
    st.lists(st.one_of(st.integers(-2, 100), st.none(), st.text(max_size=2)), max_size=3),
)


# --- envs ----------------------------------------------------------------------------------------


@SETTINGS
@given(seed=seeds, steps=st.lists(actions, max_size=6))
def test_the_single_env_takes_any_input(env: Any, seed: Any, steps: list[Any]) -> None:
    try:
        obs, info = env.reset(seed=seed)
    except (ValueError, TypeError) as err:
        _assert_names(err, seed)
        obs, info = env.reset(seed=0)
    _check_obs(obs, (env.observation_space["input_ids"].shape[0],))
    assert 0 <= info["prompt_index"] < len(PROMPTS)
    for a in steps:
        try:
            obs, reward, terminated, truncated, info = env.step(a)
        except (ValueError, TypeError) as err:
            _assert_names(err, a)
            continue
        _check_obs(obs, obs["input_ids"].shape)
        assert isinstance(reward, float)
        assert math.isfinite(reward)
        assert isinstance(terminated, bool)
        assert isinstance(truncated, bool)
        if terminated or truncated:
            env.reset()


@SETTINGS
@given(
    seed=seeds,
    steps=st.lists(st.one_of(actions, good_vector_actions, good_vector_actions), max_size=6),
)
def test_the_vector_env_takes_any_input(venv: Any, seed: Any, steps: list[Any]) -> None:
    try:
        obs, _ = venv.reset(seed=seed)
    except (ValueError, TypeError) as err:
        _assert_names(err, seed)
        obs, _ = venv.reset(seed=0)
    L = venv.single_observation_space["input_ids"].shape[0]
    _check_obs(obs, (NUM_ENVS, L))
    for a in steps:
        try:
            obs, reward, terminated, truncated, _info = venv.step(a)
        except (ValueError, TypeError) as err:
            _assert_names(err, a)
            continue
        _check_obs(obs, (NUM_ENVS, L))
        assert reward.shape == (NUM_ENVS,)
        assert np.isfinite(reward).all()
        assert terminated.dtype == truncated.dtype == np.bool_
        assert not (terminated & truncated).any()


# --- rewards.make --------------------------------------------------------------------------------

# Names that build fast with no arguments, or fail on a missing one (METEOR loads WordNet for
# seconds, similarity a model: left out).
NAMES = [
    "banned_tokens",
    "bleu",
    "chrf",
    "cider",
    "classifier",
    "exact_match",
    "keywords",
    "length",
    "repetition",
    "reward_model",
    "rouge1",
    "rougeL",
    "ter",
    "token_repetition",
]
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=8))
weights = st.one_of(
    st.floats(-1e6, 1e6),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0]),
    st.integers(-10, 10),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)
specs = st.one_of(
    names,
    st.dictionaries(st.one_of(names, st.integers(), st.none()), weights, max_size=3),
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
    st.lists(names, max_size=2),
)


@SETTINGS
@given(spec=specs)
def test_rewards_make_takes_any_spec(spec: Any) -> None:
    try:
        reward = make(spec)
    except (ValueError, TypeError) as err:
        _assert_names(err, spec)
        return
    assert isinstance(reward.name, str)
    assert isinstance(reward.needs_references, bool)
    if reward.token_level:
        return
    refs = [("a cat", "the cat")] * 2 if reward.needs_references else None
    scores = reward(["p", "q"], ["a cat sat", ""], refs)
    assert scores.shape == (2,)
    assert np.isfinite(scores).all()
