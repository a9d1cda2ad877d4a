"""English helpers shared by the corpus grammars: plurals, articles, capitals and a seeded pick.

Pure Python (no torch). Irregular plurals come from ``grammar/english.json``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from textgym.assets import load_grammar

_IRREGULAR_PLURALS: dict[str, str] = load_grammar("english")["irregular_plurals"]


def plural(noun: str) -> str:
    """English plural of a singular noun from the grammars' vocabulary."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")) or noun in ("potato", "tomato"):
        return noun + "es"
    return noun + "s"


def with_article(phrase: str) -> str:
    """``a``/``an`` + phrase, by the first letter (the vocabulary has no 'hour'/'user' traps)."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def capitalize(text: str) -> str:
    """Upper-case the first character only (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


def pick(rng: random.Random, options: Sequence[str]) -> str:
    """``options[i]`` for one draw ``i = rng.randrange(len(options))``."""
    return options[rng.randrange(len(options))]
