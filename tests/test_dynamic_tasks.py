"""The dynamic-expert tasks (target_sum, grid_nav): experts checked against brute force.

The brute-force solvers here are written independently of ``textgym.dynamic_tasks``: their own
prompt parsing, their own reading of a prefix (decode, split on whitespace, apply the action
words, ignore the rest) and a breadth-first search over states from scratch.
"""

from __future__ import annotations

import json
import random
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from transformers import AutoTokenizer

import textgym
from textgym import tasks
from textgym.assets import DATA_DIR, load_jsonl
from textgym.assets.build_dynamic import DynamicDataConfig, records, write
from textgym.dynamic_tasks import (
    HORIZON,
    LENGTHS,
    PuzzleReward,
    expert_disagreement,
    expert_labels,
    pad_actions,
    parse,
    position_errors,
)

gym.register_envs(textgym)
NAMES = ("target_sum", "grid_nav")


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(textgym.DEFAULT_MODEL)


# --- the brute-force reference ------------------------------------------------------------------


class Goal(int):
    """A target total; a search from total s keeps to [min(s, t) - 20, max(s, t) + 20], far
    wider than any shortest plan with steps of at most 5 needs."""

    def __call__(self, s: int) -> bool:
        return s == self

    def near(self, s: int, n: int) -> bool:
        return min(s, self) - 20 <= n <= max(s, self) + 20


def sum_rules(prompt: str) -> tuple[Any, Callable[[Any, str], Any], Callable[[Any], bool], list]:
    """(start, move, is_goal, actions) of a target_sum prompt, parsed here."""
    m = re.fullmatch(r"Reach (\d+) from (\d+) with (.*) ->", prompt)
    assert m, prompt
    target, start = int(m[1]), int(m[2])
    steps = {w: int(v) for w, v in re.findall(r"(\w+) ([+-]\d+)", m[3])}
    return start, lambda s, w: s + steps[w], Goal(target), list(steps)


def grid_rules(prompt: str) -> tuple[Any, Callable[[Any, str], Any], Callable[[Any], bool], list]:
    """(start, move, is_goal, actions) of a grid_nav prompt, parsed here."""
    rows = prompt.split(": ")[1].removesuffix(" ->").split("|")
    cells = {(r, c): ch for r, row in enumerate(rows) for c, ch in enumerate(row)}
    start = next(k for k, ch in cells.items() if ch == "@")
    goal = next(k for k, ch in cells.items() if ch == "*")
    offset = {"N": (-1, 0), "S": (1, 0), "E": (0, 1), "W": (0, -1)}

    def move(s: Any, w: str) -> Any:
        nxt = (s[0] + offset[w][0], s[1] + offset[w][1])
        return nxt if cells.get(nxt, "#") != "#" else s

    return start, move, lambda s: s == goal, ["N", "E", "S", "W"]


RULES = {"target_sum": sum_rules, "grid_nav": grid_rules}


def bfs_distance(state: Any, move: Callable, is_goal: Callable, actions: list) -> int:
    """Fewest actions from ``state`` to the goal, by breadth-first search forwards."""
    near = getattr(is_goal, "near", lambda s, n: True)
    seen, queue = {state}, deque([(state, 0)])
    while queue:
        s, d = queue.popleft()
        if is_goal(s):
            return d
        for a in actions:
            n = move(s, a)
            if n not in seen and near(state, n):
                seen.add(n)
                queue.append((n, d + 1))
    raise AssertionError(f"goal unreachable from {state}")


def read_state(text: str, start: Any, move: Callable, actions: list) -> Any:
    s = start
    for w in text.split():
        if w in actions:
            s = move(s, w)
    return s


def wrong_prefixes(
    rng: random.Random, solution: list[str], actions: list[str], n: int
) -> list[list[str]]:
    """``n`` prefixes (as token strings) that leave the expert's own path somewhere."""
    junk = [" foo", "s", " Run", ",", " 5", " ->", " N", " run"]  # glued, foreign, other task's
    out: list[list[str]] = []
    while len(out) < n:
        k = rng.randint(1, HORIZON - 1)
        prefix = [
            " " + rng.choice(actions) if rng.random() < 0.7 else rng.choice(junk) for _ in range(k)
        ]
        if prefix != [" " + w for w in solution[:k]]:
            out.append(prefix)
    return out


def ids_of(tok: Any, pieces: list[str]) -> list[int]:
    out: list[int] = []
    for p in pieces:
        out += tok(p, add_special_tokens=False)["input_ids"]
    return out


def batch(tok: Any, prompt_ids: list[int], prefixes: list[list[int]]) -> tuple[np.ndarray, ...]:
    """The env's view of B states of one prompt: right-padded (B, L) ids and the lengths."""
    L = len(prompt_ids) + max(map(len, prefixes)) + 1
    ids = np.full((len(prefixes), L), tok.pad_token_id, dtype=np.int64)
    for b, c in enumerate(prefixes):
        ids[b, : len(prompt_ids) + len(c)] = prompt_ids + c
    p = np.full(len(prefixes), len(prompt_ids), dtype=np.int64)
    return ids, p, np.array([len(c) for c in prefixes], dtype=np.int64)


# --- the expert against brute force -------------------------------------------------------------


def audit(name: str, task: tasks.Task, expert: Any, tok: Any, n_prompts: int) -> dict[str, int]:
    """Label 12 wrong prefixes of each of ``n_prompts`` prompts and roll the expert out from
    each: counts of labels that are not optimal (brute force) and of repairs that fail although
    the budget allows them."""
    eos, reward = tok.eos_token_id, tasks.load(name).reward
    rng = random.Random(0)
    out = {"checked": 0, "not_optimal": 0, "repairable": 0, "not_repaired": 0}
    for i in rng.sample(range(len(task)), n_prompts):
        prompt = task.prompts[i]
        start, move, is_goal, actions = RULES[name](prompt)
        word_of = {tok(" " + a, add_special_tokens=False)["input_ids"][0]: a for a in actions}
        solution = parse(name, prompt).solve()
        prefixes = [ids_of(tok, p) for p in wrong_prefixes(rng, solution, actions, 12)]
        prompt_ids = tok(prompt)["input_ids"]
        labels = expert(np.full(len(prefixes), i), *batch(tok, prompt_ids, prefixes))
        for b, c in enumerate(prefixes):
            state = read_state(tok.decode(c, skip_special_tokens=True), start, move, actions)
            d = bfs_distance(state, move, is_goal, actions)
            best = {a for a in actions if bfs_distance(move(state, a), move, is_goal, actions) < d}
            ok = labels[b] == eos if d == 0 else word_of.get(int(labels[b])) in best
            out["checked"] += 1
            out["not_optimal"] += not ok
            # The expert's own rollout from this wrong prefix, within the horizon.
            y = list(c)
            while len(y) < HORIZON and (not y or y[-1] != eos):
                y.append(int(expert(np.array([i]), *batch(tok, prompt_ids, [y]))[0]))
            if len(c) + d <= HORIZON:  # the budget allows a repair: it must succeed, shortest
                text = tok.decode([t for t in y if t != eos], skip_special_tokens=True)
                shortest = len(y) == len(c) + d + (len(c) + d < HORIZON)  # then EOS if room
                out["repairable"] += 1
                out["not_repaired"] += not (reward([prompt], [text])[0] == 1.0 and shortest)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_expert_is_optimal_and_repairs_wrong_prefixes(name: str, tok: Any) -> None:
    task = tasks.load(name, "test")
    counts = audit(name, task, task.expert.bind(task, tok, HORIZON), tok, 40)  # type: ignore[union-attr]
    assert counts["checked"] == 480
    assert counts["repairable"] > 250
    assert counts["not_optimal"] == 0
    assert counts["not_repaired"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_an_expert_that_ignores_mistakes_fails_the_audit(name: str, tok: Any) -> None:
    """The position-based expert of the reverse task replays the plan from the start whatever
    was written: the same audit finds its labels wrong after mistakes."""
    task = tasks.load(name, "test")
    replay = tasks.ReferenceExpert().bind(task, tok, HORIZON)
    counts = audit(name, task, replay, tok, 10)
    assert counts["not_optimal"] > 30
    assert counts["not_repaired"] > 30


@pytest.mark.parametrize("name", NAMES)
def test_expert_closed_loop_through_the_env_always_succeeds(name: str) -> None:
    n = 500
    env = gym.make_vec("TextGen-v0", num_envs=n, task=name, split="test", max_new_tokens=HORIZON)
    env.reset(seed=0, options={"prompt_index": np.arange(n)})
    total = np.zeros(n)
    steps = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    ended_by_eos = np.zeros(n, dtype=bool)
    while not done.all():
        _, r, term, trunc, _ = env.step(env.unwrapped.expert_actions())  # type: ignore[attr-defined]
        total += np.where(done, 0.0, r)
        steps += ~done
        ended_by_eos |= term & ~done
        done |= term | trunc
    env.close()
    optimal = np.array([r["optimal_length"] for r in load_jsonl(name) if r["split"] == "test"])
    assert total.tolist() == [1.0] * n
    assert ended_by_eos.all()
    np.testing.assert_array_equal(steps, optimal + 1)  # the shortest solution, then EOS


@pytest.mark.parametrize("name", NAMES)
def test_gymnasium_check_env(name: str) -> None:
    env = gym.make("TextGen-v0", task=name, max_new_tokens=HORIZON)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


# --- the semantics of a completion and the reward ------------------------------------------------


def test_invalid_words_are_no_ops_and_the_reward_reads_the_final_state() -> None:
    p = "Reach 17 from 4 with run +5, walk +2, back -3 ->"
    r = tasks.load("target_sum").reward
    texts = [
        " run walk walk walk walk",  # 17
        " run Run walk walk foo walk walk",  # "Run", "foo": no-ops
        " run walk walk walk walks",  # "walks" is not "walk": 15
        " run run run run back back",  # overshoot to 24, two backs: 18
        " run run run run back back back walk",  # ... repaired: 17
        "",
    ]
    assert r([p] * len(texts), texts).tolist() == [1, 1, 0, 0, 1, 0]
    assert PuzzleReward("target_sum", shaped=True)([p] * 3, texts[2:5]).tolist() == [-1, -2, 0]


def test_grid_moves_into_walls_and_off_the_grid_stay() -> None:
    p = "Go from @ to * by N E S W (# wall): @..#.|.#...|...#*|##...|..... ->"
    pz = parse("grid_nav", p)
    assert pz.solve() == ["E", "E", "S", "E", "E", "S"]
    assert pz.state_of(" N W") == (0, 0)  # off the grid
    assert pz.state_of(" S E") == (1, 0)  # into a wall
    assert pz.state_of(" E E E") == (0, 2)  # into a wall
    assert pz.state_of(" S x N") == (0, 0)
    assert pz.solve(pz.state_of(" S")) == ["N", "E", "E", "S", "E", "E", "S"]
    r = tasks.load("grid_nav").reward
    assert r([p, p], [" E E S E E S", " E E S E E S N"]).tolist() == [1.0, 0.0]


def test_binding_rejects_multi_token_actions(tiny_gpt2_dir: str) -> None:
    tiny = AutoTokenizer.from_pretrained(tiny_gpt2_dir)  # a word-level vocabulary without "run"
    task = tasks.load("target_sum", "validation")
    with pytest.raises(ValueError, match="one token of the env's tokenizer"):
        task.expert.bind(task, tiny, HORIZON)  # type: ignore[union-attr]


def test_bad_prompts_are_refused(tok: Any) -> None:
    bad = tasks.Task.from_list(["Reach 17 from 4 ->"], expert=tasks.load("target_sum").expert)
    with pytest.raises(ValueError, match="prompt 0 of task 'custom': not a target_sum prompt"):
        bad.expert.bind(bad, tok, HORIZON)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="a positive and a negative"):
        parse("target_sum", "Reach 17 from 4 with run +5, walk +2 ->")
    with pytest.raises(ValueError, match="one '@' and one"):
        parse("grid_nav", "Go from @ to * by N E S W (# wall): @..|...|... ->")


# --- metrics ---------------------------------------------------------------------------------


def test_disagreement_and_position_errors() -> None:
    def expert(pidx: Any, ids: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
        last = ids[np.arange(len(t)), np.maximum(p + t - 1, 0)]
        return np.where(t > 0, last + 1, 7)  # 7 first, then the last token + 1

    labels = expert_labels(expert, np.array([0, 0]), [[5], [5, 6]], [[7, 8, 0], [7, 9]])
    np.testing.assert_array_equal(labels, [[7, 8, 9], [7, 8, -1]])
    actions = pad_actions([[7, 8, 0], [7, 9]])
    np.testing.assert_allclose(expert_disagreement(actions, labels), [1 / 3, 1 / 2])
    np.testing.assert_allclose(position_errors(actions, labels), [0.0, 0.5, 1.0])


# --- data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_data_file_is_what_the_generator_makes(name: str) -> None:
    assert load_jsonl(name) == json.loads(json.dumps(records(name, DynamicDataConfig())))


def test_generator_is_deterministic(tmp_path: Path) -> None:
    small = DynamicDataConfig(train=30, validation=10, test=20)
    write(tmp_path / "a", small)
    write(tmp_path / "b", small)
    write(tmp_path / "c", DynamicDataConfig(train=30, validation=10, test=20, seed=1))
    for name in NAMES:
        a = (tmp_path / "a" / f"{name}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
        assert a != (tmp_path / "c" / f"{name}.jsonl").read_bytes()
    assert {"target_sum", "grid_nav"} <= set(tasks.names())
    assert all((DATA_DIR / f"{name}.jsonl").is_file() for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_data_rows(name: str) -> None:
    rows = load_jsonl(name)
    sizes = {"train": 600, "validation": 100, "test": 500}
    for split, n in sizes.items():
        part = [r for r in rows if r["split"] == split]
        assert len(part) == n
        counts = np.bincount([r["optimal_length"] for r in part], minlength=max(LENGTHS) + 1)
        assert counts[min(LENGTHS) :].tolist() == [n // len(LENGTHS)] * len(LENGTHS)
    assert len({r["prompt"] for r in rows}) == len(rows)
    for r in random.Random(0).sample(rows, 200):
        start, move, is_goal, actions = RULES[name](r["prompt"])
        assert bfs_distance(start, move, is_goal, actions) == r["optimal_length"]
        (ref,) = r["references"]
        assert is_goal(read_state(ref, start, move, actions))
        assert len(ref.split()) == r["optimal_length"]
        assert parse(name, r["prompt"]).optimal_length() == r["optimal_length"]
