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
- :func:`corrections_to_pairs`, :func:`corrections_to_demonstrations`: the two above over a list,
  each one call away from an agent: ``DPO(policy, data=corrections_to_pairs(cs))``,
  ``BC(policy, corrections_to_demonstrations(cs))``, ``RewardModelTrainer(rm,
  corrections_to_pairs(cs))``.

Counting judgments (:func:`judgments`), the currency in which forms are compared: one comparison,
one rating, one thumb and one correction are one judgment each; a ranking of K is K - 1, the
fewest comparisons that can produce it (a chain of adjacent items, each compared once), so a
ranking is never counted as cheaper than the comparisons it holds at the least.

Token rows (:class:`FeedbackBatch`): the examples of any form as one padded batch of rows and,
per example, the rows of its K items (a pair 2, a ranking K, a rating or a thumb 1), which the
reward-model trainer and the listwise-DPO agent read.

Synthetic feedback (:class:`Annotator`): a simulated person who gives every form from one hidden
gold reward, through the same noise, for studies and learning tests.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from textgym.preference import PreferencePair, RewardFn
from textgym.records import FieldTypeError, MissingFieldError, read_jsonl

__all__ = [
    "Annotator",
    "Correction",
    "FeedbackBatch",
    "Ranking",
    "Rating",
    "Thumb",
    "correction_to_demonstration",
    "correction_to_pair",
    "corrections_to_demonstrations",
    "corrections_to_pairs",
    "from_records",
    "judgments",
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


def corrections_to_pairs(corrections: Sequence[Correction]) -> list[PreferencePair]:
    """:func:`correction_to_pair` of each: DPO's (or a Bradley-Terry reward model's) data."""
    return [correction_to_pair(c) for c in _all_of(corrections, Correction)]


def corrections_to_demonstrations(corrections: Sequence[Correction]) -> list[tuple[str, str]]:
    """:func:`correction_to_demonstration` of each: BC's ``(prompt, completion)`` data."""
    return [correction_to_demonstration(c) for c in _all_of(corrections, Correction)]


def _all_of(records: Sequence[Any], kind: type) -> Sequence[Any]:
    if not records:
        raise ValueError(f"no {kind.__name__} records")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, kind)), None)
    if bad is not None:
        raise TypeError(f"record {bad} is a {type(records[bad]).__name__}, not a {kind.__name__}")
    return records


def judgments(record: Feedback | PreferencePair) -> int:
    """Human judgments a record cost: a ranking of K is K - 1, any other record 1 (see above)."""
    if isinstance(record, Ranking):
        return len(record.completions) - 1
    if isinstance(record, Rating | Thumb | Correction | PreferencePair):
        return 1
    raise TypeError(f"not a feedback record: {type(record).__name__}")


# ---------------------------------------------------------------------------- token rows


@dataclass
class FeedbackBatch:
    """N feedback examples as token rows: example n's items are rows ``items[n]`` (-1: none).

    A pair's items are (chosen, rejected); a ranking's its completions best first; a rating's or a
    thumb's its one completion. Rows are x ⊕ y, right-padded (valid prefix first), on the CPU.
    """

    input_ids: Tensor  # (R, L) int64
    attention_mask: Tensor  # (R, L) int64, 1 = real token
    completion_mask: Tensor  # (R, L) bool, True on y's tokens
    items: Tensor  # (N, K) int64, row of example n's item k; -1 after a shorter example's last
    targets: Tensor  # (N,) float32, the example's number (a rating target, a thumb); 0 if none
    classes: int = 0
    """C, the classes of a rating scale (ordinal models); 0 otherwise."""

    def __post_init__(self) -> None:
        r = self.input_ids.shape[0] if self.input_ids.dim() == 2 else -1
        shapes = [
            tuple(t.shape) for t in (self.input_ids, self.attention_mask, self.completion_mask)
        ]
        if r < 1 or len(set(shapes)) != 1:
            raise ValueError(f"FeedbackBatch needs three (R, L) row tensors, got {shapes}")
        if self.items.dim() != 2 or self.targets.shape != (self.items.shape[0],):
            raise ValueError(
                f"FeedbackBatch needs (N, K) items and (N,) targets, got "
                f"{tuple(self.items.shape)} and {tuple(self.targets.shape)}"
            )
        if len(self.items) == 0 or (self.items[:, 0] < 0).any() or (self.items >= r).any():
            raise ValueError(f"FeedbackBatch: each example needs a first item in [0, {r})")

    def __len__(self) -> int:
        """N, the number of examples."""
        return int(self.items.shape[0])

    @property
    def width(self) -> int:
        """K, the most items an example has."""
        return int(self.items.shape[1])

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The rows of examples ``index`` (b,), item-major, trimmed to their longest row.

        Returns:
            ``(input_ids, attention_mask, completion_mask, valid)``: (K·b, L') rows, item k of
            example i at row k·b + i (a missing item repeats the example's first), and (b, K)
            bool, False on the repeats. For pairs: the chosen rows, then the rejected.
        """
        items = self.items[index]  # (b, K)
        valid = items >= 0
        filled = torch.where(valid, items, items[:, :1])  # (b, K)
        rows = filled.T.flatten()  # (K·b,)
        mask = self.attention_mask[rows]  # (K·b, L)
        length = int(mask.sum(1).max())  # right padding: the longest row ends there
        return (
            self.input_ids[rows, :length],
            mask[:, :length],
            self.completion_mask[rows, :length],
            valid,
        )

    def state_dict(self) -> dict[str, Any]:
        """Its tensors and C, for a checkpoint: ``FeedbackBatch(**d)`` rebuilds it."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "completion_mask": self.completion_mask,
            "items": self.items,
            "targets": self.targets,
            "classes": self.classes,
        }


# ---------------------------------------------------------------------------- a simulated person


@dataclass(frozen=True)
class Annotator:
    """A simulated person who gives every form of feedback from one hidden utility u = gold(x, y).

    Each judgment reads u through logistic noise of scale τ (``noise``), so that the forms agree
    on what is better and differ only in what they report::

        comparison  a ≻ b with probability σ((u_a - u_b)/τ)                 (Bradley-Terry)
        ranking     the order of u_k + τ·g_k, g_k ~ Gumbel(0, 1): Plackett-Luce on u/τ, and for
                    K = 2 exactly the comparison (a difference of Gumbels is logistic)
        rating      low + #{cut points below u + τ·ε}, ε ~ Logistic(0, 1), the C - 1 cut points
                    evenly inside ``utility_range`` (the ordinal logit model)
        thumb       up when u + τ·ε > ``threshold`` (default: the middle of ``utility_range``)
        correction  ``editor(x, y)``, kept when it differs from y (a person edits what they would
                    improve; a completion left as it is spent the judgment and gave no record)

    τ = 0 is noise-free; ties in u are then broken at random. Every method takes the caller's
    ``numpy.random.Generator``: same seed, same feedback. Completions must be non-empty texts
    (the records refuse empty ones).

    Args:
        gold: the hidden reward, batched ``(prompts, completions, references) -> (B,)``.
        noise: τ, in units of u.
        utility_range: the range of u (VADER sentiment: (0, 1)), for the cut points.
        scale: (low, high) of the ratings, whole numbers.
        threshold: the thumb's cut in u; None: the middle of ``utility_range``.
    """

    gold: RewardFn
    noise: float = 0.1
    utility_range: tuple[float, float] = (0.0, 1.0)
    scale: tuple[int, int] = (1, 5)
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise must be finite and >= 0, got {self.noise}")
        lo, hi = self.utility_range
        if not lo < hi:
            raise ValueError(f"utility_range needs low < high, got {self.utility_range}")
        if not (self.scale[1] > self.scale[0] and all(isinstance(v, int) for v in self.scale)):
            raise ValueError(f"scale must be whole numbers low < high, got {self.scale}")

    def utilities(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """u = gold(x, y) of each (x, y), (B,) float64."""
        return np.asarray(self.gold(list(prompts), list(completions), None), dtype=np.float64)

    def _keys(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """u + τ·Gumbel noise; at τ = 0 a random tie-break far below any difference in u."""
        if self.noise > 0:
            return u + self.noise * rng.gumbel(size=u.shape)
        return u + 1e-12 * rng.permutation(u.size).reshape(u.shape)

    def rank(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], rng: np.random.Generator
    ) -> list[Ranking]:
        """One ranking of each prompt's K completions (Plackett-Luce on u/τ, no ties)."""
        k = {len(c) for c in completions}
        if len(k) != 1 or len(prompts) != len(completions):
            raise ValueError("rank needs one list of K completions per prompt, K the same")
        flat_p = [p for p, cs in zip(prompts, completions, strict=True) for _ in cs]
        u = self.utilities(flat_p, [c for cs in completions for c in cs]).reshape(len(prompts), -1)
        keys = self._keys(u, rng)  # (N, K)
        ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)  # rank 0 = the highest key
        return [
            Ranking(p, tuple(cs), tuple(int(r) for r in rk))
            for p, cs, rk in zip(prompts, completions, ranks, strict=True)
        ]

    def compare(
        self,
        prompts: Sequence[str],
        a: Sequence[str],
        b: Sequence[str],
        rng: np.random.Generator,
    ) -> list[PreferencePair]:
        """One comparison of each (a, b): the ranking of two, as a pair."""
        rankings = self.rank(prompts, [(x, y) for x, y in zip(a, b, strict=True)], rng)
        return [ranking_to_pairs(r)[0] for r in rankings]

    def _readout(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return u + self.noise * rng.logistic(size=u.shape) if self.noise > 0 else u

    def rate(
        self, prompts: Sequence[str], completions: Sequence[str], rng: np.random.Generator
    ) -> list[Rating]:
        """One rating of each completion on ``scale`` (the ordinal logit model)."""
        low, high = self.scale
        cuts = np.linspace(*self.utility_range, high - low + 2)[1:-1]  # (C - 1,)
        z = self._readout(self.utilities(prompts, completions), rng)
        classes = np.searchsorted(cuts, z)  # (B,) in 0..C-1
        return [
            Rating(p, y, float(low + c), float(low), float(high))
            for p, y, c in zip(prompts, completions, classes, strict=True)
        ]

    def thumb(
        self, prompts: Sequence[str], completions: Sequence[str], rng: np.random.Generator
    ) -> list[Thumb]:
        """One thumb up or down of each completion."""
        lo, hi = self.utility_range
        cut = (lo + hi) / 2 if self.threshold is None else self.threshold
        z = self._readout(self.utilities(prompts, completions), rng)
        return [Thumb(p, y, bool(v > cut)) for p, y, v in zip(prompts, completions, z, strict=True)]

    @staticmethod
    def correct(
        prompts: Sequence[str], completions: Sequence[str], editor: Callable[[str, str], str]
    ) -> list[Correction]:
        """The edits ``editor(x, y)`` that change y (each completion shown is one judgment)."""
        edits = [(p, y, editor(p, y)) for p, y in zip(prompts, completions, strict=True)]
        return [Correction(p, y, e) for p, y, e in edits if e != y and e.strip()]


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
