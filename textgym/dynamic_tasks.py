"""Tasks with a *dynamic* expert: a mistake changes the right continuation and can be repaired.

Two built-in tasks (``textgym.tasks.load("target_sum")``, ``load("grid_nav")``; data written by
``python -m textgym.assets.build_dynamic``; see docs/dynamic_tasks.md)::

    target_sum  "Reach 17 from 4 with run +5, walk +2, back -3 ->"        " run walk walk walk walk"
    grid_nav    "Go from @ to * by N E S W (# wall): @..#.|.#...|...#*|##...|..... ->"
                                                                           " E E S E E S"

A prompt states a *puzzle*. The state after a completion y is read from its decoded text alone::

    state(y) = fold(move, [w for w in decode(y).split() if w in actions], start)

so any word that is not an action (a foreign or malformed token, ``"Run"``, a glued ``"runs"``)
is a no-op. target_sum: the state is the running total, the goal total = target. grid_nav: the
state is the cell; N is up, E right, S down, W left; a move into a wall (``#``) or off the grid
stays put. The expert (:class:`PuzzleExpert`) and the reward (:class:`PuzzleReward`) read the
state the same way, from the text as the env decodes it, so they never disagree on it.

The expert answers, at *any* prefix, the first action (in the prompt's order: run, walk, back;
N, E, S, W) that starts a shortest path from the prefix's state, and EOS at the goal. The goal
stays reachable after any mistake (target_sum: steps of both signs with gcd 1; grid_nav: moves
are reversible), so success stays possible within the horizon. Each action word is one token
with a leading space, checked when the expert is bound. The reward is success in {0, 1} (the
final state is the goal), or, ``shaped``, minus the fewest actions still missing.

:func:`expert_labels`, :func:`expert_disagreement` and :func:`position_errors` measure a learner's
own closed-loop steps against any bound expert.
"""

from __future__ import annotations

import functools
import math
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from textgym.config import check_text_batch
from textgym.experts import BoundExpert, Expert

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from textgym.tasks import Task

__all__ = [
    "GRID_NAV_PROMPT",
    "HORIZON",
    "LENGTHS",
    "MOVES",
    "STEPS",
    "TARGET_SUM_PROMPT",
    "GridNav",
    "Puzzle",
    "PuzzleExpert",
    "PuzzleReward",
    "TargetSum",
    "expert_disagreement",
    "expert_labels",
    "grid_distances",
    "pad_actions",
    "parse",
    "position_errors",
    "sum_distances",
]

HORIZON = 24
"""The suggested ``max_new_tokens``: twice the longest optimal solution, so a learner has room to
make mistakes and repair them (the expert needs at most 13 tokens, EOS included)."""
LENGTHS = range(3, 13)
"""Optimal solution lengths of the built-in data (equally many prompts of each, per split)."""
STEPS: tuple[tuple[str, int], ...] = (("run", 5), ("walk", 2), ("back", -3))
"""target_sum's step set in the built-in data, in the expert's tie-breaking order."""
MOVES: dict[str, tuple[int, int]] = {"N": (-1, 0), "E": (0, 1), "S": (1, 0), "W": (0, -1)}
"""grid_nav's action -> (row, column) offset, in the expert's tie-breaking order."""
TARGET_SUM_PROMPT = "Reach {target} from {start} with {steps} ->"
"""``steps`` lists ``"<word> <signed value>"`` joined by ``", "``."""
GRID_NAV_PROMPT = "Go from @ to * by N E S W (# wall): {rows} ->"
"""``rows`` are the grid's rows (``.`` open, ``#`` wall, one ``@``, one ``*``) joined by ``|``."""

S = TypeVar("S", bound=Hashable)
Cell = tuple[int, int]


class Puzzle(ABC, Generic[S]):
    """One prompt's problem: its actions, states, moves and exact distance to the goal."""

    @property
    @abstractmethod
    def actions(self) -> tuple[str, ...]:
        """The action words, in the expert's tie-breaking order."""

    @abstractmethod
    def start(self) -> S:
        """The state before any action."""

    @abstractmethod
    def move(self, state: S, action: str) -> S:
        """The state after one action."""

    @abstractmethod
    def distance(self, state: S) -> int | None:
        """The fewest actions from ``state`` to the goal (0 at the goal); None: unreachable."""

    def state_of(self, text: str) -> S:
        """The state after a completion's decoded text (non-action words are no-ops)."""
        state = self.start()
        for word in text.split():
            if word in self.actions:
                state = self.move(state, word)
        return state

    def best_action(self, state: S) -> str | None:
        """The first action that lowers the distance by one; None (EOS) at the goal or when
        the goal is unreachable."""
        d = self.distance(state)
        if not d:
            return None
        return next(a for a in self.actions if self.distance(self.move(state, a)) == d - 1)

    def solve(self, state: S | None = None) -> list[str]:
        """The expert's actions from ``state`` (default: the start) to the goal."""
        s, words = (self.start() if state is None else state), []
        while (a := self.best_action(s)) is not None:
            words.append(a)
            s = self.move(s, a)
        return words

    def optimal_length(self) -> int:
        """The fewest actions from the start to the goal: the prompt's horizon."""
        d = self.distance(self.start())
        if d is None:
            raise ValueError(f"the goal of {self!r} is unreachable from its start")
        return d


@functools.lru_cache(maxsize=64)
def sum_distances(values: tuple[int, ...], radius: int) -> dict[int, int]:
    """Fewest steps from y = total - target to y = 0, for the reachable |y| <= radius.

    A breadth-first search from 0 backwards inside [-radius, radius]. Exact there when
    ``radius`` >= every |value|: a shortest plan can be ordered (a negative step while above
    the target, a positive one while below) so that it stays in [min(y, -N), max(y, P)], with
    N, P the largest negative and positive steps.
    """
    dist, frontier = {0: 0}, [0]
    while frontier:
        nxt = []
        for y in frontier:
            for prev in (y - v for v in values):  # a step of v from prev lands on y
                if abs(prev) <= radius and prev not in dist:
                    dist[prev] = dist[y] + 1
                    nxt.append(prev)
        frontier = nxt
    return dist


@dataclass(frozen=True)
class TargetSum(Puzzle[int]):
    """target_sum: reach ``target`` from ``start_total`` with ``steps`` (state: the total)."""

    start_total: int
    target: int
    steps: tuple[tuple[str, int], ...] = STEPS

    def __post_init__(self) -> None:
        values = [v for _, v in self.steps]
        if len({w for w, _ in self.steps}) != len(values):
            raise ValueError(f"step words must be distinct, got {self.steps}")
        if not (min(values) < 0 < max(values)):
            raise ValueError(f"the steps need a positive and a negative value, got {values}")

    @property
    def actions(self) -> tuple[str, ...]:
        """The step words in the prompt's order."""
        return tuple(w for w, _ in self.steps)

    def start(self) -> int:
        """The start total."""
        return self.start_total

    def move(self, state: int, action: str) -> int:
        """The total after one step."""
        return state + dict(self.steps)[action]

    def distance(self, state: int) -> int | None:
        """Fewest steps from the total ``state`` to the target; None if unreachable."""
        y, values = state - self.target, tuple(v for _, v in self.steps)
        if y % math.gcd(*values):
            return None
        radius = max(64, *map(abs, values))
        while radius < abs(y):  # doubling keeps the cached tables few
            radius *= 2
        return sum_distances(values, radius).get(y)


def grid_distances(rows: tuple[str, ...], goal: Cell) -> dict[Cell, int]:
    """Fewest moves from each cell connected to ``goal`` (``#`` is a wall): one breadth-first
    search from the goal, valid backwards because moves between open cells are reversible."""
    dist, queue = {goal: 0}, deque([goal])
    while queue:
        r, c = cell = queue.popleft()
        for dr, dc in MOVES.values():
            n = (r + dr, c + dc)
            inside = 0 <= n[0] < len(rows) and 0 <= n[1] < len(rows[0])
            if inside and rows[n[0]][n[1]] != "#" and n not in dist:
                dist[n] = dist[cell] + 1
                queue.append(n)
    return dist


@dataclass(frozen=True)
class GridNav(Puzzle[Cell]):
    """grid_nav: walk ``rows`` from ``@`` to ``*`` (state: the (row, column) cell)."""

    rows: tuple[str, ...]

    def __post_init__(self) -> None:
        text = "".join(self.rows)
        if not text or len({len(r) for r in self.rows}) != 1:
            raise ValueError(f"the grid's rows must be non-empty and equally long: {self.rows}")
        if set(text) - set(".#@*") or text.count("@") != 1 or text.count("*") != 1:
            raise ValueError(f"a grid holds '.', '#', one '@' and one '*', got {self.rows}")

    @property
    def actions(self) -> tuple[str, ...]:
        """N, E, S, W."""
        return tuple(MOVES)

    def _find(self, mark: str) -> Cell:
        r = next(i for i, row in enumerate(self.rows) if mark in row)
        return r, self.rows[r].index(mark)

    def start(self) -> Cell:
        """The cell of ``@``."""
        return self._find("@")

    def move(self, state: Cell, action: str) -> Cell:
        """The cell after one move; into a wall or off the grid: the same cell."""
        r, c = state[0] + MOVES[action][0], state[1] + MOVES[action][1]
        inside = 0 <= r < len(self.rows) and 0 <= c < len(self.rows[0])
        return (r, c) if inside and self.rows[r][c] != "#" else state

    @functools.cached_property
    def _distances(self) -> dict[Cell, int]:
        return grid_distances(self.rows, self._find("*"))

    def distance(self, state: Cell) -> int | None:
        """Fewest moves from ``state`` to ``*``; None if walled off."""
        return self._distances.get(state)


_SUM_RE = re.compile(
    "^"
    + re.escape(TARGET_SUM_PROMPT)
    .replace(r"\{target\}", r"(-?\d+)")
    .replace(r"\{start\}", r"(-?\d+)")
    .replace(r"\{steps\}", r"(.+)")
    + "$"
)
_GRID_RE = re.compile("^" + re.escape(GRID_NAV_PROMPT).replace(r"\{rows\}", r"([.#@*|]+)") + "$")


@functools.lru_cache(maxsize=16384)
def _parse_target_sum(prompt: str) -> TargetSum:
    m = _SUM_RE.match(prompt)
    items = [re.fullmatch(r"([A-Za-z]+) ([+-]\d+)", s) for s in m[3].split(", ")] if m else []
    if m is None or not all(items):
        example = TARGET_SUM_PROMPT.format(target=17, start=4, steps="run +5, walk +2, back -3")
        raise ValueError(f"not a target_sum prompt: {prompt!r:.120}; expected e.g. {example!r}")
    steps = tuple((s[1], int(s[2])) for s in items if s)
    return TargetSum(int(m[2]), int(m[1]), steps)


@functools.lru_cache(maxsize=16384)
def _parse_grid_nav(prompt: str) -> GridNav:
    m = _GRID_RE.match(prompt)
    if m is None:
        example = GRID_NAV_PROMPT.format(rows="@..|.#.|..*")
        raise ValueError(f"not a grid_nav prompt: {prompt!r:.120}; expected e.g. {example!r}")
    return GridNav(tuple(m[1].split("|")))


_PARSERS: dict[str, Callable[[str], Puzzle[Any]]] = {
    "target_sum": _parse_target_sum,
    "grid_nav": _parse_grid_nav,
}


def parse(task: str, prompt: str) -> Puzzle[Any]:
    """The puzzle a prompt of a dynamic task states (raises ValueError on a malformed prompt).

    Args:
        task: ``"target_sum"`` or ``"grid_nav"``.
        prompt: the prompt text.
    """
    if task not in _PARSERS:
        raise ValueError(f"unknown dynamic task {task!r}; valid: {sorted(_PARSERS)}")
    return _PARSERS[task](prompt)


class PuzzleExpert(Expert):
    """The exact dynamic oracle of a puzzle task: the best next token at *any* prefix.

    It decodes the prefix, reads its state (mistakes included) and answers a shortest-path
    action from there, EOS at the goal. The label ignores the budget left: with too few
    tokens left it still walks towards the goal.

    Args:
        task: ``"target_sum"`` or ``"grid_nav"`` (the prompt format).
    """

    def __init__(self, task: str) -> None:
        if task not in _PARSERS:
            raise ValueError(f"unknown dynamic task {task!r}; valid: {sorted(_PARSERS)}")
        self.task = task

    def bind(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
    ) -> BoundExpert:
        """Parse every prompt once; check every action word is one token with its space.

        Args:
            task: its prompts must parse (the ValueError names the prompt).
            tokenizer: the env's tokenizer; needs ``eos_token_id``.
            max_new_tokens: T (unused: the label does not depend on it).

        Returns:
            The batched oracle.
        """
        if tokenizer.eos_token_id is None:
            raise ValueError("PuzzleExpert needs a tokenizer with an eos_token_id")
        puzzles = []
        for i, p in enumerate(task.prompts):
            try:
                puzzles.append(parse(self.task, p))
            except ValueError as err:
                raise ValueError(f"prompt {i} of task {task.name!r}: {err}") from None
        ids, bad = {}, []
        for w in sorted({w for pz in puzzles for w in pz.actions}):
            enc = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and tokenizer.decode(enc) == " " + w:
                ids[w] = int(enc[0])
            else:
                bad.append(f"{' ' + w!r} -> {[tokenizer.decode([i]) for i in enc]}")
        if bad:
            raise ValueError(
                "every action must be one token of the env's tokenizer (with its leading "
                f"space); these are not: {'; '.join(bad)}"
            )
        return _BoundPuzzleExpert(puzzles, ids, int(tokenizer.eos_token_id), tokenizer)


class _BoundPuzzleExpert:
    """A :class:`PuzzleExpert` bound to one task's prompts and one tokenizer."""

    def __init__(self, puzzles: list[Puzzle[Any]], ids: dict[str, int], eos: int, tok: Any) -> None:
        self.puzzles, self.ids, self.eos, self.tokenizer = puzzles, ids, eos, tok

    def __call__(
        self,
        prompt_index: np.ndarray,
        input_ids: np.ndarray,
        prompt_lengths: np.ndarray,
        completion_lengths: np.ndarray,
    ) -> np.ndarray:  # (B,) int64
        rows = [
            input_ids[b, p : p + t].tolist()
            for b, (p, t) in enumerate(zip(prompt_lengths, completion_lengths, strict=True))
        ]
        # Decoded as the env decodes a finished text for the reward: both read one state.
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        out = np.empty(len(rows), dtype=np.int64)  # (B,)
        for b, text in enumerate(texts):
            puzzle = self.puzzles[int(prompt_index[b])]
            a = puzzle.best_action(puzzle.state_of(text))
            out[b] = self.eos if a is None else self.ids[a]
        return out


class PuzzleReward:
    """r(x, y) of a puzzle task: success 1.0 when the final state is the goal, else 0.0 (an
    episode truncated at the goal counts); ``shaped``: minus the fewest actions still missing
    (0 on success, ``-unreachable`` for an unreachable goal).

    Keeps ``textgym.rewards``' Reward protocol (``textgym.rewards.make`` accepts it); a plain
    class because the core does not import ``textgym.rewards``.
    """

    token_level = False
    needs_references = False

    def __init__(self, task: str, shaped: bool = False, unreachable: int = 100) -> None:
        if task not in _PARSERS:
            raise ValueError(f"unknown dynamic task {task!r}; valid: {sorted(_PARSERS)}")
        self.task, self.shaped, self.unreachable = task, shaped, unreachable
        self.name = f"{task}_{'distance' if shaped else 'success'}"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:  # (B,) float32
        """Score B finished completions (the references are not used)."""
        check_text_batch(self.name, prompts, completions)
        out = np.empty(len(completions), dtype=np.float32)  # (B,)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            puzzle = parse(self.task, p)
            d = puzzle.distance(puzzle.state_of(c))
            d = self.unreachable if d is None else d
            out[i] = -float(d) if self.shaped else float(d == 0)
        return out

    def __repr__(self) -> str:
        return f"PuzzleReward({self.task!r}, shaped={self.shaped})"


# --- closed-loop metrics (any bound expert; actions (B, T) int64, -1 past a row's end) -----------


def pad_actions(completion_ids: Sequence[Sequence[int]]) -> np.ndarray:  # (B, T)
    """Token lists as a (B, T) int64 array, -1 past each row's end (T: the longest)."""
    out = np.full((len(completion_ids), max(map(len, completion_ids), default=0)), -1)
    for b, c in enumerate(completion_ids):
        out[b, : len(c)] = c
    return out.astype(np.int64)


def expert_labels(
    bound: BoundExpert,
    prompt_index: np.ndarray,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
) -> np.ndarray:  # (B, T) int64
    """The expert's label at every state a learner visited: ``labels[b, t]`` answers prompt b
    followed by the learner's own first t tokens (-1 where row b has no token t).

    Args:
        bound: a bound expert (``task.expert.bind(task, tokenizer, T)``).
        prompt_index: (B,) the task rows of the prompts.
        prompt_ids: B prompt token lists, as the env tokenised them.
        completion_ids: B completions (the learner's tokens, its EOS included).
    """
    B = len(completion_ids)
    if not len(prompt_index) == len(prompt_ids) == B:
        raise ValueError(f"{len(prompt_index)} indices, {len(prompt_ids)} prompts, {B} texts")
    n = np.array([len(c) for c in completion_ids], dtype=np.int64)  # (B,)
    p = np.array([len(q) for q in prompt_ids], dtype=np.int64)  # (B,)
    ids = np.zeros((B, int((p + n).max(initial=0)) + 1), dtype=np.int64)  # (B, L) right-padded
    for b in range(B):
        ids[b, : p[b] + n[b]] = [*prompt_ids[b], *completion_ids[b]]
    labels = np.full((B, int(n.max(initial=0))), -1, dtype=np.int64)  # (B, T)
    index = np.asarray(prompt_index, dtype=np.int64)
    for t in range(labels.shape[1]):
        rows = np.flatnonzero(n > t)
        labels[rows, t] = bound(index[rows], ids[rows], p[rows], np.full(len(rows), t))
    return labels


def expert_disagreement(actions: np.ndarray, labels: np.ndarray) -> np.ndarray:  # (B,)
    """Per row, the share of the learner's own steps whose token differs from the expert's
    label at that state; NaN for a row without steps. ``actions``, ``labels``: (B, T)."""
    wrong, steps = _mistakes(actions, labels)
    with np.errstate(invalid="ignore"):
        return wrong.sum(1) / steps.sum(1)


def position_errors(actions: np.ndarray, labels: np.ndarray) -> np.ndarray:  # (T,)
    """The error rate at each step t over the rows that took a step t; NaN where none did.
    ``actions``, ``labels``: (B, T)."""
    wrong, steps = _mistakes(actions, labels)
    with np.errstate(invalid="ignore"):
        return wrong.sum(0) / steps.sum(0)


def _mistakes(actions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if actions.shape != labels.shape:
        raise ValueError(f"actions {actions.shape} and labels {labels.shape} differ in shape")
    steps = actions >= 0  # (B, T)
    return (actions != labels) & steps, steps
