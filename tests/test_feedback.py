"""The feedback data model: records, exact conversions, loaders and their errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from textgym.feedback import (
    Correction,
    Ranking,
    Rating,
    Thumb,
    correction_to_demonstration,
    correction_to_pair,
    from_records,
    load_jsonl,
    ranking_order,
    ranking_to_pairs,
    ratings_to_pairs,
)
from textgym.preference import PreferencePair


def test_ranking_to_pairs_is_every_pair_with_different_ranks() -> None:
    r = Ranking("x", ("b", "a", "c", "d"), (1, 0, 2, 1))  # a best, then b = d (a tie), then c
    pairs = {(p.chosen, p.rejected) for p in ranking_to_pairs(r)}
    assert pairs == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("d", "c")}  # no (b, d)
    full = Ranking("x", ("a", "b", "c"), (0, 1, 2))
    assert len(ranking_to_pairs(full)) == 3  # K(K-1)/2
    assert ranking_order(Ranking("x", ("b", "a", "c"), (1, 0, 2))) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="hold a tie"):
        ranking_order(r)


def test_corrections_and_ratings_convert_exactly() -> None:
    c = Correction("x", " bad text", " good text")
    assert correction_to_pair(c) == PreferencePair("x", " good text", " bad text")
    assert correction_to_demonstration(c) == ("x", " good text")
    ratings = [Rating("x", "a", 4), Rating("x", "b", 2), Rating("x", "c", 4), Rating("y", "d", 5)]
    pairs = {(p.chosen, p.rejected) for p in ratings_to_pairs(ratings)}
    assert pairs == {("a", "b"), ("c", "b")}  # equal ratings and single-rated prompts give none


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Ranking("x", ("a",), (0,)), "at least 2 completions"),
        (lambda: Ranking("x", ("a", "b"), (0,)), "1 ranks for 2 completions"),
        (lambda: Ranking("x", ("a", "b"), (0, -1)), "ints >= 0"),
        (lambda: Ranking("x", ("a", "b"), (1, 1)), "the same rank"),
        (lambda: Ranking("x", ("a", " "), (0, 1)), r"completions\[1\] is empty"),
        (lambda: Rating("x", "a", 6), r"outside its scale \[1.0, 5.0\]"),
        (lambda: Rating("x", "a", 3, low=5, high=1), "low < high"),
        (lambda: Rating("x", "a", float("nan")), "finite number"),
        (lambda: Thumb("x", "a", 1), "true/false"),  # type: ignore[arg-type]
        (lambda: Correction("x", "a", "a"), "nothing was corrected"),
        (lambda: Correction("x", "a", 3), "corrected must be a str"),  # type: ignore[arg-type]
    ],
)
def test_bad_records_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_load_each_kind(tmp_path: Path) -> None:
    rankings = load_jsonl(
        write(tmp_path / "r.jsonl", [{"prompt": "x", "completions": ["a", "b"]},
                                     {"prompt": "y", "completions": ["c", "d"], "ranks": [1, 0]}]),
        "ranking",
    )  # fmt: skip
    assert rankings[0].ranks == (0, 1)  # list order when ranks are absent
    assert ranking_order(rankings[1]) == ["d", "c"]
    thumbs = load_jsonl(
        write(tmp_path / "t.jsonl", [{"prompt": "x", "completion": "a", "label": "down"},
                                     {"prompt": "x", "completion": "b", "label": True}]),
        "thumb",
    )  # fmt: skip
    assert [t.up for t in thumbs] == [False, True]
    ratings = from_records([{"prompt": "x", "completion": "a", "rating": 7, "low": 0, "high": 10}],
                           "rating")  # fmt: skip
    assert ratings[0] == Rating("x", "a", 7, 0, 10)
    fixes = from_records([{"prompt": "x", "completion": "a", "corrected": "b"}], "correction")
    assert correction_to_pair(fixes[0]).chosen == "b"


@pytest.mark.parametrize(
    ("kind", "row", "match"),
    [
        ("thumb", {"prompt": "x", "completion": "a"}, r"f.jsonl:2: missing field\(s\) \['label'\]"),
        ("thumb", {"prompt": "x", "completion": "a", "label": "yes"}, "f.jsonl:2: label must be"),
        ("rating", {"prompt": "x", "completion": "a", "rating": "5"}, "f.jsonl:2: rating must be"),
        (
            "rating",
            {"prompt": "x", "completion": "a", "rating": 0},
            "f.jsonl:2: rating 0 is outside",
        ),
        ("ranking", {"prompt": "x", "completions": "ab"}, "f.jsonl:2: completions must be a list"),
        (
            "ranking",
            {"prompt": "x", "completions": ["a", ""]},
            r"f.jsonl:2: completions\[1\] is empty",
        ),
        (
            "correction",
            {"prompt": "x", "completion": "a", "corrected": "a"},
            "f.jsonl:2: the correct",
        ),
        ("correction", "{not json", "f.jsonl:2: not valid JSON"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path: Path, kind: Any, row: Any, match: str
) -> None:
    good = {
        "thumb": {"prompt": "x", "completion": "a", "label": True},
        "rating": {"prompt": "x", "completion": "a", "rating": 3},
        "ranking": {"prompt": "x", "completions": ["a", "b"]},
        "correction": {"prompt": "x", "completion": "a", "corrected": "b"},
    }[kind]
    path = write(tmp_path / "f.jsonl", [good, row])
    with pytest.raises(ValueError, match=match) as err:
        load_jsonl(path, kind)
    assert "f.jsonl" in str(err.value)


def test_unknown_kind_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown feedback kind 'stars'"):
        from_records([{"prompt": "x"}], "stars")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no thumb records"):
        from_records([], "thumb")
