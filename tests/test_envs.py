"""TextGenEnv and TextGenVectorEnv on the tiny fixture model (word-level, eos id 0, pad id 1)."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from textgym.rewards import make
from transformers import AutoTokenizer

from textgym.envs import TextGenEnv, TextGenVectorEnv, TopPMask, VocabularyMask, to_left_padded
from textgym.tasks import FunctionExpert, ReferenceExpert, Task

EOS, PAD = 0, 1
V = 64

PROMPTS = [
    "the movie was",
    "i loved the film",
    "red blue green",
    "one two three four five",
    "a dog",
]
REFS = [" very good", [" bad", " awful"], " green blue red", " five four three two one", " runs"]


class CountingReward:
    """A sequence reward that records every batched call: r = number of words."""

    name = "words"
    token_level = False
    needs_references = False

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Any = None
    ) -> np.ndarray:
        self.calls.append(len(completions))
        return np.array([len(c.split()) for c in completions], dtype=np.float32)


class TokenCount:
    """A token-level reward: +1 for every token that is "good" (id of the word), else 0."""

    name = "good_tokens"
    token_level = True
    needs_references = False

    def __init__(self, good: int) -> None:
        self.good = good
        self.lengths_seen: list[np.ndarray] = []

    def __call__(
        self, prompts: Any, completions: Sequence[str], references: Any = None
    ) -> np.ndarray:
        return np.array([c.split().count("good") for c in completions], dtype=np.float32)

    def step(self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self.lengths_seen.append(lengths.copy())
        return (actions == self.good).astype(np.float32)


@pytest.fixture(scope="module")
def task() -> Task:
    return Task.from_list(PROMPTS, REFS, name="toy", expert=ReferenceExpert())


@pytest.fixture(scope="module")
def tok(tiny_gpt2_dir: str) -> Any:
    return AutoTokenizer.from_pretrained(tiny_gpt2_dir)


def word(tok: Any, w: str) -> int:
    return int(tok.convert_tokens_to_ids(w))


@pytest.fixture
def make_env(tiny_gpt2_dir: str, task: Task) -> Any:
    def build(**kw: Any) -> TextGenEnv:
        kw.setdefault("task", task)
        kw.setdefault("reward", CountingReward())
        kw.setdefault("max_new_tokens", 6)
        return TextGenEnv(model=tiny_gpt2_dir, **kw)

    return build


@pytest.fixture
def make_vec(tiny_gpt2_dir: str, task: Task) -> Any:
    def build(num_envs: int = 4, **kw: Any) -> TextGenVectorEnv:
        kw.setdefault("task", task)
        kw.setdefault("reward", CountingReward())
        kw.setdefault("max_new_tokens", 6)
        return TextGenVectorEnv(num_envs, model=tiny_gpt2_dir, **kw)

    return build


def random_policy(rng: np.random.Generator, n: int, p_eos: float = 0.25) -> np.ndarray:
    """Token ids in [2, V) with EOS mixed in, so episodes end at different times."""
    a = rng.integers(2, V, size=n)
    a[rng.random(n) < p_eos] = EOS
    return a


def run_episode(env: TextGenEnv, actions: Sequence[int], **reset_kw: Any) -> list[tuple[Any, ...]]:
    obs, info = env.reset(**reset_kw)
    out: list[tuple[Any, ...]] = [(obs, info)]
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            break
    return out


# --- API layer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"fixed_horizon": True},
        {"action_mask": [EOS, 5, 6, 7]},
        {"render_mode": "ansi"},
    ],
    ids=["plain", "fixed_horizon", "action_mask", "ansi"],
)
def test_gymnasium_check_env(make_env: Any, kw: dict[str, Any]) -> None:
    env = make_env(**kw)
    check_env(env, skip_render_check=True)


def test_spaces(make_env: Any, tok: Any) -> None:
    env = make_env(max_new_tokens=7)
    P = max(len(tok(p)["input_ids"]) for p in PROMPTS)
    assert env.action_space == gym.spaces.Discrete(V)
    for key in ("input_ids", "attention_mask"):
        box = env.observation_space[key]
        assert box.shape == (P + 7,)
        assert box.dtype == np.int64
    assert env.observation_space["input_ids"].high.max() == V - 1
    assert env.observation_space["attention_mask"].high.max() == 1


def test_observation_is_right_padded_prompt_then_completion(make_env: Any, tok: Any) -> None:
    env = make_env()
    obs, info = env.reset(options={"prompt_index": 1})
    prompt = tok(PROMPTS[1])["input_ids"]
    n = len(prompt)
    assert obs["input_ids"][:n].tolist() == prompt
    assert (obs["input_ids"][n:] == PAD).all()
    assert obs["attention_mask"].tolist() == [1] * n + [0] * (len(obs["attention_mask"]) - n)
    assert info["prompt"] == PROMPTS[1]
    assert info["references"] == (" bad", " awful")
    assert info["prompt_index"] == 1
    obs, *_ = env.step(7)
    obs, *_ = env.step(8)
    assert obs["input_ids"][: n + 2].tolist() == [*prompt, 7, 8]
    assert obs["attention_mask"].sum() == n + 2


def test_same_seed_same_episodes(make_env: Any) -> None:
    actions = random_policy(np.random.default_rng(3), 200, p_eos=0.1)
    eps = []
    for _ in range(2):
        env = make_env()
        env.reset(seed=11)
        trace = []
        for a in actions:
            obs, r, te, tr, info = env.step(a)
            trace.append((obs["input_ids"].tolist(), r, te, tr, info.get("text")))
            if te or tr:
                obs, info = env.reset()
                trace.append((obs["input_ids"].tolist(), info["prompt_index"]))
        eps.append(trace)
    assert eps[0] == eps[1]
    prompts = {t[1] for t in eps[0] if len(t) == 2}
    assert len(prompts) > 1  # the seed does draw different prompts across episodes


def test_terminated_at_eos_truncated_at_horizon_never_both(make_env: Any) -> None:
    env = make_env(max_new_tokens=4)
    steps = run_episode(env, [5, 6, EOS], seed=0)
    flags = [(s[2], s[3]) for s in steps[1:]]
    assert flags == [(False, False), (False, False), (True, False)]
    steps = run_episode(env, [5, 6, 7, 8], seed=0)
    assert [(s[2], s[3]) for s in steps[1:]][-1] == (False, True)
    # EOS on the last allowed step is a termination, not a truncation.
    steps = run_episode(env, [5, 6, 7, EOS], seed=0)
    assert (steps[-1][2], steps[-1][3]) == (True, False)


def test_sequence_reward_on_final_step_only_with_text(make_env: Any, tok: Any) -> None:
    reward = CountingReward()
    env = make_env(reward=reward)
    good, very = word(tok, "good"), word(tok, "very")
    steps = run_episode(env, [very, good, EOS], options={"prompt_index": 0})
    rewards = [s[1] for s in steps[1:]]
    assert rewards == [0.0, 0.0, 2.0]
    assert all(isinstance(r, float) for r in rewards)
    info = steps[-1][4]
    assert info["text"] == "very good"  # EOS stripped
    assert info["prompt"] == PROMPTS[0]
    assert info["references"] == (" very good",)
    assert "text" not in steps[1][4]
    assert reward.calls == [1]


def test_token_level_reward_every_step(make_env: Any, tok: Any) -> None:
    good = word(tok, "good")
    reward = TokenCount(good)
    env = make_env(reward=reward)
    steps = run_episode(env, [good, 5, good, EOS], options={"prompt_index": 0})
    assert [s[1] for s in steps[1:]] == [1.0, 0.0, 1.0, 0.0]
    n = len(tok(PROMPTS[0])["input_ids"])
    # The reward sees each state before its action: lengths P, P+1, ...
    assert [int(x[0]) for x in reward.lengths_seen] == [n, n + 1, n + 2, n + 3]


def test_weighted_sum_components_in_info(make_env: Any, tok: Any) -> None:
    a = make(lambda p, c: float(len(c.split())), name="n_words")
    b = make(lambda p, c: float("good" in c), name="has_good")
    env = make_env(reward={a: 0.5, b: 2.0})
    good = word(tok, "good")
    steps = run_episode(env, [good, 5, EOS], options={"prompt_index": 0})
    info = steps[-1][4]
    assert info["reward_components"] == {"n_words": 2.0, "has_good": 1.0}
    assert steps[-1][1] == pytest.approx(0.5 * 2 + 2.0 * 1)


def test_stop_sequence_terminates_and_is_stripped(tiny_gpt2_dir: str, tok: Any) -> None:
    task = Task.from_list(PROMPTS, stop_sequences=[". !"])
    env = TextGenEnv(tiny_gpt2_dir, task, CountingReward(), max_new_tokens=8)
    dot, bang, good = word(tok, "."), word(tok, "!"), word(tok, "good")
    steps = run_episode(env, [good, dot, good, dot, bang, good], seed=0)
    assert len(steps) == 6
    assert steps[-1][2] is True
    assert steps[-1][3] is False
    assert steps[-1][4]["text"] == tok.decode([good, dot, good], skip_special_tokens=True)


def test_fixed_horizon_equal_lengths_absorbing(make_env: Any, tok: Any) -> None:
    env = make_env(fixed_horizon=True, max_new_tokens=5)
    good = word(tok, "good")
    _obs, _ = env.reset(options={"prompt_index": 0})
    results = [env.step(a) for a in (good, EOS, 7, 8, 9)]
    rewards = [r[1] for r in results]
    assert rewards == [0.0, 1.0, 0.0, 0.0, 0.0]  # paid on the EOS step, zero in the absorbing state
    assert [(r[2], r[3]) for r in results[:-1]] == [(False, False)] * 4
    assert (results[-1][2], results[-1][3]) == (True, False)
    frozen = results[1][0]
    for r in results[2:]:  # actions after EOS are ignored: the state does not move
        np.testing.assert_array_equal(r[0]["input_ids"], frozen["input_ids"])
    assert results[1][4]["text"] == "good"
    assert results[-1][4]["text"] == "good"
    # Every episode lasts exactly max_new_tokens steps, EOS or not.
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    lengths, n = [], 0
    for _ in range(300):
        _, _, te, tr, _ = env.step(random_policy(rng, 1, 0.4)[0])
        n += 1
        if te or tr:
            lengths.append(n)
            n = 0
            env.reset()
    assert set(lengths) == {5}


def test_absorbing_state_keeps_valid_length(make_env: Any, tok: Any) -> None:
    seen: list[int] = []

    def provider(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        seen.append(int(lengths[0]))
        return np.ones((len(lengths), V), dtype=bool)

    env = make_env(fixed_horizon=True, max_new_tokens=4, action_mask=provider)
    n = len(tok(PROMPTS[0])["input_ids"])
    env.reset(options={"prompt_index": 0})
    for a in (5, EOS, 6, 7):
        _, _, _, _, info = env.step(a)
    # The valid prefix stops growing at EOS although the clock runs on to the horizon.
    assert seen == [n, n + 1, n + 2, n + 2, n + 2]
    assert info["text"] == tok.decode([5])
    assert "[4/4]" in env._ep.render(0)


def test_render_modes(make_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    env = make_env(render_mode="ansi")
    env.reset(options={"prompt_index": 0})
    env.step(5)
    frame = env.render()
    assert isinstance(frame, str)
    assert "the movie was" in frame
    assert "[1/6]" in frame
    env = make_env(render_mode="human")
    env.reset(options={"prompt_index": 0})
    assert env.render() is None
    assert "the movie was" in capsys.readouterr().out
    assert TextGenEnv.metadata == {"render_modes": ["ansi", "human"], "render_fps": 4}


# --- errors ------------------------------------------------------------------------------------


def test_step_after_end_raises(make_env: Any) -> None:
    env = make_env()
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step(5)
    run_episode(env, [EOS], seed=0)
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step(5)


@pytest.mark.parametrize("action", [V, -1, 10_000])
def test_action_out_of_range_names_it(make_env: Any, action: int) -> None:
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=rf"action {action}\b"):
        env.step(action)


@pytest.mark.parametrize("action", [3.5, "7", None, True])
def test_non_integer_action(make_env: Any, action: Any) -> None:
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="integer token id"):
        env.step(action)


def test_numpy_integer_actions_accepted(make_env: Any) -> None:
    env = make_env()
    env.reset(seed=0)
    env.step(np.int64(5))
    env.step(np.array(6))
    env.step(np.int32(7))


def test_prompt_too_long(tiny_gpt2_dir: str, tok: Any) -> None:
    with pytest.raises(ValueError, match=r"max_prompt_tokens=3.*truncation='left'"):
        TextGenEnv(tiny_gpt2_dir, PROMPTS, CountingReward(), max_prompt_tokens=3)
    env = TextGenEnv(
        tiny_gpt2_dir, PROMPTS, CountingReward(), max_prompt_tokens=3, truncation="left"
    )
    obs, _ = env.reset(options={"prompt_index": 3})  # "one two three four five"
    assert obs["input_ids"][:3].tolist() == tok("three four five")["input_ids"]
    assert env.observation_space["input_ids"].shape == (3 + 32,)


def test_tokenizer_without_pad_token(tiny_gpt2_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tok.pad_token = None
    with pytest.raises(ValueError, match=r"tokenizer\.pad_token = tokenizer\.eos_token"):
        TextGenEnv(tiny_gpt2_dir, PROMPTS, CountingReward(), tokenizer=tok)
    assert tok.pad_token is None  # the env never fixes it silently


def test_tokenizer_bigger_than_head(tiny_gpt2_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tok.add_tokens([f"extra{i}" for i in range(V)])
    with pytest.raises(ValueError, match="LM head has 64 outputs"):
        TextGenEnv(tiny_gpt2_dir, PROMPTS, CountingReward(), tokenizer=tok)


def test_sequence_longer_than_model_positions(tiny_gpt2_dir: str) -> None:
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        TextGenEnv(tiny_gpt2_dir, PROMPTS, CountingReward(), max_new_tokens=100)


def test_bad_arguments(make_env: Any) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        make_env(max_new_tokens=0)
    with pytest.raises(ValueError, match="truncation"):
        make_env(truncation="right")
    with pytest.raises(ValueError, match="render_mode"):
        make_env(render_mode="rgb_array")
    env = make_env()
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"prompt_idx": 1})
    with pytest.raises(ValueError, match=r"prompt_index.*\[0, 5\)"):
        env.reset(options={"prompt_index": 5})


def test_reward_needing_references_without_them(tiny_gpt2_dir: str) -> None:
    with pytest.raises(ValueError, match="needs references"):
        TextGenEnv(tiny_gpt2_dir, PROMPTS, "exact_match")


# --- action masks and experts ------------------------------------------------------------------


def test_vocabulary_action_mask(make_env: Any) -> None:
    allowed = [EOS, 5, 9]
    env = make_env(action_mask=allowed)
    _, info = env.reset(seed=0)
    expected = np.zeros(V, dtype=bool)
    expected[allowed] = True
    np.testing.assert_array_equal(info["action_mask"], expected)
    _, _, _, _, info = env.step(5)
    np.testing.assert_array_equal(info["action_mask"], expected)
    np.testing.assert_array_equal(env.action_masks(), expected)
    with pytest.raises(ValueError, match="outside"):
        VocabularyMask([V], V)


class FakeMaskModel:
    """LanguageModel-like: logits favour (last token + 1) strongly, (last token + 2) a little."""

    vocab_size = V
    device = "cpu"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def step(self, input_ids: Any, attention_mask: Any, cache: Any) -> tuple[Any, Any]:
        import torch

        self.seen.append((input_ids.numpy().copy(), attention_mask.numpy().copy()))
        last = input_ids[:, -1]  # left-padded: the newest token is last
        logits = torch.full((len(last), V), -10.0)
        rows = torch.arange(len(last))
        logits[rows, (last + 1) % V] = 5.0
        logits[rows, (last + 2) % V] = 3.0
        return logits, None


def test_top_p_mask_of_a_frozen_model(make_env: Any, tok: Any) -> None:
    fake = FakeMaskModel(tok)
    env = make_env(action_mask=TopPMask(fake, top_p=0.5))
    _obs, info = env.reset(options={"prompt_index": 0})
    last = tok(PROMPTS[0])["input_ids"][-1]
    assert np.flatnonzero(info["action_mask"]).tolist() == [last + 1]  # top token holds > 0.5
    ids, mask = fake.seen[-1]
    assert mask[0, -1] == 1
    assert ids[0, -1] == last
    env = make_env(action_mask=TopPMask(fake, top_p=0.99))
    _, info = env.reset(options={"prompt_index": 0})
    _, _, _, _, info = env.step(20)
    assert np.flatnonzero(info["action_mask"]).tolist() == [21, 22]
    env = make_env(action_mask=TopPMask(fake, top_p=None, top_k=1))
    env.reset(options={"prompt_index": 0})
    _, _, _, _, info = env.step(30)
    assert np.flatnonzero(info["action_mask"]).tolist() == [31]


def test_language_model_instance_and_top_p_mask(tiny_gpt2_dir: str) -> None:
    import torch

    from textgym.lm import LanguageModel

    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    env = TextGenEnv(lm, PROMPTS, CountingReward(), max_new_tokens=4)
    assert env.action_space.n == lm.vocab_size
    assert env.tokenizer is lm.tokenizer
    env = TextGenEnv(lm, PROMPTS, CountingReward(), 4, action_mask=TopPMask(lm, top_p=0.8))
    _, info = env.reset(options={"prompt_index": 1})
    _, _, _, _, info = env.step(7)
    ids, _ = lm.encode([PROMPTS[1]])
    logits, _ = lm.step(torch.cat([ids, torch.tensor([[7]])], 1), torch.ones(1, ids.shape[1] + 1))
    probs = torch.softmax(logits[0], -1).detach().numpy()
    kept = info["action_mask"]
    order = np.argsort(-probs)
    n = int(kept.sum())
    assert set(np.flatnonzero(kept)) == set(order[:n].tolist())  # the n most likely tokens
    assert probs[order[: n - 1]].sum() < 0.8 <= probs[order[:n]].sum() + 1e-6


def test_reference_expert_solves_and_labels_any_prefix(make_env: Any, tok: Any) -> None:
    env = make_env(reward=make("exact_match"), max_new_tokens=8)
    for i in range(len(PROMPTS)):
        env.reset(options={"prompt_index": i})
        done, r = False, 0.0
        while not done:
            _, r, te, tr, info = env.step(env.expert_action())
            done = te or tr
        assert te, info
        assert r == 1.0, info
    # Off the expert's path it still answers by position: reference token t at step t.
    env.reset(options={"prompt_index": 2})  # reference " green blue red"
    env.step(word(tok, "dog"))
    assert env.expert_action() == word(tok, "blue")
    env.step(word(tok, "cat"))
    env.step(word(tok, "cat"))
    assert env.expert_action() == EOS


def test_function_expert_and_missing_expert(make_env: Any, task: Task) -> None:
    seen: list[tuple[int, list[int]]] = []

    def fn(i: int, completion: list[int]) -> int:
        seen.append((i, completion))
        return 10 + len(completion)

    env = make_env(task=dataclasses.replace(task, expert=FunctionExpert(fn)))
    env.reset(options={"prompt_index": 3})
    assert env.expert_action() == 10
    env.step(42)
    assert env.expert_action() == 11
    assert seen[-1] == (3, [42])
    env = make_env(task=dataclasses.replace(task, expert=None))
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="no expert"):
        env.expert_action()


def test_to_left_padded() -> None:
    ids = np.array([[5, 6, 7, 1], [8, 1, 1, 1]])
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    out, m = to_left_padded(ids, mask, pad_token_id=1)
    assert out.tolist() == [[1, 5, 6, 7], [1, 1, 1, 8]]
    assert m.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]


def test_to_left_padded_trim_keeps_the_longest_row() -> None:
    ids = np.array([[5, 6, 1, 1], [8, 1, 1, 1]])
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    out, m = to_left_padded(ids, mask, pad_token_id=1, trim=True)
    assert out.tolist() == [[5, 6], [1, 8]]
    assert m.tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("build", ["single", "vector", "make", "make_vec"])
def test_an_unknown_argument_is_named_with_the_valid_ones(build: str, tiny_gpt2_dir: str) -> None:
    calls = {
        "single": lambda: TextGenEnv(model=tiny_gpt2_dir, max_tokens=4),
        "vector": lambda: TextGenVectorEnv(2, model=tiny_gpt2_dir, max_tokens=4),
        "make": lambda: gym.make("TextGen-v0", model=tiny_gpt2_dir, max_tokens=4),
        "make_vec": lambda: gym.make_vec("TextGen-v0", 2, model=tiny_gpt2_dir, max_tokens=4),
    }
    with pytest.raises(
        TypeError, match=r"unknown arguments \['max_tokens'\]; valid: .*'max_new_tokens'"
    ):
        calls[build]()


def test_env_arguments_bind_by_position_and_keyword(tiny_gpt2_dir: str) -> None:
    env = TextGenEnv(tiny_gpt2_dir, PROMPTS, CountingReward(), 4, fixed_horizon=True)
    assert (env.args.model, env.args.max_new_tokens, env.args.fixed_horizon) == (
        tiny_gpt2_dir,
        4,
        True,
    )
    assert env.config.max_new_tokens == 4
    with pytest.raises(TypeError, match="at most 5 positional arguments"):
        TextGenEnv(tiny_gpt2_dir, PROMPTS, CountingReward(), 4, None, "train")
    with pytest.raises(TypeError, match=r"multiple values for \['model'\]"):
        TextGenEnv(tiny_gpt2_dir, model=tiny_gpt2_dir)


# --- vector env --------------------------------------------------------------------------------


def test_vector_spaces_and_metadata(make_vec: Any) -> None:
    venv = make_vec(3)
    assert isinstance(venv, gym.vector.VectorEnv)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert venv.single_action_space == gym.spaces.Discrete(V)
    assert venv.action_space == gym.spaces.MultiDiscrete([V] * 3)
    obs, _ = venv.reset(seed=0)
    assert obs in venv.observation_space
    assert (
        make_vec(2, autoreset_mode="SameStep").metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    )


def _single_trace(
    make_env: Any, seed: int, actions: np.ndarray, **kw: Any
) -> list[tuple[Any, ...]]:
    """A single env driven like a NEXT_STEP sub-env: after an end, the next step is a reset."""
    env = make_env(**kw)
    obs, info = env.reset(seed=seed)
    out = []
    pending = False
    for a in actions:
        if pending:
            obs, info = env.reset()
            out.append((obs["input_ids"].tolist(), 0.0, False, False, None, info["prompt_index"]))
            pending = False
            continue
        obs, r, te, tr, info = env.step(int(a))
        out.append((obs["input_ids"].tolist(), r, te, tr, info.get("text"), info["prompt_index"]))
        pending = te or tr
    return out


@pytest.mark.parametrize("kw", [{}, {"fixed_horizon": True}], ids=["plain", "fixed_horizon"])
def test_vector_equals_single_envs(make_env: Any, make_vec: Any, kw: dict[str, Any]) -> None:
    B, steps, seed = 4, 40, 7
    actions = np.stack([random_policy(np.random.default_rng(i), steps) for i in range(B)], 1)
    venv = make_vec(B, **kw)
    venv.reset(seed=seed)
    vec_trace: list[list[tuple[Any, ...]]] = [[] for _ in range(B)]
    for a in actions:
        obs, r, te, tr, info = venv.step(a)
        assert r.dtype == np.float32
        assert te.dtype == bool
        assert tr.dtype == bool
        for i in range(B):
            text = info["text"][i] if info.get("_text", np.zeros(B, bool))[i] else None
            vec_trace[i].append(
                (
                    obs["input_ids"][i].tolist(),
                    float(r[i]),
                    bool(te[i]),
                    bool(tr[i]),
                    text,
                    int(info["prompt_index"][i]),
                )
            )
    for i in range(B):
        assert vec_trace[i] == _single_trace(make_env, seed + i, actions[:, i], **kw), i


def test_vector_reproducible_under_seed(make_vec: Any) -> None:
    def trace() -> list[Any]:
        venv = make_vec(5)
        obs, _ = venv.reset(seed=123)
        rng = np.random.default_rng(0)
        out = [obs["input_ids"].copy()]
        for _ in range(30):
            obs, r, te, tr, _ = venv.step(random_policy(rng, 5))
            out += [obs["input_ids"].copy(), r, te, tr]
        return out

    a, b = trace(), trace()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_one_batched_reward_call_per_step(make_vec: Any) -> None:
    reward = CountingReward()
    B = 8
    venv = make_vec(B, reward=reward)
    venv.reset(seed=0)
    rng = np.random.default_rng(1)
    expected_calls, ended_total = 0, 0
    for _ in range(60):
        n_before = len(reward.calls)
        _, _r, te, tr, _ = venv.step(random_policy(rng, B))
        ended = int((te | tr).sum())
        assert len(reward.calls) - n_before == (1 if ended else 0)
        if ended:
            assert reward.calls[-1] == ended  # all episodes that ended, in one call
            expected_calls += 1
            ended_total += ended
    assert len(reward.calls) == expected_calls
    assert sum(reward.calls) == ended_total
    assert expected_calls > 5
    assert max(reward.calls) > 1


def test_next_step_autoreset(make_vec: Any, tok: Any) -> None:
    venv = make_vec(2)
    obs, info = venv.reset(seed=0, options={"prompt_index": np.array([0, 1])})
    _, r, te, tr, info = venv.step(np.array([EOS, 5]))
    assert te.tolist() == [True, False]
    assert info["_text"].tolist() == [True, False]
    assert info["text"][0] == ""
    assert info["prompt"][0] == PROMPTS[0]
    # The next step resets sub-env 0, ignores its action (even an invalid one), pays nothing.
    obs, r, te, tr, info = venv.step(np.array([10_000, 6]))
    assert r[0] == 0.0
    assert not te[0]
    assert not tr[0]
    n = len(tok(PROMPTS[int(info["prompt_index"][0])])["input_ids"])
    assert obs["attention_mask"][0].sum() == n
    assert info["_prompt"].tolist() == [True, False]
    assert info["prompt"][0] == PROMPTS[int(info["prompt_index"][0])]
    assert obs["attention_mask"][1].sum() == len(tok(PROMPTS[1])["input_ids"]) + 2
    with pytest.raises(ValueError, match="action 10000 of sub-env 1"):
        venv.step(np.array([5, 10_000]))


def test_same_step_autoreset(make_vec: Any) -> None:
    venv = make_vec(2, autoreset_mode=AutoresetMode.SAME_STEP)
    venv.reset(seed=0, options={"prompt_index": np.array([0, 1])})
    obs, r, te, _, info = venv.step(np.array([5, EOS]))
    assert te.tolist() == [False, True]
    assert r.tolist() == [0.0, 0.0]
    assert info["_final_obs"].tolist() == [False, True]
    final = info["final_obs"][1]
    assert final["input_ids"].shape == obs["input_ids"][1].shape
    assert final["input_ids"][final["attention_mask"].sum() - 1] == EOS
    assert info["final_info"]["text"][1] == ""
    assert info["final_info"]["_text"].tolist() == [
        False,
        True,
    ]
    assert info["final_info"]["prompt"][1] == PROMPTS[1]
    assert info["final_info"]["prompt_index"][1] == 1
    # The returned observation already starts the next episode.
    assert obs["attention_mask"][1].sum() < final["attention_mask"].sum() + 1
    obs2, r, te, _tr, info = venv.step(np.array([6, 7]))
    assert r.tolist() == [0.0, 0.0]
    assert obs2["attention_mask"][1].sum() == obs["attention_mask"][1].sum() + 1


def test_disabled_autoreset(make_vec: Any) -> None:
    venv = make_vec(2, autoreset_mode="Disabled")
    venv.reset(seed=0)
    _, _, _te, _, _ = venv.step(np.array([EOS, 5]))
    with pytest.raises(RuntimeError, match=r"sub-envs \[0\].*reset_mask"):
        venv.step(np.array([5, 5]))
    _obs, info = venv.reset(options={"reset_mask": np.array([True, False]), "prompt_index": 2})
    assert info["_prompt_index"].tolist() == [True, False]
    assert info["prompt_index"][0] == 2
    venv.step(np.array([5, 5]))


def test_vector_action_mask_and_expert(make_vec: Any, tok: Any) -> None:
    venv = make_vec(3, action_mask=[EOS, 5])
    _, info = venv.reset(seed=0)
    assert info["action_mask"].shape == (3, V)
    assert info["action_mask"].sum() == 6
    _, _, _, _, info = venv.step(np.array([5, 5, 5]))
    assert info["action_mask"].shape == (3, V)
    assert info["_action_mask"].all()
    venv = make_vec(3, reward=make("exact_match"), max_new_tokens=8)
    venv.reset(seed=0, options={"prompt_index": np.array([0, 2, 3])})
    total, live = np.zeros(3), np.ones(3, dtype=bool)
    for _ in range(6):
        _, r, te, tr, _ = venv.step(venv.expert_actions())
        total += r * live
        live &= ~(te | tr)
    assert total.tolist() == [1.0, 1.0, 1.0]
    assert not live.any()


def test_vector_fixed_horizon_all_end_together(make_vec: Any) -> None:
    venv = make_vec(6, fixed_horizon=True, max_new_tokens=5)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for t in range(5):
        _, _, te, tr, info = venv.step(random_policy(rng, 6, 0.4))
        assert (te | tr).all() == (t == 4)
    assert info["_text"].all()


def test_vector_errors(make_vec: Any) -> None:
    venv = make_vec(2)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.array([5, 5]))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        venv.step(np.array([5, 5, 5]))
    with pytest.raises(ValueError, match="integer"):
        venv.step(np.array([5.5, 5.0]))
    with pytest.raises(ValueError, match="num_envs"):
        make_vec(0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        make_vec(2, autoreset_mode="sometimes")


def test_vector_render(make_vec: Any) -> None:
    venv = make_vec(2, render_mode="ansi")
    venv.reset(seed=0)
    frames = venv.render()
    assert isinstance(frames, tuple)
    assert len(frames) == 2
    assert all("[0/6]" in f for f in frames)


# --- SB3 -----------------------------------------------------------------------------------------


def test_sb3_check_env_and_ppo(tiny_gpt2_dir: str, task: Task) -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import textgym

    gym.register_envs(textgym)
    env = gym.make(
        "TextGen-v0", model=tiny_gpt2_dir, task=task, reward=CountingReward(), max_new_tokens=8
    )
    sb3_check_env(env.unwrapped)
    model = sb3.PPO(
        "MultiInputPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu"
    )
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256


# --- speed and memory ----------------------------------------------------------------------------


def test_vector_step_overhead(make_vec: Any) -> None:
    """The env's own bookkeeping stays far below the LM's step (budget: ~0.4 ms at B=16)."""
    import time

    venv = make_vec(16, max_new_tokens=32, reward=lambda p, c: 0.0)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = [random_policy(rng, 16, 0.02) for _ in range(400)]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for a in acts:
            venv.step(a)
        best = min(best, (time.perf_counter() - t0) / len(acts))
    assert best < 2e-3, f"{best * 1e3:.3f} ms per batched step"  # generous: shared CI machines


@pytest.mark.slow
def test_memory_flat_over_10k_episodes(make_vec: Any) -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    B = 64
    venv = make_vec(B, max_new_tokens=8, reward=lambda p, c: float(len(c)))
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    episodes, rss_1k = 0, 0
    while episodes < 10_000:
        _, _, te, tr, _ = venv.step(random_policy(rng, B, 0.3))
        episodes += int((te | tr).sum())
        if rss_1k == 0 and episodes >= 1_000:
            gc.collect()
            rss_1k = proc.memory_info().rss
    gc.collect()
    growth = proc.memory_info().rss / rss_1k - 1
    assert growth < 0.05, f"RSS grew {growth:.1%} between 1k and 10k episodes"
