"""Multi-turn episodes at the token level: the responder protocol and the built-in multi-turn tasks.

The MDP (``docs/multiturn.md``): the policy's tokens are actions, as in a single-turn episode.
When the policy ends its turn (EOS, or one of the task's stop sequences), the env calls its
*responder* with the :class:`Transcript` so far; the responder returns text, which the env
tokenises and appends to the state as *environment tokens* (the episode goes on with the policy's
next turn), or None, which ends the episode (``terminated``). A task without a responder is a
single-turn task, exactly as before: its first turn end is the episode's end.

- :class:`Transcript`: the prompt and the turns so far as text (policy turn 0, env turn 0, policy
  turn 1, ...); a policy turn's text is decoded without the EOS / stop sequence that ended it.
- A responder is any callable ``respond(transcript) -> str | None``; it may also return a
  :class:`Reply` to pay a per-turn reward with its text (or with None).
- :class:`MultiTurnTask`: a :class:`~textgym.tasks.Task` that carries a responder, a turn limit
  and, optionally, a *planner* ``plan(transcript) -> str`` (the text of the policy turn an expert
  writes next), which gives the task its expert (:class:`TurnExpert`, for DAgger) and its
  demonstrations (:meth:`MultiTurnTask.dialogues`, for BC).

Built-in tasks (``load(name, split)``; gym ids ``textgym/Calculator-v0``, ``textgym/Guessing-v0``)::

    calculator  "Q: 12*7+5\\n" -> "CALC: 12*7"<eos> | " = 84\\n" | "CALC: 84+5"<eos> | " = 89\\n"
                | "The answer is 89."<eos>                                   reward: math (exact)
    guessing    "Guess my number from 1 to 16.\\n" -> " 8\\n" | " higher\\n" | " 12\\n" | ...
                reward: 1 when the last guess is the number, -0.1 for each wrong guess

Both are deterministic (the problems are drawn from ``random.Random("<task>-<seed>")``, the
responders are pure functions of the transcript) and short enough for the embedded model's 128
positions. The calculator reuses the arithmetic task's answer checker
(:class:`textgym.verifiable.MathReward`); its expressions are terse (``a op b`` or ``a op b op c``,
evaluated left to right) rather than the arithmetic task's word problems, so that the embedded
1M-parameter model can learn to call the tool within a short behaviour-cloning run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from textgym.config import check_text_batch
from textgym.experts import Expert
from textgym.tasks import SPLITS, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CalculatorResponder",
    "GuessReward",
    "GuessingResponder",
    "MultiTurnTask",
    "Reply",
    "Responder",
    "Transcript",
    "TurnExpert",
    "as_reply",
    "calculator_plan",
    "calculator_problem",
    "guessing_plan",
    "load",
    "names",
]


@dataclass(frozen=True)
class Transcript:
    """An episode's text so far: the prompt and its turns, alternating policy and environment.

    ``turns[0]`` is the policy's first turn, ``turns[1]`` the environment's answer to it, and so
    on; a policy turn's text is decoded without the EOS or stop sequence that ended it (special
    tokens skipped), an environment turn's text is the responder's string as returned (before any
    chat-template formatting).
    """

    prompt: str
    turns: tuple[str, ...] = ()
    prompt_index: int = 0
    """The task's prompt index of the episode."""
    references: tuple[str, ...] | None = None
    """The prompt's references (a responder may read hidden facts there, e.g. the number)."""

    @property
    def policy_turns(self) -> tuple[str, ...]:
        """The policy's turns (even indices of ``turns``)."""
        return self.turns[0::2]

    @property
    def env_turns(self) -> tuple[str, ...]:
        """The environment's turns (odd indices of ``turns``)."""
        return self.turns[1::2]

    @property
    def last(self) -> str:
        """The policy's latest turn ('' before the first)."""
        policy = self.policy_turns
        return policy[-1] if policy else ""


@dataclass(frozen=True)
class Reply:
    """A responder's answer with a per-turn reward: ``text`` (None ends the episode) and
    ``reward``, paid on the policy's action that ended the turn."""

    text: str | None
    reward: float = 0.0


class Responder(Protocol):
    """``respond(transcript) -> str | Reply | None``: the environment's side of a conversation."""

    def __call__(self, transcript: Transcript) -> str | Reply | None: ...


def as_reply(out: Any, responder: Any) -> Reply:
    """A responder's return value as a :class:`Reply` (raises naming the responder otherwise)."""
    if out is None or isinstance(out, str):
        return Reply(out)
    if isinstance(out, Reply):
        if out.text is not None and not isinstance(out.text, str):
            raise TypeError(f"responder {responder!r:.80} returned Reply(text={out.text!r:.80})")
        if not np.isfinite(out.reward):
            raise ValueError(f"responder {responder!r:.80} returned reward {out.reward!r}")
        return out
    raise TypeError(
        f"a responder returns a str, a textgym.multiturn.Reply or None; {responder!r:.80} "
        f"returned {type(out).__name__} {out!r:.80}"
    )


Planner = Callable[[Transcript], str]
"""``plan(transcript) -> str``: the text of the policy turn an expert writes next (ending with a
stop sequence of the task, or else followed by EOS)."""


@dataclass(frozen=True, eq=False)
class MultiTurnTask(Task):
    """A :class:`~textgym.tasks.Task` whose episodes are conversations with a responder.

    Attributes (besides :class:`~textgym.tasks.Task`'s; ``stop_sequences`` and EOS end a
    policy *turn* here, and the responder decides whether the episode goes on):
        responder: ``respond(transcript) -> str | Reply | None`` (see the module docstring).
        max_turns: the most policy turns of an episode (None: only the token budget limits it).
        planner: the expert's next policy turn ``plan(transcript) -> str``; gives the task's
            expert (:class:`TurnExpert`, unless ``expert`` is given) and :meth:`dialogues`.
    """

    responder: Responder | None = None
    max_turns: int | None = None
    planner: Planner | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.responder is not None and not callable(self.responder):
            raise TypeError(f"responder must be callable, got {self.responder!r:.80}")
        if self.max_turns is not None and (
            isinstance(self.max_turns, bool)
            or not isinstance(self.max_turns, int | np.integer)
            or self.max_turns < 1
        ):
            raise ValueError(f"max_turns must be None or an int >= 1, got {self.max_turns!r}")
        if self.planner is not None and self.expert is None:
            object.__setattr__(self, "expert", TurnExpert(self.planner))

    @classmethod
    def from_task(cls, task: Task, **changes: Any) -> MultiTurnTask:
        """``task`` (a plain or multi-turn task: all its fields are kept) with ``changes`` made,
        e.g. the multi-turn fields (``responder``, ``max_turns``, ``planner``) added."""
        base = {f.name: getattr(task, f.name) for f in fields(task)}
        return cls(**{**base, **changes})

    def dialogues(self) -> list[tuple[str, tuple[str, ...]]]:
        """The planner's conversations with the responder, one per prompt, for behaviour cloning.

        Returns:
            ``(prompt, turns)`` pairs; ``turns`` alternate policy / environment, the policy's as
            the planner wrote them (a turn that does not end with a stop sequence is followed by
            EOS), the last one the turn after which the responder ended the episode (or the
            ``max_turns``-th).
        """
        if self.planner is None or self.responder is None:
            raise ValueError(f"task {self.name!r} needs a planner and a responder for dialogues")
        out = []
        for i, prompt in enumerate(self.prompts):
            refs = None if self.references is None else self.references[i]
            turns: list[str] = []
            while True:
                planned = self.planner(Transcript(prompt, tuple(turns), i, refs))
                turns.append(planned)
                # The responder sees the turn as the env decodes it: without its end marker.
                seen = (*turns[:-1], _strip_stop(planned, self.stop_sequences))
                reply = as_reply(self.responder(Transcript(prompt, seen, i, refs)), self.responder)
                n_policy = (len(turns) + 1) // 2
                if reply.text is None or (
                    self.max_turns is not None and n_policy >= self.max_turns
                ):
                    break
                turns.append(reply.text)
            out.append((prompt, tuple(turns)))
        return out


def _strip_stop(text: str, stops: Sequence[str]) -> str:
    for s in stops:
        if text.endswith(s):
            return text[: -len(s)]
    return text


# ---------------------------------------------------------------------------- the expert


class TurnExpert(Expert):
    """The expert of a :class:`MultiTurnTask`: it plans each policy turn from the transcript.

    At a state inside policy turn k, after ``j`` tokens of that turn, the label is token ``j`` of
    the tokenised ``plan(transcript)`` (EOS after it, unless the plan ends with a stop sequence):
    dynamic across turns (each plan reads the environment's replies and the policy's own earlier
    turns, whatever they were), position-based within a turn, as
    :class:`~textgym.experts.ReferenceExpert` is. Only policy states are ever labelled: the env
    calls :meth:`label_turns` of the bound expert with the transcripts of the finished turns.
    """

    def __init__(self, plan: Planner) -> None:
        self.plan = plan

    def bind(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
    ) -> BoundTurnExpert:
        """Bind to the env's tokenizer (the turn's tokens are those the env would write)."""
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("TurnExpert needs a tokenizer with an eos_token_id")
        return BoundTurnExpert(self.plan, tokenizer, int(eos), task.stop_sequences)


class BoundTurnExpert:
    """A :class:`TurnExpert` bound to a tokenizer; the env calls :meth:`label_turns`."""

    def __init__(
        self, plan: Planner, tokenizer: PreTrainedTokenizerBase, eos: int, stops: tuple[str, ...]
    ) -> None:
        self.plan, self.tokenizer, self.eos, self.stops = plan, tokenizer, eos, stops
        self._cache: dict[str, list[int]] = {}

    def turn_ids(self, text: str) -> list[int]:
        """The tokens of a planned turn: its text, then EOS unless it ends with a stop sequence."""
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not any(text.endswith(s) for s in self.stops):
                ids.append(self.eos)
            self._cache[text] = ids
        return ids

    def label_turns(self, transcripts: Sequence[Transcript], written: Sequence[int]) -> np.ndarray:
        """(B,) int64: the next token of each row's planned turn after ``written[b]`` tokens."""
        out = np.empty(len(transcripts), dtype=np.int64)
        for b, (tr, j) in enumerate(zip(transcripts, written, strict=True)):
            ids = self.turn_ids(self.plan(tr))
            out[b] = ids[j] if j < len(ids) else self.eos
        return out

    def __call__(
        self,
        prompt_index: np.ndarray,
        input_ids: np.ndarray,
        prompt_lengths: np.ndarray,
        completion_lengths: np.ndarray,
    ) -> np.ndarray:
        raise RuntimeError(
            "a TurnExpert labels the states of a multi-turn env only (it needs the transcript); "
            "give the env a responder"
        )


# ---------------------------------------------------------------------------- calculator

_CALL = re.compile(r"^\s*CALC:\s*(\d{1,4})\s*([-+*])\s*(\d{1,4})\s*$")
_RESULT = re.compile(r"=\s*(-?\d+)")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


class CalculatorResponder:
    """The calculator tool: a policy turn ``CALC: a op b`` (whole numbers, op one of + - *) gets
    ``" = value\\n"``, a malformed call ``" = error\\n"``; any other turn is the final answer, and
    the episode ends."""

    def __call__(self, transcript: Transcript) -> str | None:
        turn = transcript.last
        if not turn.lstrip().startswith("CALC:"):
            return None
        m = _CALL.match(turn)
        if m is None:
            return " = error\n"
        return f" = {_apply(int(m.group(1)), m.group(2), int(m.group(3)))}\n"

    def __repr__(self) -> str:
        return "CalculatorResponder()"


@dataclass(frozen=True)
class CalculatorProblem:
    """``expression`` (``a op b`` or ``a op b op c``) and the calls that solve it, in order."""

    expression: str
    calls: tuple[tuple[int, str, int], ...]
    answer: int


def calculator_problem(
    rng: random.Random, steps: int, max_factor: int = 12, max_term: int = 50
) -> CalculatorProblem:
    """A drawn expression of ``steps`` (1 or 2) operations, whole numbers >= 0 throughout.

    The first operation is +, - or * (factors 2..max_factor, terms 2..max_term); a second one is
    + or - (so left-to-right evaluation is the usual precedence) with a term 2..min(30,
    max_term).
    """
    if steps not in (1, 2):
        raise ValueError(f"steps must be 1 or 2, got {steps!r}")
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, max_factor), rng.randint(2, max_factor)
    else:
        a, b = rng.randint(2, max_term), rng.randint(2, max_term)
        if op == "-" and b > a:
            a, b = b, a
    calls = [(a, op, b)]
    x = _apply(a, op, b)
    expression = f"{a}{op}{b}"
    if steps == 2:
        op2, c = rng.choice("+-"), rng.randint(2, min(30, max_term))
        if op2 == "-" and c > x:
            op2 = "+"
        calls.append((x, op2, c))
        x = _apply(x, op2, c)
        expression += f"{op2}{c}"
    return CalculatorProblem(expression, tuple(calls), x)


def _calculator_prompt(expression: str) -> str:
    return f"Q: {expression}\n"


_PROMPT_EXPR = re.compile(r"Q:\s*(\d+)([-+*])(\d+)(?:([-+])(\d+))?")


def calculator_plan(transcript: Transcript) -> str:
    """The expert's next turn: the next call the expression needs after the last result the tool
    gave (the first call when there is none or it is not on the way), then the answer."""
    m = _PROMPT_EXPR.search(transcript.prompt)
    if m is None:
        raise ValueError(f"not a calculator prompt: {transcript.prompt!r:.80}")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    steps = [(a, op, b)]
    value = _apply(a, op, b)
    values = [value]
    if m.group(4):
        steps.append((value, m.group(4), int(m.group(5))))
        values.append(_apply(value, m.group(4), int(m.group(5))))
    last = None
    if transcript.env_turns:
        r = _RESULT.search(transcript.env_turns[-1])
        last = int(r.group(1)) if r else None
    if last is not None and last == values[-1]:
        return f"The answer is {values[-1]}."
    k = values.index(last) + 1 if last in values[:-1] else 0
    x, o, y = steps[k]
    return f"CALC: {x}{o}{y}"


@dataclass(frozen=True)
class CalculatorConfig:
    """Sizes and seed of the calculator task's generated splits."""

    train: int = 1000
    validation: int = 100
    test: int = 200
    seed: int = 0
    steps: tuple[int, ...] = (1, 2)
    """Operations per expression, drawn uniformly from these (1 or 2 each)."""
    max_factor: int = 12
    """Factors of a product are 2..max_factor."""
    max_term: int = 50
    """Terms of a sum or difference are 2..max_term (a second operation's: 2..min(30, max_term))."""
    max_turns: int = 4
    """Two calls, the answer, and one turn to spare."""


def calculator_task(
    split: str | None = "train", cfg: CalculatorConfig = CalculatorConfig()
) -> MultiTurnTask:
    """The calculator task (1-2 operations, every split drawn alike, no expression in two
    splits); reward ``"math"`` on the transcript, whose final answer is "The answer is N"."""
    rng = random.Random(f"calculator-{cfg.seed}")
    seen: set[str] = set()
    rows: list[tuple[str, str, str]] = []
    for name in SPLITS:
        n = getattr(cfg, name)
        k, misses = 0, 0
        while k < n:
            p = calculator_problem(rng, rng.choice(cfg.steps), cfg.max_factor, cfg.max_term)
            if p.expression in seen:
                misses += 1
                if misses > 100 * (n + 10):
                    raise ValueError(
                        f"{cfg} asks for {cfg.train + cfg.validation + cfg.test} distinct "
                        f"expressions; only {len(seen)} were drawn: ask for fewer rows or "
                        "larger numbers"
                    )
                continue
            seen.add(p.expression)
            rows.append((_calculator_prompt(p.expression), str(p.answer), name))
            k += 1
    keep = [r for r in rows if split is None or r[2] == split]
    if not keep:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    return MultiTurnTask(
        name="calculator",
        prompts=tuple(r[0] for r in keep),
        references=tuple((r[1],) for r in keep),
        split=split,
        reward="math",
        responder=CalculatorResponder(),
        max_turns=cfg.max_turns,
        planner=calculator_plan,
    )


# ---------------------------------------------------------------------------- guessing game

_GUESS = re.compile(r"-?\d+")


class GuessingResponder:
    """Answers a guess with ``" higher\\n"`` or ``" lower\\n"`` (paying ``-step_cost``), ends the
    episode when the guess is the number (the prompt's reference) or is not a number."""

    def __init__(self, step_cost: float = 0.1) -> None:
        if not np.isfinite(step_cost) or step_cost < 0:
            raise ValueError(f"step_cost must be finite and >= 0, got {step_cost!r}")
        self.step_cost = step_cost

    def __call__(self, transcript: Transcript) -> Reply:
        if transcript.references is None:
            raise ValueError("the guessing game needs the number as the prompt's reference")
        found = _GUESS.findall(transcript.last)
        if len(found) != 1:
            return Reply(None)  # not one number: the game ends (unsolved)
        guess, secret = int(found[0]), int(transcript.references[0])
        if guess == secret:
            return Reply(None)
        return Reply(" higher\n" if secret > guess else " lower\n", -self.step_cost)

    def __repr__(self) -> str:
        return f"GuessingResponder(step_cost={self.step_cost})"


class GuessReward:
    """1.0 when the last number of the transcript (the policy's last guess: the environment
    answers in words) is the reference number, else 0.0."""

    name = "guess"
    token_level = False
    needs_references = True

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:  # (B,) float32
        check_text_batch(self.name, prompts, completions, references, "the number")
        assert references is not None
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (text, refs) in enumerate(zip(completions, references, strict=True)):
            found = _GUESS.findall(text)
            out[i] = float(bool(found) and int(found[-1]) == int(refs[0]))
        return out

    def __repr__(self) -> str:
        return "GuessReward()"


def guessing_plan(transcript: Transcript, high: int = 16) -> str:
    """Binary search over what the replies so far allow (any earlier guesses, good or bad)."""
    lo, hi = 1, high
    for guess, reply in zip(transcript.policy_turns, transcript.env_turns, strict=False):
        found = _GUESS.findall(guess)
        if len(found) != 1:
            continue
        g = int(found[0])
        if "higher" in reply:
            lo = max(lo, g + 1)
        elif "lower" in reply:
            hi = min(hi, g - 1)
    if lo > hi:  # inconsistent replies cannot happen with the built-in responder
        lo, hi = 1, high
    return f" {(lo + hi) // 2}\n"


def guessing_task(split: str | None = "train", high: int = 16, max_turns: int = 6) -> MultiTurnTask:
    """The guessing game: one prompt per number 1..high (every split holds them all: the game has
    nothing to hold out); a turn ends at a newline; reward :class:`GuessReward` plus the
    responder's -0.1 per wrong guess."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    prompt = f"Guess my number from 1 to {high}.\n"
    return MultiTurnTask(
        name="guessing",
        prompts=(prompt,) * high,
        references=tuple((str(k),) for k in range(1, high + 1)),
        split=split,
        stop_sequences=("\n",),
        reward=GuessReward(),
        responder=GuessingResponder(),
        max_turns=max_turns,
        planner=_GuessPlan(high),
    )


@dataclass(frozen=True)
class _GuessPlan:
    high: int

    def __call__(self, transcript: Transcript) -> str:
        return guessing_plan(transcript, self.high)


_BUILTIN: dict[str, Callable[[str | None], MultiTurnTask]] = {
    "calculator": calculator_task,
    "guessing": guessing_task,
}


def names() -> list[str]:
    """The built-in multi-turn task names (``TextGenEnv(task=name)`` accepts them)."""
    return sorted(_BUILTIN)


def load(name: str, split: str | None = "train") -> MultiTurnTask:
    """A built-in multi-turn task: ``"calculator"`` or ``"guessing"``."""
    if name not in _BUILTIN:
        raise ValueError(f"unknown multi-turn task {name!r}; built-in: {', '.join(names())}")
    return _BUILTIN[name](split)
