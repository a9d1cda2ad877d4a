"""Verifiable tasks: the answer checker on tricky answers, the math / format / regex rewards, and
the generated arithmetic and format data."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from textgym.rewards import make

import textgym
from textgym import tasks
from textgym.verifiable import (
    FORMATS,
    MathReward,
    VerifiableDataConfig,
    arithmetic_problem,
    arithmetic_records,
    equations_correct,
    extract_answer,
    format_records,
    parse_number,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (" 3+4=7. The answer is 7.", Fraction(7)),
        ("The answer is   7", Fraction(7)),  # spacing
        ("the ANSWER IS: 7", Fraction(7)),  # case, a colon
        ("The answer is 7.0", Fraction(7)),  # trailing zeros
        ("The answer is 7.50.", Fraction(15, 2)),
        ("The answer is 3/4", Fraction(3, 4)),  # a fraction
        ("The answer is 6 / 8", Fraction(3, 4)),
        ("The answer is -12", Fraction(-12)),  # negative numbers
        ("The answer is \u221212", Fraction(-12)),  # the Unicode minus
        ("The answer is - 12", Fraction(-12)),
        ("The answer is 1,200.", Fraction(1200)),  # thousands separators
        ("The answer is $45", Fraction(45)),
        ("#### 42", Fraction(42)),  # GSM8K's marker
        ("The answer is 5. No wait, the answer is 6.", Fraction(6)),  # the last one counts
        ("The answer is 12, I think", Fraction(12)),
        ("12+4=16.", None),  # no stated answer
        ("The answer is seven", None),
        ("The answer is", None),
        ("", None),
        ("The answer is 3/0", None),  # not a number
        ("The answer is 1,20", None),  # a misplaced separator is not a thousands comma
    ],
)
def test_extract_answer_on_tricky_texts(text: str, value: Fraction | None) -> None:
    assert extract_answer(text) == value


def test_parse_number_is_exact() -> None:
    assert parse_number("0.1") + parse_number("0.2") == parse_number("0.3")  # type: ignore[operator]
    assert parse_number("007") == 7
    assert parse_number("abc") is None


def test_equations_correct_counts_true_equations() -> None:
    assert equations_correct(" 12+7=19. 19-5=14. 14*2=29.") == (2, 3)
    assert equations_correct("8 / 2 = 4, 3 x 3 = 9, 2 × 5 = 10") == (3, 3)
    assert equations_correct("no equations") == (0, 0)


SOLUTION = (" 12+7=19. 19-5=14. The answer is 14.",)


def test_math_reward_exact_and_partial_credit() -> None:
    texts = [
        " 12+7=19. 19-5=14. The answer is 14.",  # right
        " The answer is 14.00",  # right, written differently
        " 12+7=19. 19-5=13. The answer is 13.",  # wrong answer, one of two equations true
        " 12+7=19. 19-5=14.",  # no stated answer
        "",
    ]
    refs = [SOLUTION] * len(texts)
    prompts = ["Q"] * len(texts)
    np.testing.assert_array_equal(MathReward()(prompts, texts, refs), [1, 1, 0, 0, 0])
    partial = MathReward(format_credit=0.1, step_credit=0.4)(prompts, texts, refs)
    np.testing.assert_allclose(partial, [1, 1, 0.1 + 0.4 * 0.5, 0.4 * 1.0, 0.0])
    assert make("math")(["Q"], [" The answer is 2"], [("2",)])[0] == 1.0  # a bare answer


def test_math_reward_errors() -> None:
    with pytest.raises(ValueError, match="sum < 1"):
        MathReward(format_credit=0.5, step_credit=0.5)
    with pytest.raises(ValueError, match="needs references"):
        MathReward()(["Q"], ["The answer is 1"])
    with pytest.raises(ValueError, match="no answer in the references"):
        MathReward()(["Q"], ["The answer is 1"], [("no number here",)])
    with pytest.raises(TypeError, match="batched"):
        MathReward()("Q", "The answer is 1", [("1",)])  # type: ignore[arg-type]


def test_format_reward_exact_format_only_and_wrong() -> None:
    prompt = "Write red, blue, green in brackets separated by semicolons:"
    texts = [" [red; blue; green]", "[cat; dog; sun]", " red; blue; green", "[red, blue, green]"]
    out = make("format")([prompt] * 4, texts, [(" [red; blue; green]",)] * 4)
    np.testing.assert_array_equal(out, [1.0, 0.5, 0.0, 0.0])


def test_every_format_regex_matches_its_own_writing() -> None:
    rng = random.Random(0)
    for name, fmt in FORMATS.items():
        words = [w.upper() for w in ("a", "b", "c")] if name == "upper" else ["cat", "dog", "sun"]
        assert re.fullmatch(fmt.pattern, fmt.write(words)), name
    rows = format_records(
        VerifiableDataConfig(train=50, validation=0, test=0, seed=rng.randint(0, 9))
    )
    reward = make("format")
    prompts = [r["prompt"] for r in rows]
    refs = [tuple(r["references"]) for r in rows]  # type: ignore[arg-type]
    texts = [r[0] for r in refs]
    assert (reward(prompts, texts, refs) == 1.0).all()  # type: ignore[arg-type]


def test_regex_reward() -> None:
    r = make("regex", pattern=r"\d+")
    np.testing.assert_array_equal(r(["p", "p"], [" 42 ", "4x"]), [1.0, 0.0])
    with pytest.raises(ValueError, match="not a regular expression"):
        make("regex", pattern="(")


# ---------------------------------------------------------------------------- the data


def test_worked_solutions_are_true_and_end_in_the_answer() -> None:
    rng = random.Random(1)
    for steps in (1, 2, 3, 4, 5):
        for _ in range(50):
            p = arithmetic_problem(rng, steps)
            true, total = equations_correct(p.solution)
            assert (true, total) == (steps, steps), p
            assert extract_answer(p.solution) == p.answer
            assert 0 <= p.answer <= 999
            assert p.prompt.startswith("Q: ")
            assert p.prompt.endswith("How many now?\nA:")


def test_smaller_numbers_stay_in_their_ranges() -> None:
    rows = arithmetic_records(
        VerifiableDataConfig(
            train=300, validation=0, test=60, max_start=20, max_operand=9, max_value=99
        )
    )
    for r in rows:
        numbers = [int(n) for n in re.findall(r"\d+", str(r["references"][0]))]  # type: ignore[index]
        assert max(numbers) <= 99, r
        start = int(re.findall(r"has (\d+)", str(r["prompt"]))[0])
        assert 2 <= start <= 20, r
        for k in re.findall(r"\d+[-+](\d+)=", str(r["references"][0])):  # type: ignore[index]
            assert 1 <= int(k) <= 9, r
        assert equations_correct(str(r["references"][0]))[0] == r["steps"]  # type: ignore[index]
    with pytest.raises(ValueError, match="max_value=10 is below max_start=20"):
        VerifiableDataConfig(max_start=20, max_value=10)
    with pytest.raises(ValueError, match="max_operand=1"):
        VerifiableDataConfig(max_operand=1)


def test_builtin_splits_sizes_difficulty_and_determinism() -> None:
    rows = arithmetic_records()
    assert rows == arithmetic_records()  # seeded
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(str(r["split"]), []).append(r)
    assert {k: len(v) for k, v in by_split.items()} == {
        "train": 2000,
        "validation": 200,
        "test": 300,
    }
    assert {r["steps"] for r in by_split["train"]} == {1, 2, 3}
    assert {r["steps"] for r in by_split["test"]} == {4, 5}  # harder than training
    assert len({r["prompt"] for r in rows}) == len(rows)
    other = arithmetic_records(VerifiableDataConfig(seed=1, train=10, validation=0, test=0))
    assert other[0]["prompt"] != rows[0]["prompt"]
    task = tasks.load("arithmetic", "test")
    assert len(task) == 300
    assert (
        task.reward(
            task.prompts[:3], [r[0] for r in task.references[:3]], task.references[:3]
        ).tolist()
        == [1.0] * 3
    )  # type: ignore[union-attr,misc]


@pytest.mark.skipif(
    not (Path(textgym.DEFAULT_MODEL) / "config.json").exists(), reason="embedded model not built"
)
def test_the_longest_problem_and_solution_fit_the_embedded_model() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(textgym.DEFAULT_MODEL)
    rows = [r for r in arithmetic_records() if r["split"] == "test"]
    longest = max(len(tok(r["prompt"] + r["references"][0])["input_ids"]) for r in rows)  # type: ignore[operator,index]
    assert longest <= 128  # the embedded model's positions
