"""The review grammar: IMDB-like film reviews with a sentiment label (formats in ``corpus.py``).

A review is drawn sentence by sentence from the word lists and templates of
``grammar/reviews.json`` (that file's ``"about"`` entry gives the template syntax). Every draw
goes through the caller's ``random.Random``, in a fixed order, so a seed fixes the text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from textgym.assets import load_grammar
from textgym.assets.english import pick, with_article

REVIEW_PREFIX = "Review: "
_REVIEWS = load_grammar("reviews")
_TITLE_A: tuple[str, ...] = tuple(_REVIEWS["title_a"])
_TITLE_B: tuple[str, ...] = tuple(_REVIEWS["title_b"])
_FIRST: tuple[str, ...] = tuple(_REVIEWS["first"])
_LAST: tuple[str, ...] = tuple(_REVIEWS["last"])
_GENRES: tuple[tuple[str, str], ...] = tuple((one, many) for one, many in _REVIEWS["genres"])
_ROLES: tuple[str, ...] = tuple(_REVIEWS["roles"])
_PREMISES: tuple[str, ...] = tuple(_REVIEWS["premises"])
_POS_ADJ: tuple[str, ...] = tuple(_REVIEWS["pos_adj"])
_NEG_ADJ: tuple[str, ...] = tuple(_REVIEWS["neg_adj"])
_ASPECTS: tuple[str, ...] = tuple(_REVIEWS["aspects"])
_CONTRAST: tuple[str, ...] = tuple(_REVIEWS["contrast"])
_LOWERABLE: tuple[str, ...] = tuple(_REVIEWS["lowerable"])  # sentence starts that are not names
_SLOT = re.compile(r"\{([^{}]*)\}")


def _slot(rng: random.Random, body: str, fields: Mapping[str, str]) -> str:
    """Value of one template slot: ``name``, ``@list``, ``x|y|z``, each maybe after ``a/an ``."""
    article = body.startswith("a/an ")
    body = body.removeprefix("a/an ")
    if body.startswith("@"):
        value = pick(rng, _REVIEWS[body[1:]])
    elif "|" in body:
        value = pick(rng, body.split("|"))
    elif body in fields:
        value = fields[body]
    else:
        raise KeyError(f"unknown slot {{{body}}} of grammar/reviews.json: {list(fields)}")
    return with_article(value) if article else value


def _fill_all(rng: random.Random, templates: Sequence[str], fields: Mapping[str, str]) -> list[str]:
    """Every template rendered, slots drawn left to right (``re.sub`` calls in match order).

    All templates are drawn before the caller picks one: the draw order that made the shipped
    data, so the same seed still gives the same text.
    """
    return [_SLOT.sub(lambda m: _slot(rng, m.group(1), fields), t) for t in templates]


@dataclass(frozen=True)
class _Film:
    """The entities one review talks about."""

    title: str
    genre: tuple[str, str]
    star: str
    director: str
    composer: str
    role: str
    premise: str

    def fields(self) -> dict[str, str]:
        """Template fields (``{title}``, ``{genre}``, ``{genres}`` = its plural, ...)."""
        return {
            "title": self.title,
            "genre": self.genre[0],
            "genres": self.genre[1],
            "star": self.star,
            "director": self.director,
            "composer": self.composer,
            "role": self.role,
            "role_noun": self.role.split(" ", 1)[1],  # "a tired detective" -> "tired detective"
            "premise": self.premise,
        }


def _person(rng: random.Random) -> str:
    return f"{pick(rng, _FIRST)} {pick(rng, _LAST)}"


def _film(rng: random.Random) -> _Film:
    star = _person(rng)
    director = _person(rng)
    while director == star:  # two different people read more naturally
        director = _person(rng)
    return _Film(
        title=f"{pick(rng, _TITLE_A)} {pick(rng, _TITLE_B)}",
        genre=_GENRES[rng.randrange(len(_GENRES))],
        star=star,
        director=director,
        composer=_person(rng),
        role=pick(rng, _ROLES),
        premise=pick(rng, _PREMISES),
    )


def _neutral_opener(rng: random.Random, f: _Film) -> str:
    return pick(rng, _fill_all(rng, _REVIEWS["openers"], f.fields()))


def _overall(rng: random.Random, f: _Film, label: str, named: bool) -> str:
    it = pick(rng, _REVIEWS["it"]) if named else f.title
    fields = {**f.fields(), "it": it, "kind": pick(rng, _REVIEWS["kind"])}
    return pick(rng, _fill_all(rng, _REVIEWS["overall"][label], fields))


def _aspect(rng: random.Random, f: _Film, aspect: str, positive: bool) -> str:
    spec = _REVIEWS["aspects"][aspect]
    fields = {**f.fields(), "p": pick(rng, _POS_ADJ), "n": pick(rng, _NEG_ADJ)}
    # Drawn after p and n, and may replace them: "ugly acting" is not how people write.
    for name, slot in spec["draws"].items():
        fields[name] = _slot(rng, slot, fields)
    pairs = [_fill_all(rng, pair, fields) for pair in spec["pairs"]]  # (positive, negative)
    pair = pairs[rng.randrange(len(pairs))]
    return pair[0] if positive else pair[1]


def _closer(rng: random.Random, f: _Film, label: str) -> str:
    return pick(rng, _fill_all(rng, _REVIEWS["closers"][label], f.fields()))


def review(rng: random.Random) -> tuple[str, str]:
    """One review and its label.

    Returns:
        ``(text, label)``; label is ``"positive"``, ``"negative"`` or ``"mixed"``.
    """
    label = pick(rng, ("positive", "positive", "negative", "negative", "mixed"))
    f = _film(rng)
    sentences = []
    named = rng.random() < 0.6
    if named:  # a neutral first sentence keeps many prompts sentiment-free, useful for RL
        sentences.append(_neutral_opener(rng, f))
    sentences.append(_overall(rng, f, label, named))
    n_aspects = rng.randint(2, 3)
    aspects = rng.sample(_ASPECTS, n_aspects)
    if label == "mixed":
        first_positive = rng.random() < 0.5
        polarity = [first_positive] + [not first_positive] * (n_aspects - 1)
        if n_aspects == 3 and rng.random() < 0.5:
            polarity = [first_positive, first_positive, not first_positive]
    else:
        polarity = [label == "positive"] * n_aspects
    for i, (aspect, pos) in enumerate(zip(aspects, polarity, strict=True)):
        s = _aspect(rng, f, aspect, pos)
        if i > 0 and pos != polarity[i - 1]:  # a turn of opinion reads best with a connective
            first = s.split(" ", 1)[0]
            s = pick(rng, _CONTRAST) + (s[0].lower() + s[1:] if first in _LOWERABLE else s)
        sentences.append(s)
    sentences.append(_closer(rng, f, label))
    return " ".join(sentences), label


def split_review(text: str, rng: random.Random) -> tuple[str, str]:
    """Cut a review into the task's prompt (``"Review: "`` + 4-8 words) and completion."""
    words = text.split(" ")
    k = rng.randint(4, min(8, len(words) - 3))
    return REVIEW_PREFIX + " ".join(words[:k]), " " + " ".join(words[k:])
