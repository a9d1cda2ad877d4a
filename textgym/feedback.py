"""Feedback beyond pairwise comparisons: rankings, ratings, thumbs up/down and corrections.

One record type per form, each checked at construction (the pairwise form is
``textgym.preference.PreferencePair``)::

    Ranking(prompt, completions, ranks)        K completions, rank 0 = best, equal ranks = a tie
    Rating(prompt, completion, rating, low, high)   a score on a scale, e.g. 1-5 stars
    Thumb(prompt, completion, up)              unpaired binary feedback
    Correction(prompt, completion, corrected)  a completion and its edited version

Exact conversions, and what each loses:

- :func:`ranking_to_pairs`: every pair of a ranking with different ranks, better first
  (K(K-1)/2 without ties). Loses that the pairs come from one list (they are not independent
  judgments) and the ties themselves.
- :func:`ranking_order`: the completions best first, for Plackett-Luce; refuses ties (PL has no
  ties: use the pairs, which drop them).
- :func:`correction_to_pair`: corrected ≻ original. Loses what was edited and by how much.
- :func:`correction_to_demonstration`: (prompt, corrected) for behaviour cloning. Loses the
  original, i.e. what not to do.
- :func:`ratings_to_pairs`: pairs of ratings of one prompt with different values. Loses the scale
  (how much better) and every rating whose prompt was rated once.

Loaders: :func:`load_jsonl` (``kind=`` one of ``"ranking"``, ``"rating"``, ``"thumb"``,
``"correction"``) and :func:`from_records` (any iterable of mappings, e.g. a ``datasets.Dataset``);
a malformed row raises a ``ValueError`` naming its file and line (or record index) and the field.
JSON fields: ranking ``{"prompt", "completions": [...], "ranks": [...]}`` (``ranks`` optional:
the list order, best first); rating ``{"prompt", "completion", "rating", "low", "high"}`` (the
scale defaults to 1-5); thumb ``{"prompt", "completion", "label"}`` (``true``/``false``, or
``"up"``/``"down"``); correction ``{"prompt", "completion", "corrected"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from textgym.preference import PreferencePair
from textgym.records import FieldTypeError, MissingFieldError, read_jsonl

__all__ = [
    "Correction",
    "Ranking",
    "Rating",
    "Thumb",
    "correction_to_demonstration",
    "correction_to_pair",
    "from_records",
    "load_jsonl",
    "ranking_order",
    "ranking_to_pairs",
    "ratings_to_pairs",
]

Kind = Literal["ranking", "rating", "thumb", "correction"]


def _text(value: Any, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise FieldTypeError(f"{name} must be a str, got {type(value).__name__}")
    if not empty and not value.strip():
        raise ValueError(f"{name} is empty")
    return value


@dataclass(frozen=True)
class Ranking:
    """K ≥ 2 completions of one prompt with their ranks (0 = best; equal ranks tie)."""

    prompt: str
    completions: tuple[str, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        _text(self.prompt, "prompt", empty=True)
        for i, c in enumerate(self.completions):
            _text(c, f"completions[{i}]")
        if len(self.completions) < 2:
            raise ValueError(f"a ranking needs at least 2 completions, got {len(self.completions)}")
        if len(self.ranks) != len(self.completions):
            raise ValueError(
                f"{len(self.ranks)} ranks for {len(self.completions)} completions: give one each"
            )
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 0 for r in self.ranks):
            raise FieldTypeError(f"ranks must be ints >= 0 (0 = best), got {list(self.ranks)}")
        if len(set(self.ranks)) == 1:
            raise ValueError("every completion has the same rank: the ranking says nothing")


@dataclass(frozen=True)
class Rating:
    """A score ``rating`` in [``low``, ``high``] of one completion (e.g. 1-5 stars)."""

    prompt: str
    completion: str
    rating: float
    low: float = 1.0
    high: float = 5.0

    def __post_init__(self) -> None:
        _text(self.prompt, "prompt", empty=True)
        _text(self.completion, "completion")
        for name in ("rating", "low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise FieldTypeError(f"{name} must be a finite number, got {v!r}")
        if not self.low < self.high:
            raise ValueError(f"the scale needs low < high, got [{self.low}, {self.high}]")
        if not self.low <= self.rating <= self.high:
            raise ValueError(f"rating {self.rating} is outside its scale [{self.low}, {self.high}]")


@dataclass(frozen=True)
class Thumb:
    """Unpaired binary feedback: ``up`` True (desirable) or False (undesirable)."""

    prompt: str
    completion: str
    up: bool

    def __post_init__(self) -> None:
        _text(self.prompt, "prompt", empty=True)
        _text(self.completion, "completion")
        if not isinstance(self.up, bool):
            raise FieldTypeError(f"label must be true/false or 'up'/'down', got {self.up!r}")


@dataclass(frozen=True)
class Correction:
    """A completion and the user's edited version of it."""

    prompt: str
    completion: str
    corrected: str

    def __post_init__(self) -> None:
        _text(self.prompt, "prompt", empty=True)
        _text(self.completion, "completion")
        _text(self.corrected, "corrected")
        if self.corrected == self.completion:
            raise ValueError("the correction equals the completion: nothing was corrected")


Feedback = Ranking | Rating | Thumb | Correction


# ---------------------------------------------------------------------------- conversions


def ranking_to_pairs(ranking: Ranking) -> list[PreferencePair]:
    """Every pair with different ranks, the better one chosen (ties give no pair)."""
    items = list(zip(ranking.ranks, ranking.completions, strict=True))
    return [
        PreferencePair(ranking.prompt, a, b) if ra < rb else PreferencePair(ranking.prompt, b, a)
        for i, (ra, a) in enumerate(items)
        for rb, b in items[i + 1 :]
        if ra != rb
    ]


def ranking_order(ranking: Ranking) -> list[str]:
    """The completions best first; raises on a tie (Plackett-Luce orders have none)."""
    if len(set(ranking.ranks)) != len(ranking.ranks):
        raise ValueError(
            f"ranks {list(ranking.ranks)} hold a tie, which Plackett-Luce cannot express: "
            "use ranking_to_pairs (ties dropped) or break the tie"
        )
    return [c for _, c in sorted(zip(ranking.ranks, ranking.completions, strict=True))]


def correction_to_pair(correction: Correction) -> PreferencePair:
    """corrected ≻ original."""
    return PreferencePair(correction.prompt, correction.corrected, correction.completion)


def correction_to_demonstration(correction: Correction) -> tuple[str, str]:
    """(prompt, corrected), a demonstration for BC."""
    return correction.prompt, correction.corrected


def ratings_to_pairs(ratings: Sequence[Rating]) -> list[PreferencePair]:
    """Pairs of ratings of the same prompt with different values, the higher chosen."""
    by_prompt: dict[str, list[Rating]] = {}
    for r in ratings:
        by_prompt.setdefault(r.prompt, []).append(r)
    pairs = []
    for prompt, group in by_prompt.items():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a.rating != b.rating:
                    w, lo = (a, b) if a.rating > b.rating else (b, a)
                    pairs.append(PreferencePair(prompt, w.completion, lo.completion))
    return pairs


# ---------------------------------------------------------------------------- loaders

_FIELDS: dict[str, tuple[str, ...]] = {
    "ranking": ("prompt", "completions"),
    "rating": ("prompt", "completion", "rating"),
    "thumb": ("prompt", "completion", "label"),
    "correction": ("prompt", "completion", "corrected"),
}


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("up", "down"):
        return value == "up"
    raise FieldTypeError(f"label must be true/false or 'up'/'down', got {value!r}")


def _record(row: Mapping[str, Any], kind: str, where: str) -> Feedback:
    if kind not in _FIELDS:
        raise ValueError(f"unknown feedback kind {kind!r}: choose one of {sorted(_FIELDS)}")
    missing = [k for k in _FIELDS[kind] if k not in row]
    if missing:
        raise MissingFieldError(
            f"{where}: missing field(s) {missing}; a {kind} record needs {list(_FIELDS[kind])}, "
            f"got fields {sorted(row)}"
        )
    try:
        if kind == "ranking":
            completions = row["completions"]
            if not isinstance(completions, list):
                raise FieldTypeError(
                    f"completions must be a list, got {type(completions).__name__}"
                )
            ranks = row.get("ranks", list(range(len(completions))))
            if not isinstance(ranks, list):
                raise FieldTypeError(f"ranks must be a list, got {type(ranks).__name__}")
            return Ranking(row["prompt"], tuple(completions), tuple(ranks))
        if kind == "rating":
            return Rating(
                row["prompt"], row["completion"], row["rating"], row.get("low", 1.0),
                row.get("high", 5.0),
            )  # fmt: skip
        if kind == "thumb":
            return Thumb(row["prompt"], row["completion"], _label(row["label"]))
        return Correction(row["prompt"], row["completion"], row["corrected"])
    except FieldTypeError as err:
        raise FieldTypeError(f"{where}: {err}") from err
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def from_records(rows: Iterable[Mapping[str, Any]], kind: Kind) -> list[Any]:
    """Records of one feedback form from mappings (a list of dicts, a ``datasets.Dataset``)."""
    out = [_record(row, kind, f"record {i}") for i, row in enumerate(rows)]
    if not out:
        raise ValueError(f"no {kind} records")
    return out


def load_jsonl(path: str | Path, kind: Kind) -> list[Any]:
    """Records of one feedback form from a JSON-lines file (see the module docstring's fields).

    Raises:
        ValueError: a malformed line (not JSON, a missing field, a wrong type, an empty text, a
            rating off its scale, ...), naming the file and line; an empty file.
    """
    out = [_record(row, kind, where) for where, row in read_jsonl(path)]
    if not out:
        raise ValueError(f"{path}: no {kind} records")
    return out
