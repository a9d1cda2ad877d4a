"""Verifiable-reward tasks: arithmetic word problems and format following, with exact checkers.

Two built-in tasks (``textgym.tasks.load("arithmetic")``, ``load("format")``; gym ids
``textgym/Arithmetic-v0``, ``textgym/Format-v0``; see docs/verifiable.md)::

    arithmetic  "Q: Ann has 12 eggs, gets 7 more and gives 5 away. How many now?\\nA:"
                                                   " 12+7=19. 19-5=14. The answer is 14."
    format      "Write red, blue, green in brackets separated by semicolons:"
                                                                          " [red; blue; green]"

The problems are generated, not shipped: :func:`arithmetic_records` and :func:`format_records`
draw them from ``random.Random("<task>-<seed>")`` (the same seed gives the same rows), and
``tasks.load`` calls them with :class:`VerifiableDataConfig`'s defaults (2,000 / 200 / 300 rows);
call them with other sizes for more data (``Task.from_records(arithmetic_records(cfg))``).

An arithmetic problem is drawn from a grammar: a start amount, then 1-5 steps (add, take away,
multiply by 2-4, keep a half / third / quarter / fifth), every intermediate value a whole number
in 0..999; the wording is terse so that a 5-step problem and its solution fit a 128-position
model (at most 127 tokens of the embedded tokenizer). The reference is a worked solution, one
equation per step, ending in "The answer is N." (for BC); the train and validation splits hold
1-3 steps, the test split 4-5 (harder: longer chains than any seen in training).

Checkers (pure Python, exact):

- :func:`extract_answer` reads the final answer of a text: the number after the last "answer is"
  (or "####"), with thousands commas, a sign (ASCII or Unicode minus), a decimal part or a fraction
  ``p/q``; :func:`parse_number` turns it into a :class:`fractions.Fraction`, so 14, 14.0, 14.00,
  "1,400" / 100 and 28/2 are one value. Why not ``math-verify``: the answers here are rationals
  written in plain text, which an exact rational comparison checks without a dependency;
  ``math-verify`` targets LaTeX expressions, which these tasks never produce.
- :class:`MathReward` (``make("math")``): 1.0 when the extracted answer equals the reference's;
  partial credit (off by default): ``format_credit`` for a wrong answer stated in the required
  form, ``step_credit`` times the fraction of the completion's equations ``a op b = c`` that are
  true arithmetic.
- :class:`FormatReward` (``make("format")``): 1.0 for the exact formatted answer,
  ``format_credit`` (0.5) for text in the requested format with other words, else 0.
- :class:`RegexReward` (``make("regex", pattern=...)``): 1.0 when the stripped completion matches
  the pattern in full.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from textgym.config import check_text_batch

__all__ = [
    "FORMATS",
    "FormatReward",
    "MathReward",
    "RegexReward",
    "VerifiableDataConfig",
    "arithmetic_problem",
    "arithmetic_records",
    "equations_correct",
    "extract_answer",
    "format_problem",
    "format_records",
    "parse_number",
]

# ---------------------------------------------------------------------------- arithmetic

NAMES = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena")
ITEMS = ("apples", "books", "coins", "stamps", "shells", "marbles", "cards", "pencils", "eggs")
MAX_VALUE = 999


@dataclass(frozen=True)
class Problem:
    """One drawn problem: its prompt, worked solution and exact answer."""

    prompt: str
    solution: str
    answer: int
    steps: int


def _step(
    rng: random.Random, x: int, max_operand: int = 50, max_value: int = MAX_VALUE
) -> tuple[str, str, int]:
    """One random step from amount x: (verb phrase, equation, new amount), every amount in
    0..max_value and every added or taken amount in 1..max_operand."""
    options = []
    if x < max_value:
        k = rng.randint(1, min(max_operand, max_value - x))
        options.append(
            (f"{rng.choice(['gets', 'finds', 'buys'])} {k} more", f"{x}+{k}={x + k}.", x + k)
        )
    if x > 1:
        k = rng.randint(1, min(max_operand, x - 1))
        phrase = rng.choice([f"gives {k} away", f"loses {k}", f"sells {k}"])
        options.append((phrase, f"{x}-{k}={x - k}.", x - k))
    factors = [k for k in (2, 3, 4) if 0 < x * k <= max_value]
    if factors:
        k = rng.choice(factors)
        word = {2: "doubles", 3: "triples", 4: "quadruples"}[k]
        options.append((f"{word} them", f"{x}*{k}={x * k}.", x * k))
    divisors = [k for k in (2, 3, 4, 5) if x % k == 0 and x >= k]
    if divisors:
        k = rng.choice(divisors)
        share = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}[k]
        options.append((f"keeps {share}", f"{x}/{k}={x // k}.", x // k))
    return rng.choice(options)  # x in 0..max_value always allows + or -


def arithmetic_problem(
    rng: random.Random,
    steps: int,
    *,
    max_start: int = 60,
    max_operand: int = 50,
    max_value: int = MAX_VALUE,
) -> Problem:
    """A word problem of ``steps`` operations, its worked solution and answer: the start amount in
    2..max_start, amounts added or taken in 1..max_operand, every amount in 0..max_value (the
    defaults are the built-in task's)."""
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, max_start)
    phrases, equations = [], []
    start = x
    for _ in range(steps):
        phrase, equation, x = _step(rng, x, max_operand, max_value)
        phrases.append(phrase)
        equations.append(equation)
    told = ", ".join(phrases[:-1]) + (" and " if steps > 1 else "") + phrases[-1]
    prompt = f"Q: {name} has {start} {items}, {told}. How many now?\nA:"
    solution = " " + " ".join(equations) + f" The answer is {x}."
    return Problem(prompt, solution, x, steps)


# ---------------------------------------------------------------------------- checkers

MINUS = "\u2212"  # the Unicode minus sign
_NUMBER = rf"[-{MINUS}]?\s?\$?\d[\d,]*(?:\.\d+)?(?:\s?/\s?\d+)?"
_ANSWER = re.compile(rf"(?:answer\s+is|####)\s*:?\s*({_NUMBER})", re.IGNORECASE)
_EQUATION = re.compile(rf"({_NUMBER})\s*([-+*/×x÷])\s*({_NUMBER})\s*=\s*({_NUMBER})")


def parse_number(text: str) -> Fraction | None:
    """A written number as an exact rational: "-1,200.50" -> -2401/2, "3/4", "14.0" -> 14, "$5";
    None when it is not a number (or divides by 0)."""
    s = text.strip().replace(MINUS, "-").replace("$", "").replace(" ", "").rstrip(".,")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")  # thousands separators, only where they are well placed
    try:
        if "/" in s:
            p, q = s.split("/")
            return Fraction(int(p), int(q)) if int(q) != 0 else None
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(text: str) -> Fraction | None:
    """The number after the last "answer is" (or "####") of ``text``; None when there is none."""
    found = _ANSWER.findall(text)
    return parse_number(found[-1]) if found else None


def equations_correct(text: str) -> tuple[int, int]:
    """(true, total) over the equations ``a op b = c`` written in ``text``."""
    ops = {"+": "+", "-": "-", "*": "*", "×": "*", "x": "*", "/": "/", "÷": "/"}
    true = total = 0
    for a, op, b, c in _EQUATION.findall(text):
        x, y, z = parse_number(a), parse_number(b), parse_number(c)
        total += 1
        if x is None or y is None or z is None:
            continue
        kind = ops[op]
        value = x + y if kind == "+" else x - y if kind == "-" else x * y if kind == "*" else None
        if kind == "/" and y != 0:
            value = x / y
        true += int(value == z)
    return true, total


REFERENCES = "the worked solution or answer"


class MathReward:
    """r(x, y) = 1.0 when y's final answer equals the reference's (exact rationals), else partial
    credit: ``format_credit`` when y states an answer in the required form ("The answer is N"),
    plus ``step_credit`` x the fraction of y's equations that are true. Each reference is a worked
    solution or a bare answer; the first one with an answer counts.

    Keeps ``textgym.rewards``' Reward protocol (``textgym.rewards.make("math")``).
    """

    token_level = False
    needs_references = True

    def __init__(self, format_credit: float = 0.0, step_credit: float = 0.0) -> None:
        if not (
            0 <= format_credit < 1 and 0 <= step_credit < 1 and format_credit + step_credit < 1
        ):
            raise ValueError(
                "MathReward needs 0 <= format_credit, step_credit and their sum < 1 (a wrong "
                f"answer must score below a right one), got {format_credit}, {step_credit}"
            )
        self.format_credit, self.step_credit = format_credit, step_credit
        self.name = "math"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:  # (B,) float32
        check_text_batch(self.name, prompts, completions, references, REFERENCES)
        assert references is not None
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (text, refs) in enumerate(zip(completions, references, strict=True)):
            refs = (refs,) if isinstance(refs, str) else refs
            gold = next(
                (a for a in (extract_answer(r) or parse_number(r) for r in refs) if a is not None),
                None,
            )
            if gold is None:
                raise ValueError(f"no answer in the references {refs!r} of completion {i}")
            got = extract_answer(text)
            if got is not None and got == gold:
                out[i] = 1.0
                continue
            credit = self.format_credit * (got is not None)
            if self.step_credit:
                true, total = equations_correct(text)
                credit += self.step_credit * (true / total if total else 0.0)
            out[i] = credit
        return out

    def __repr__(self) -> str:
        return f"MathReward(format_credit={self.format_credit}, step_credit={self.step_credit})"


# ---------------------------------------------------------------------------- format following

WORDS = (
    "red", "blue", "green", "cat", "dog", "tree", "river", "stone", "cloud", "bread", "lamp",
    "chair", "bird", "fish", "book", "door", "rain", "snow", "sun", "moon",
)  # fmt: skip


@dataclass(frozen=True)
class Format:
    """A requested layout: its instruction, how it writes words, and its regex (any words)."""

    instruction: str
    template: str
    pattern: str

    def write(self, words: Sequence[str]) -> str:
        return self.template.format(*words)


FORMATS: dict[str, Format] = {
    "brackets": Format("in brackets separated by semicolons", "[{}; {}; {}]", r"\[\w+; \w+; \w+\]"),
    "upper": Format("in capitals separated by commas", "{}, {}, {}", r"[A-Z]+, [A-Z]+, [A-Z]+"),
    "numbered": Format(
        "as a numbered list on one line", "1. {} 2. {} 3. {}", r"1\. \w+ 2\. \w+ 3\. \w+"
    ),
    "json": Format("as a JSON list", '["{}", "{}", "{}"]', r'\["\w+", "\w+", "\w+"\]'),
    "reversed": Format("in reverse order separated by dashes", "{2}-{1}-{0}", r"\w+-\w+-\w+"),
}


def format_problem(rng: random.Random) -> tuple[str, str, str]:
    """(prompt, reference, format name) of one format-following problem (three words)."""
    name = rng.choice(sorted(FORMATS))
    fmt = FORMATS[name]
    words = rng.sample(WORDS, 3)
    shown = [w.upper() for w in words] if name == "upper" else words
    prompt = f"Write {', '.join(words)} {fmt.instruction}:"
    return prompt, " " + fmt.write(shown), name


def requested_format(prompt: str) -> Format | None:
    """The format a format-task prompt asks for (by its instruction), or None."""
    return next((f for f in FORMATS.values() if f.instruction in prompt), None)


class FormatReward:
    """r(x, y) = 1.0 when y (stripped) is the reference; ``format_credit`` when it is in the
    format the prompt requests (:data:`FORMATS`) with other words; else 0."""

    token_level = False
    needs_references = True

    def __init__(self, format_credit: float = 0.5) -> None:
        if not 0 <= format_credit < 1:
            raise ValueError(f"format_credit must be in [0, 1), got {format_credit}")
        self.format_credit = format_credit
        self.name = "format"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:  # (B,) float32
        check_text_batch(self.name, prompts, completions, references, REFERENCES)
        assert references is not None
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (p, c, refs) in enumerate(zip(prompts, completions, references, strict=True)):
            refs = (refs,) if isinstance(refs, str) else refs
            text = c.strip()
            if any(text == r.strip() for r in refs):
                out[i] = 1.0
                continue
            fmt = requested_format(p)
            if fmt is not None and re.fullmatch(fmt.pattern, text):
                out[i] = self.format_credit
        return out

    def __repr__(self) -> str:
        return f"FormatReward(format_credit={self.format_credit})"


class RegexReward:
    """r(x, y) = 1.0 when the stripped completion matches ``pattern`` in full, else 0.0."""

    token_level = False
    needs_references = False

    def __init__(self, pattern: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"pattern {pattern!r} is not a regular expression: {err}") from err
        self.name = "regex"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:  # (B,) float32
        if isinstance(completions, str):
            raise TypeError("reward 'regex' is batched: pass lists, not a single str")
        return np.array(
            [float(self.regex.fullmatch(c.strip()) is not None) for c in completions],
            dtype=np.float32,
        )

    def __repr__(self) -> str:
        return f"RegexReward({self.regex.pattern!r})"


# ---------------------------------------------------------------------------- the data

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class VerifiableDataConfig:
    """Sizes and seed of the verifiable tasks' rows."""

    seed: int = 0
    train: int = 2000
    validation: int = 200
    test: int = 300
    train_steps: tuple[int, ...] = (1, 2, 3)
    """Steps of the train and validation problems (equally many of each)."""
    test_steps: tuple[int, ...] = (4, 5)
    """Steps of the test problems."""
    max_start: int = 60
    """Arithmetic: the start amount is drawn from 2..max_start."""
    max_operand: int = 50
    """Arithmetic: amounts added or taken away are drawn from 1..max_operand."""
    max_value: int = MAX_VALUE
    """Arithmetic: every amount stays in 0..max_value (smaller numbers: an easier task)."""

    def __post_init__(self) -> None:
        for name in ("max_start", "max_operand"):
            if getattr(self, name) < 2:
                raise ValueError(
                    f"VerifiableDataConfig.{name}={getattr(self, name)}: use 2 or more"
                )
        if self.max_value < self.max_start:
            raise ValueError(
                f"VerifiableDataConfig.max_value={self.max_value} is below "
                f"max_start={self.max_start}: raise max_value or lower max_start"
            )


def arithmetic_records(
    cfg: VerifiableDataConfig = VerifiableDataConfig(),
) -> list[dict[str, object]]:
    """The rows of ``arithmetic.jsonl``, split after split."""
    rng = random.Random(f"arithmetic-{cfg.seed}")
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for split in SPLITS:
        steps = cfg.test_steps if split == "test" else cfg.train_steps
        n = getattr(cfg, split)
        for i in range(n):
            for _ in range(1000):
                problem = arithmetic_problem(
                    rng,
                    steps[i % len(steps)],
                    max_start=cfg.max_start,
                    max_operand=cfg.max_operand,
                    max_value=cfg.max_value,
                )
                if problem.prompt not in seen:
                    break
            else:
                raise ValueError(f"too few distinct problems of {steps[i % len(steps)]} steps")
            seen.add(problem.prompt)
            rows.append(
                {
                    "prompt": problem.prompt,
                    "references": [problem.solution],
                    "split": split,
                    "answer": problem.answer,
                    "steps": problem.steps,
                }
            )
    return rows


def format_records(cfg: VerifiableDataConfig = VerifiableDataConfig()) -> list[dict[str, object]]:
    """The format task's rows, split after split: ``{"prompt", "references", "split",
    "format"}``."""
    rng = random.Random(f"format-{cfg.seed}")
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for split in SPLITS:
        for _ in range(getattr(cfg, split)):
            for _ in range(1000):
                prompt, reference, name = format_problem(rng)
                if prompt not in seen:
                    break
            else:
                raise ValueError("too few distinct format prompts")
            seen.add(prompt)
            rows.append(
                {"prompt": prompt, "references": [reference], "split": split, "format": name}
            )
    return rows


@lru_cache(maxsize=4)
def builtin_records(task: str) -> tuple[dict[str, object], ...]:
    """The rows ``tasks.load`` reads for ``"arithmetic"`` or ``"format"`` (default sizes)."""
    return tuple({"arithmetic": arithmetic_records, "format": format_records}[task]())
