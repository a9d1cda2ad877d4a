"""A deterministic, grammar-made English corpus for the embedded model and the built-in tasks.

Everything here is pure Python (no torch), driven by an explicit ``random.Random``; the global
RNG is never touched, and sets are never iterated (string hashing is salted per process), so the
same seed gives the same text in every process.

Three tasks, and their exact prompt formats (completions always start with a space):

* **reviews** (IMDB-like sentiment): a film review of 4-6 sentences with a ``label`` in
  ``{"positive", "negative", "mixed"}``. Many reviews open with a neutral sentence, so the prompt
  often leaves the sentiment open::

      prompt     = "Review: " + first k words of the review      (k drawn from 4..8)
      completion = " " + the remaining words
      e.g. "Review: I watched The Silent Harbor" + " last night with my sister. I loved ..."

* **concepts** (CommonGen-like): a set of three words (a verb and two nouns of one scene, from a
  closed vocabulary; shown in a seed-fixed shuffled order) and 3-5 reference sentences that each
  use every concept (inflected forms such as "throws" or "dogs" count, see :func:`concept_forms`
  and :func:`covers`). Splits hold disjoint concept *sets*; single words are shared::

      prompt     = "Concepts: dog, ball, throw. Sentence:"
      completion = " The boy throws the ball to the dog."

* **reverse** (oracle task for imitation learning): 3-6 words from :data:`REVERSE_WORDS`
  (repeats allowed), to be written in reverse order::

      prompt     = "Reverse: red fox blue owl ->"
      completion = " owl blue fox red"

Task rows (``textgym/assets/data/<task>.jsonl``, one JSON object per line) are
``{"prompt": str, "references": [str, ...], "split": "train"|"validation"|"test"}`` plus
``"label"`` (reviews), ``"concepts"`` (concepts, in prompt order) or ``"words"`` (reverse, in
prompt order). Prompts are unique within a task, so no prompt is in two splits.

A language-model training document is ``prompt + completion`` followed by the EOS token (the
tokenizer adds nothing by itself; ``build.py`` appends EOS). :func:`lm_documents` mixes reviews,
concept sentences and a small share of reverse examples (~3 % of the tokens), few enough that
the model learns the format and to stop, but not to reverse perfectly.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

REVIEW_PREFIX = "Review: "
CONCEPT_PREFIX = "Concepts: "
CONCEPT_SUFFIX = ". Sentence:"
REVERSE_PREFIX = "Reverse: "
REVERSE_ARROW = " ->"
SPLITS = ("train", "validation", "test")

# ----------------------------------------------------------------------------------------------
# Small grammar helpers
# ----------------------------------------------------------------------------------------------

_IRREGULAR_PLURALS = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "fish": "fish",
    "mouse": "mice",
    "knife": "knives",
    "scissors": "scissors",
    "sheep": "sheep",
    "leaf": "leaves",
    "strawberry": "strawberries",
    "berry": "berries",
    "baby": "babies",
    "family": "families",
    "puppy": "puppies",
    "cherry": "cherries",
    "party": "parties",
    "library": "libraries",
    "story": "stories",
    "stairs": "stairs",
    "glasses": "glasses",
    "tooth": "teeth",
}


def plural(noun: str) -> str:
    """English plural of a singular noun from this module's vocabulary."""
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


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


# ----------------------------------------------------------------------------------------------
# Reviews
# ----------------------------------------------------------------------------------------------

_TITLE_A = (
    "The Silent",
    "The Last",
    "Midnight",
    "Broken",
    "The Golden",
    "Crimson",
    "The Hidden",
    "Paper",
    "Iron",
    "The Lost",
    "Winter",
    "Summer",
    "The Distant",
    "Electric",
    "Quiet",
    "Wild",
    "The Burning",
    "Shadow",
    "Glass",
    "Northern",
    "The Velvet",
    "Hollow",
    "The Seventh",
    "Salt",
)
_TITLE_B = (
    "Harbor",
    "Garden",
    "River",
    "Kingdom",
    "Road",
    "City",
    "Letters",
    "Mountain",
    "Promise",
    "Horizon",
    "Station",
    "Island",
    "Forest",
    "Season",
    "Lantern",
    "Bridge",
    "Signal",
    "Orchard",
    "Tide",
    "Valley",
    "Crown",
    "Hotel",
    "Machine",
    "Sky",
)
_FIRST = (
    "Anna",
    "David",
    "Maria",
    "James",
    "Elena",
    "Thomas",
    "Clara",
    "Victor",
    "Nora",
    "Oscar",
    "Julia",
    "Samuel",
    "Lena",
    "Martin",
    "Rosa",
    "Peter",
    "Helen",
    "Daniel",
    "Irene",
    "Hugo",
    "Sofia",
    "Felix",
    "Alice",
    "Leo",
    "Grace",
    "Adam",
    "Vera",
    "Simon",
    "Emma",
    "Paul",
)
_LAST = (
    "Walker",
    "Moreau",
    "Keller",
    "Santos",
    "Novak",
    "Bennett",
    "Larsen",
    "Costa",
    "Fischer",
    "Hayes",
    "Romano",
    "Ward",
    "Lindqvist",
    "Brooks",
    "Duval",
    "Palmer",
    "Reyes",
    "Holm",
    "Carter",
    "Stone",
    "Marsh",
    "Quinn",
    "Webb",
    "Ortega",
    "Byrne",
    "Hale",
)
_GENRES = (
    ("drama", "dramas"),
    ("comedy", "comedies"),
    ("thriller", "thrillers"),
    ("horror film", "horror films"),
    ("romance", "romances"),
    ("western", "westerns"),
    ("mystery", "mysteries"),
    ("war film", "war films"),
    ("science fiction film", "science fiction films"),
    ("family film", "family films"),
    ("musical", "musicals"),
    ("crime story", "crime stories"),
    ("adventure film", "adventure films"),
    ("love story", "love stories"),
)
_ROLES = (
    "a tired detective",
    "a young teacher",
    "a lonely farmer",
    "a retired soldier",
    "a small-town doctor",
    "a famous singer",
    "a clever thief",
    "a single parent",
    "a ship captain",
    "a nervous student",
    "an old painter",
    "a young lawyer",
    "a night nurse",
    "a taxi driver",
    "a baker",
    "a journalist",
)
_PREMISES = (
    "who must find a missing child",
    "who returns home after many years",
    "who discovers a secret in an old house",
    "who falls in love with a stranger",
    "who tries to save a small restaurant",
    "who travels across the country to find an old friend",
    "who is hunted by a dangerous gang",
    "who wakes up in a strange town",
    "who has one week to pay back a debt",
    "who starts a band with three neighbors",
    "who takes care of a wild horse",
    "who solves a murder on a train",
)
_COMPANIONS = (
    "my sister",
    "my brother",
    "my friends",
    "my parents",
    "my husband",
    "my wife",
    "a friend",
    "my kids",
    "my roommate",
    "my grandmother",
)
_WHEN = ("last night", "last weekend", "on Friday", "yesterday", "this week", "on Sunday")

_POS_ADJ = (
    "great",
    "wonderful",
    "excellent",
    "brilliant",
    "beautiful",
    "superb",
    "fantastic",
    "amazing",
    "lovely",
    "charming",
    "delightful",
    "perfect",
    "powerful",
    "moving",
)
_POS_ACTING = (
    "great",
    "wonderful",
    "excellent",
    "brilliant",
    "superb",
    "fantastic",
    "amazing",
    "charming",
    "powerful",
    "moving",
    "funny",
)
_NEG_ACTING = (
    "terrible",
    "awful",
    "weak",
    "poor",
    "bad",
    "horrible",
    "lazy",
    "painful",
    "wooden",
    "boring",
)
_NEG_ADJ = (
    "terrible",
    "awful",
    "boring",
    "dull",
    "weak",
    "poor",
    "bad",
    "horrible",
    "stupid",
    "lazy",
    "painful",
    "annoying",
    "ugly",
    "disappointing",
)


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


def _person(rng: random.Random) -> str:
    return f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}"


def _film(rng: random.Random) -> _Film:
    star = _person(rng)
    director = _person(rng)
    while director == star:  # two different people read more naturally
        director = _person(rng)
    return _Film(
        title=f"{_pick(rng, _TITLE_A)} {_pick(rng, _TITLE_B)}",
        genre=_GENRES[rng.randrange(len(_GENRES))],
        star=star,
        director=director,
        composer=_person(rng),
        role=_pick(rng, _ROLES),
        premise=_pick(rng, _PREMISES),
    )


def _neutral_opener(rng: random.Random, f: _Film) -> str:
    options = (
        f"I watched {f.title} {_pick(rng, _WHEN)} with {_pick(rng, _COMPANIONS)}.",
        f"{f.title} is {with_article(f.genre[0])} directed by {f.director}.",
        f"{f.title} tells the story of {f.role} {f.premise}.",
        f"In {f.title}, {f.star} plays {f.role} {f.premise}.",
        f"I finally saw {f.title} at the cinema {_pick(rng, _WHEN)}.",
        f"{f.title} stars {f.star} as {f.role} {f.premise}.",
        f"My friends told me to see {f.title}, so I went {_pick(rng, _WHEN)}.",
        f"The new {f.genre[0]} by {f.director} is called {f.title}.",
    )
    return _pick(rng, options)


def _overall(rng: random.Random, f: _Film, label: str, named: bool) -> str:
    it = _pick(rng, ("this movie", "this film", "it")) if named else f.title
    kind = _pick(rng, ("film", "movie"))
    if label == "positive":
        options: tuple[str, ...] = (
            f"I {_pick(rng, ('loved', 'really enjoyed', 'adored', 'liked'))} {it}.",
            f"This is one of the best {f.genre[1]} I have seen in years.",
            f"What {with_article(_pick(rng, _POS_ADJ))} {kind}!",
            f"{f.title} is {with_article(_pick(rng, _POS_ADJ))} {f.genre[0]}.",
            f"It is a {_pick(rng, ('truly', 'really', 'very'))} "
            f"{_pick(rng, ('good', 'great', 'fine'))} {kind}.",
            f"I had a great time watching {it}.",
        )
    elif label == "negative":
        options = (
            f"I {_pick(rng, ('hated', 'really disliked', 'was bored by', 'did not enjoy'))} {it}.",
            f"This is one of the worst {f.genre[1]} I have ever seen.",
            f"What {with_article(_pick(rng, _NEG_ADJ))} {kind}.",
            f"{f.title} is {with_article(_pick(rng, _NEG_ADJ))} {f.genre[0]}.",
            "It was a complete waste of time.",
            f"I wanted to like {it}, but it is a mess.",
        )
    else:
        options = (
            f"I have mixed feelings about {it}.",
            f"{f.title} is a decent {f.genre[0]} with some serious problems.",
            f"It is not a bad {kind}, but it is not a great one either.",
            f"Parts of {it} are good, and parts of it are boring.",
            f"{f.title} is {with_article(_pick(rng, ('uneven', 'flawed', 'strange')))} "
            f"{f.genre[0]}.",
        )
    return _pick(rng, options)


def _aspect(rng: random.Random, f: _Film, aspect: str, positive: bool) -> str:
    p, n = _pick(rng, _POS_ADJ), _pick(rng, _NEG_ADJ)
    if aspect == "acting":  # "ugly acting" or "lovely acting" is not how people write
        p, n = _pick(rng, _POS_ACTING), _pick(rng, _NEG_ACTING)
    role = f.role.split(" ", 1)[1]  # "a tired detective" -> "tired detective"
    if aspect == "acting":
        options: tuple[tuple[str, str], ...] = (
            (f"{f.star} is {p} as the {role}.", f"{f.star} is {n} as the {role}."),
            (
                f"The acting is {p}, especially from {f.star}.",
                f"The acting is {n}, even from {f.star}.",
            ),
            (
                f"{f.star} gives {with_article(p)} performance.",
                f"{f.star} gives {with_article(n)} performance.",
            ),
            (
                f"The whole cast does a {_pick(rng, ('great', 'wonderful', 'fantastic'))} job.",
                "The cast looks bored the whole time.",
            ),
        )
    elif aspect == "story":
        good = _pick(rng, ("clever", "gripping", "moving", "exciting", "original", "smart"))
        bad = _pick(rng, ("boring", "confusing", "stupid", "silly", "weak", "dull"))
        options = (
            (
                f"The story is {good} and keeps you guessing until the end.",
                f"The story is {bad} and goes nowhere.",
            ),
            (
                f"The plot is {good} and full of surprises.",
                f"The plot is {bad} and makes no sense.",
            ),
            (
                f"I loved how the story "
                f"{_pick(rng, ('comes together at the end', 'unfolds slowly'))}.",
                f"I hated how the story "
                f"{_pick(rng, ('falls apart in the second half', 'drags on forever'))}.",
            ),
        )
    elif aspect == "music":
        options = (
            (f"The music by {f.composer} is {p}.", f"The music by {f.composer} is {n}."),
            (
                f"The soundtrack is "
                f"{_pick(rng, ('great', 'beautiful', 'fantastic'))} and fits every scene.",
                f"The soundtrack is "
                f"{_pick(rng, ('loud', 'annoying', 'awful'))} and ruins many scenes.",
            ),
        )
    elif aspect == "ending":
        good = _pick(rng, ("perfect", "beautiful", "powerful", "satisfying", "wonderful"))
        bad = _pick(rng, ("terrible", "stupid", "awful", "disappointing", "rushed"))
        options = (
            (f"The ending is {good}.", f"The ending is {bad}."),
            (
                f"The final scene is {good} and stayed with me for days.",
                "The final scene ruined the whole film for me.",
            ),
        )
    elif aspect == "direction":
        options = (
            (
                f"{f.director} directs with "
                f"{_pick(rng, ('great skill', 'real care', 'a light touch'))}.",
                f"{f.director} has no idea how to tell a story.",
            ),
            (
                f"The direction is "
                f"{_pick(rng, ('excellent', 'strong', 'confident', 'brilliant'))}.",
                f"The direction is {_pick(rng, ('weak', 'lazy', 'poor', 'clumsy'))}.",
            ),
        )
    elif aspect == "dialogue":
        options = (
            (
                f"The dialogue is {_pick(rng, ('sharp', 'funny', 'smart', 'natural'))}.",
                f"The dialogue is {_pick(rng, ('awkward', 'stupid', 'painful', 'dull'))}.",
            ),
            (
                "Every line of dialogue feels honest and real.",
                "Nobody talks like these characters.",
            ),
        )
    elif aspect == "visuals":
        options = (
            (
                f"The {_pick(rng, ('camera work', 'photography', 'cinematography'))} is "
                f"{_pick(rng, ('beautiful', 'stunning', 'gorgeous'))}.",
                f"The {_pick(rng, ('camera work', 'special effects'))} look "
                f"{_pick(rng, ('cheap', 'ugly', 'terrible'))}.",
            ),
            ("Every shot looks like a painting.", "Most scenes are too dark to see anything."),
        )
    elif aspect == "pacing":
        options = (
            (
                f"The film moves at a {_pick(rng, ('good', 'perfect', 'lively'))} pace.",
                f"The film is "
                f"{_pick(rng, ('far too long', 'painfully slow'))} and I nearly fell asleep.",
            ),
            ("Two hours have never passed so quickly.", "The middle hour is slow and dull."),
        )
    else:  # characters
        options = (
            (
                f"The characters are "
                f"{_pick(rng, ('likeable', 'interesting', 'believable', 'funny'))}.",
                f"The characters are {_pick(rng, ('flat', 'annoying', 'unlikeable', 'boring'))}.",
            ),
            ("I cared about every character.", "I did not care about any of the characters."),
        )
    pair = options[rng.randrange(len(options))]
    return pair[0] if positive else pair[1]


_ASPECTS = (
    "acting",
    "story",
    "music",
    "ending",
    "direction",
    "dialogue",
    "visuals",
    "pacing",
    "characters",
)
_CONTRAST = ("However, ", "On the other hand, ", "Sadly, ", "Still, ", "But ")
_LOWERABLE = ("The", "Every", "Nobody", "Most", "Two")  # sentence starts that are not names


def _closer(rng: random.Random, f: _Film, label: str) -> str:
    if label == "positive":
        options: tuple[str, ...] = (
            f"I would {_pick(rng, ('highly', 'definitely', 'happily'))} recommend it.",
            f"{rng.randint(8, 10)} out of 10.",
            "I can not wait to watch it again.",
            "A must see for everyone.",
            "It is one of my favorite films now.",
            f"Fans of {f.star} will love it.",
        )
    elif label == "negative":
        options = (
            "I would not recommend it to anyone.",
            "Save your money and stay home.",
            f"{rng.randint(1, 4)} out of 10.",
            "Avoid this one.",
            "I want those two hours of my life back.",
            f"Even fans of {f.star} should skip it.",
        )
    else:
        options = (
            "It is worth watching once.",
            f"{rng.randint(5, 6)} out of 10.",
            "Maybe wait until it is on TV.",
            f"Fans of {f.star} might enjoy it.",
            "Watch it if you have nothing better to do.",
        )
    return _pick(rng, options)


def review(rng: random.Random) -> tuple[str, str]:
    """One review and its label.

    Returns:
        ``(text, label)``; label is ``"positive"``, ``"negative"`` or ``"mixed"``.
    """
    label = _pick(rng, ("positive", "positive", "negative", "negative", "mixed"))
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
            s = _pick(rng, _CONTRAST) + (s[0].lower() + s[1:] if first in _LOWERABLE else s)
        sentences.append(s)
    sentences.append(_closer(rng, f, label))
    return " ".join(sentences), label


def split_review(text: str, rng: random.Random) -> tuple[str, str]:
    """Cut a review into the task's prompt (``"Review: "`` + 4-8 words) and completion."""
    words = text.split(" ")
    k = rng.randint(4, min(8, len(words) - 3))
    return REVIEW_PREFIX + " ".join(words[:k]), " " + " ".join(words[k:])


# ----------------------------------------------------------------------------------------------
# Concepts
# ----------------------------------------------------------------------------------------------

# (base, third person singular, past, -ing, past participle)
VerbForms = tuple[str, str, str, str, str]

_NOUN_ADJ: dict[str, tuple[str, ...]] = {
    "ball": ("red", "small", "new", "blue"),
    "stick": ("long", "small"),
    "frisbee": ("red", "yellow"),
    "stone": ("small", "flat"),
    "soup": ("hot", "tomato"),
    "pasta": ("fresh",),
    "egg": ("big",),
    "meal": ("simple", "big"),
    "apple": ("green", "red"),
    "bread": ("fresh",),
    "cake": ("chocolate", "big"),
    "sandwich": ("big", "cheese"),
    "coffee": ("hot", "black"),
    "tea": ("hot", "green"),
    "book": ("old", "thick", "new"),
    "letter": ("long", "short"),
    "story": ("short", "funny"),
    "guitar": ("old",),
    "car": ("red", "old", "new", "dirty"),
    "truck": ("big", "old"),
    "horse": ("white", "brown", "old"),
    "bike": ("new", "old", "blue"),
    "wall": ("old", "long"),
    "fence": ("wooden", "old"),
    "house": ("small", "old"),
    "tree": ("tall", "old", "big"),
    "kite": ("red", "colorful"),
    "box": ("heavy", "small", "big"),
    "bag": ("heavy",),
    "dog": ("small", "old"),
    "cat": ("small", "hungry"),
    "flower": ("red", "yellow"),
    "hat": ("warm", "new"),
    "coat": ("warm", "long"),
    "park": ("big", "quiet"),
    "kitchen": ("small", "busy"),
    "beach": ("sunny", "empty"),
    "garden": ("small", "quiet"),
    "lake": ("cold", "quiet"),
    "river": ("wide", "cold"),
    "field": ("green", "open"),
    "table": ("big", "wooden"),
    "bench": ("old", "wooden"),
    "room": ("messy", "small"),
    "window": ("dirty", "big"),
}
_HUMAN_ADJ = ("young", "old", "tall", "happy", "tired")
_SMALL_HUMAN_ADJ = ("little", "happy", "young")
_ANIMAL_ADJ = ("small", "big", "brown", "black", "white")
_ANIMALS = ("dog", "cat", "horse", "bird", "duck", "fish", "monkey", "cow", "bear")
_COLLECTIVE = ("family", "band", "choir", "couple", "team")  # singular agents only
_MY_OK = (
    "dog",
    "cat",
    "horse",
    "mother",
    "father",
    "brother",
    "sister",
    "friend",
    "family",
    "teacher",
    "son",
    "daughter",
)
# How an object noun takes its determiner: "count" (a/the/two), "mass" (the/some/bare),
# "bare" (no article: "cooks dinner", "plays football"), "the" (always "the": "plays the piano").
_OBJ_STYLE: dict[str, str] = {
    "soup": "mass",
    "pasta": "mass",
    "rice": "mass",
    "bread": "mass",
    "coffee": "mass",
    "tea": "mass",
    "water": "mass",
    "milk": "mass",
    "juice": "mass",
    "hair": "the",
    "paper": "mass",
    "wood": "mass",
    "meat": "mass",
    "grass": "mass",
    "food": "mass",
    "dinner": "bare",
    "football": "bare",
    "tennis": "bare",
    "chess": "bare",
    "guitar": "the",
    "piano": "the",
    "violin": "the",
    "drum": "the",
    "sunset": "the",
}


@dataclass(frozen=True)
class Frame:
    """One scene: a verb, who can do it, to what, and where/with what (prepositional adjuncts).

    ``adjuncts`` entries are ``(preposition, determiner, noun)`` with determiner ``"the"``,
    ``"a"``, ``""`` (bare noun) or ``"pl"`` (plural noun, no article).
    """

    verb: VerbForms
    agents: tuple[str, ...]
    objects: tuple[str, ...]
    adjuncts: tuple[tuple[str, str, str], ...]


def _v(forms: str) -> VerbForms:
    parts = forms.split()
    assert len(parts) == 5, forms
    return (parts[0], parts[1], parts[2], parts[3], parts[4])


def _adj(*items: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for item in items:
        prep, det, noun = item.split("|")
        out.append((prep, det, noun))
    return tuple(out)


_KIDS = ("boy", "girl", "child")
_PEOPLE = ("boy", "girl", "man", "woman", "child")

FRAMES: tuple[Frame, ...] = (
    Frame(
        _v("throw throws threw throwing thrown"),
        (*_PEOPLE, "player"),
        ("ball", "stick", "frisbee", "stone"),
        _adj(
            "to|the|dog",
            "to|a|friend",
            "in|the|park",
            "at|the|beach",
            "into|the|lake",
            "across|the|field",
        ),
    ),
    Frame(
        _v("catch catches caught catching caught"),
        ("dog", "boy", "girl", "player", "man"),
        ("ball", "frisbee", "stick"),
        _adj("in|the|park", "at|the|beach", "in|the|air", "in|the|garden", "near|the|house"),
    ),
    Frame(
        _v("catch catches caught catching caught"),
        ("fisherman", "man", "boy", "bear", "woman"),
        ("fish",),
        _adj("in|the|river", "in|the|lake", "with|a|net", "from|a|boat"),
    ),
    Frame(
        _v("kick kicks kicked kicking kicked"),
        (*_KIDS, "player", "man"),
        ("ball", "can", "door"),
        _adj("in|the|field", "into|the|goal", "in|the|street", "in|the|park", "across|the|yard"),
    ),
    Frame(
        _v("cook cooks cooked cooking cooked"),
        ("chef", "man", "woman", "mother", "father", "cook"),
        ("soup", "pasta", "rice", "dinner", "egg", "meal"),
        _adj(
            "in|the|kitchen",
            "in|a|restaurant",
            "in|a|pan",
            "in|a|pot",
            "for|the|family",
            "on|the|stove",
        ),
    ),
    Frame(
        _v("bake bakes baked baking baked"),
        ("baker", "woman", "man", "girl", "chef", "mother"),
        ("bread", "cake", "cookie", "pie", "pizza"),
        _adj("in|the|oven", "in|the|kitchen", "for|the|party", "for|the|family", "in|the|bakery"),
    ),
    Frame(
        _v("eat eats ate eating eaten"),
        ("boy", "girl", "family", "child", "man", "woman"),
        ("apple", "bread", "cake", "sandwich", "soup", "meal", "pizza"),
        _adj(
            "at|the|table",
            "in|the|kitchen",
            "in|the|park",
            "on|the|bench",
            "at|the|restaurant",
            "on|the|train",
        ),
    ),
    Frame(
        _v("eat eats ate eating eaten"),
        ("dog", "cat", "horse", "cow", "bird"),
        ("food", "grass", "bread", "meat"),
        _adj("in|the|yard", "from|a|bowl", "in|the|field", "on|the|farm", "in|the|barn"),
    ),
    Frame(
        _v("drink drinks drank drinking drunk"),
        ("man", "woman", "girl", "student", "teacher", "boy"),
        ("coffee", "tea", "water", "milk", "juice"),
        _adj(
            "in|the|cafe",
            "in|the|kitchen",
            "at|the|table",
            "from|a|cup",
            "from|a|glass",
            "after|the|race",
        ),
    ),
    Frame(
        _v("read reads read reading read"),
        ("boy", "girl", "man", "woman", "student", "teacher"),
        ("book", "letter", "newspaper", "story", "menu", "poem"),
        _adj(
            "in|the|library",
            "in||bed",
            "on|the|train",
            "in|the|garden",
            "on|the|bench",
            "to|the|class",
            "to|the|child",
        ),
    ),
    Frame(
        _v("write writes wrote writing written"),
        ("student", "girl", "boy", "writer", "teacher", "man"),
        ("letter", "story", "note", "poem", "book"),
        _adj(
            "with|a|pen",
            "with|a|pencil",
            "at|the|desk",
            "in|a|notebook",
            "to|a|friend",
            "on|the|computer",
        ),
    ),
    Frame(
        _v("play plays played playing played"),
        (*_KIDS, "band", "musician", "man", "woman"),
        ("guitar", "piano", "violin", "drum"),
        _adj(
            "on|the|stage",
            "in|the|park",
            "in|the|street",
            "at|the|party",
            "at|the|wedding",
            "in|the|church",
        ),
    ),
    Frame(
        _v("play plays played playing played"),
        (*_KIDS, "team", "player", "man", "woman"),
        ("football", "game", "tennis", "chess"),
        _adj(
            "in|the|park",
            "on|the|beach",
            "in|the|yard",
            "at|the|school",
            "with|a|friend",
            "in|the|rain",
        ),
    ),
    Frame(
        _v("sing sings sang singing sung"),
        ("girl", "singer", "choir", "woman", "boy", "man"),
        ("song", "lullaby"),
        _adj(
            "on|the|stage",
            "in|the|church",
            "in|the|shower",
            "at|the|party",
            "to|the|baby",
            "at|the|wedding",
            "with|a|band",
        ),
    ),
    Frame(
        _v("ride rides rode riding ridden"),
        (*_PEOPLE, "cowboy"),
        ("horse", "bike", "bus", "train", "camel"),
        _adj(
            "on|the|road",
            "in|the|park",
            "along|the|beach",
            "through|the|city",
            "across|the|field",
            "to||school",
            "through|the|desert",
        ),
    ),
    Frame(
        _v("drive drives drove driving driven"),
        ("man", "woman", "driver", "farmer", "teacher"),
        ("car", "truck", "bus", "tractor"),
        _adj(
            "on|the|road",
            "through|the|city",
            "to||work",
            "in|the|rain",
            "across|the|bridge",
            "through|the|snow",
        ),
    ),
    Frame(
        _v("wash washes washed washing washed"),
        ("man", "woman", "boy", "girl", "father"),
        ("car", "truck", "window", "bike", "dog"),
        _adj(
            "with|a|sponge",
            "with|a|hose",
            "with||soap",
            "in|the|yard",
            "in|the|driveway",
            "in|the|sun",
        ),
    ),
    Frame(
        _v("wash washes washed washing washed"),
        ("man", "woman", "boy", "girl", "cook"),
        ("dish", "cup", "plate", "pan", "glass"),
        _adj("in|the|sink", "with||soap", "with|a|sponge", "after||dinner", "in|the|kitchen"),
    ),
    Frame(
        _v("paint paints painted painting painted"),
        ("artist", "girl", "boy", "man", "painter", "woman"),
        ("wall", "picture", "fence", "house", "door", "portrait"),
        _adj("with|a|brush", "in|the|studio", "in|the|garden", "on|a|canvas", "with|pl|color"),
    ),
    Frame(
        _v("climb climbs climbed climbing climbed"),
        (*_PEOPLE, "climber", "cat", "monkey"),
        ("tree", "mountain", "rock", "ladder", "wall", "hill"),
        _adj("with|a|rope", "in|the|forest", "in|the|snow", "near|the|house", "in|the|morning"),
    ),
    Frame(
        _v("swim swims swam swimming swum"),
        (*_PEOPLE, "dog", "fish", "swimmer", "duck"),
        (),
        _adj(
            "in|the|lake",
            "in|the|river",
            "in|the|pool",
            "in|the|sea",
            "across|the|lake",
            "to|the|shore",
            "under|the|bridge",
        ),
    ),
    Frame(
        _v("run runs ran running run"),
        (*_PEOPLE, "dog", "runner", "horse"),
        (),
        _adj(
            "in|the|park",
            "on|the|track",
            "along|the|beach",
            "across|the|field",
            "down|the|street",
            "through|the|forest",
            "around|the|lake",
        ),
    ),
    Frame(
        _v("sleep sleeps slept sleeping slept"),
        ("baby", "cat", "dog", "man", "child", "boy"),
        (),
        _adj("in||bed", "on|the|sofa", "on|the|grass", "in|a|tent", "under|a|tree", "on|the|train"),
    ),
    Frame(
        _v("jump jumps jumped jumping jumped"),
        ("dog", "boy", "girl", "horse", "cat", "child"),
        (),
        _adj(
            "over|the|fence",
            "into|the|pool",
            "into|the|lake",
            "over|a|puddle",
            "on|the|bed",
            "off|the|wall",
            "over|the|rope",
        ),
    ),
    Frame(
        _v("sit sits sat sitting sat"),
        ("man", "woman", "girl", "boy", "dog", "cat", "student"),
        (),
        _adj(
            "on|the|bench",
            "on|a|chair",
            "on|the|grass",
            "on|the|sofa",
            "by|the|window",
            "under|a|tree",
            "at|the|table",
        ),
    ),
    Frame(
        _v("fly flies flew flying flown"),
        (*_KIDS, "man", "father"),
        ("kite", "plane", "drone"),
        _adj(
            "in|the|sky",
            "at|the|beach",
            "over|the|field",
            "over|the|city",
            "in|the|park",
            "in|the|wind",
        ),
    ),
    Frame(
        _v("build builds built building built"),
        ("worker", "man", "boy", "girl", "child", "builder"),
        ("house", "wall", "sandcastle", "bridge", "fence", "tower"),
        _adj(
            "on|the|beach",
            "in|the|garden",
            "near|the|river",
            "with|pl|brick",
            "with||wood",
            "in|the|village",
        ),
    ),
    Frame(
        _v("plant plants planted planting planted"),
        ("farmer", "gardener", "girl", "woman", "man", "child"),
        ("tree", "flower", "seed", "potato", "rose"),
        _adj(
            "in|the|garden",
            "in|the|field",
            "near|the|house",
            "in||spring",
            "in|a|pot",
            "with|a|shovel",
        ),
    ),
    Frame(
        _v("feed feeds fed feeding fed"),
        ("farmer", "girl", "boy", "woman", "man", "child"),
        ("dog", "cat", "horse", "bird", "baby", "duck", "cow"),
        _adj(
            "with||bread", "with||milk", "in|the|yard", "on|the|farm", "in|the|park", "in|the|barn"
        ),
    ),
    Frame(
        _v("walk walks walked walking walked"),
        ("man", "woman", "girl", "boy", "owner"),
        ("dog", "horse"),
        _adj(
            "in|the|park",
            "along|the|beach",
            "down|the|street",
            "through|the|forest",
            "around|the|lake",
            "in|the|rain",
        ),
    ),
    Frame(
        _v("open opens opened opening opened"),
        (*_PEOPLE,),
        ("door", "window", "box", "gift", "bottle"),
        _adj("with|a|key", "with|a|knife", "in|the|morning", "at|the|party", "in|the|kitchen"),
    ),
    Frame(
        _v("carry carries carried carrying carried"),
        ("man", "woman", "boy", "worker", "mother", "father"),
        ("bag", "box", "baby", "basket", "bucket", "chair"),
        _adj("up|the|stairs", "to|the|car", "across|the|street", "into|the|house", "down|the|hill"),
    ),
    Frame(
        _v("cut cuts cut cutting cut"),
        ("chef", "man", "woman", "boy", "cook", "mother"),
        ("bread", "cake", "onion", "meat", "tomato"),
        _adj("with|a|knife", "in|the|kitchen", "on|the|board", "for|the|soup", "into|pl|piece"),
    ),
    Frame(
        _v("cut cuts cut cutting cut"),
        ("girl", "boy", "student", "child", "teacher"),
        ("paper", "ribbon", "card"),
        _adj("with||scissors", "at|the|desk", "into|pl|piece", "in|the|classroom"),
    ),
    Frame(
        _v("cut cuts cut cutting cut"),
        ("barber", "woman", "man", "hairdresser"),
        ("hair",),
        _adj("with||scissors", "at|the|salon", "in|the|kitchen", "with|a|razor"),
    ),
    Frame(
        _v("cut cuts cut cutting cut"),
        ("man", "worker", "farmer", "father"),
        ("tree", "branch", "wood", "grass"),
        _adj("with|a|saw", "with|an|axe", "in|the|forest", "in|the|garden", "near|the|house"),
    ),
    Frame(
        _v("watch watches watched watching watched"),
        ("family", "boy", "girl", "man", "woman", "couple"),
        ("movie", "game", "sunset", "bird", "show", "match"),
        _adj(
            "on||TV",
            "from|the|window",
            "at|the|cinema",
            "on|the|sofa",
            "at|the|stadium",
            "from|the|hill",
        ),
    ),
    Frame(
        _v("clean cleans cleaned cleaning cleaned"),
        ("man", "woman", "girl", "boy", "worker"),
        ("room", "kitchen", "floor", "window", "car", "table"),
        _adj("with|a|brush", "with|a|cloth", "with||water", "after|the|party", "in|the|morning"),
    ),
    Frame(
        _v("pick picks picked picking picked"),
        ("girl", "boy", "farmer", "woman", "child"),
        ("apple", "flower", "strawberry", "orange", "cherry"),
        _adj("in|the|garden", "from|the|tree", "in|the|field", "in|the|orchard", "for|the|pie"),
    ),
    Frame(
        _v("wear wears wore wearing worn"),
        (*_PEOPLE,),
        ("hat", "coat", "dress", "scarf", "jacket"),
        _adj("in||winter", "to|the|party", "at|the|wedding", "in|the|rain", "in|the|snow"),
    ),
    Frame(
        _v("push pushes pushed pushing pushed"),
        ("man", "woman", "boy", "mother", "worker"),
        ("cart", "stroller", "car", "swing", "wheelbarrow"),
        _adj(
            "down|the|street", "in|the|park", "up|the|hill", "into|the|garage", "through|the|store"
        ),
    ),
    Frame(
        _v("pull pulls pulled pulling pulled"),
        ("horse", "man", "boy", "dog", "worker"),
        ("cart", "rope", "sled", "wagon", "boat"),
        _adj(
            "through|the|snow", "up|the|hill", "across|the|field", "down|the|road", "to|the|shore"
        ),
    ),
    Frame(
        _v("hit hits hit hitting hit"),
        ("player", "boy", "girl", "man", "woman"),
        ("ball",),
        _adj("with|a|bat", "with|a|racket", "over|the|net", "into|the|field", "over|the|fence"),
    ),
    Frame(
        _v("hit hits hit hitting hit"),
        ("man", "worker", "builder", "carpenter"),
        ("nail",),
        _adj("with|a|hammer", "into|the|wall", "into|the|board", "in|the|workshop"),
    ),
    Frame(
        _v("fix fixes fixed fixing fixed"),
        ("man", "mechanic", "woman", "worker", "father"),
        ("car", "bike", "roof", "chair", "clock"),
        _adj("in|the|garage", "with|a|hammer", "with|a|tool", "in|the|workshop", "in|the|rain"),
    ),
    Frame(
        _v("brush brushes brushed brushing brushed"),
        ("girl", "boy", "child", "woman", "man"),
        ("tooth", "hair", "horse", "dog"),
        _adj("in|the|bathroom", "with|a|brush", "before||bed", "in|the|morning", "in|the|stable"),
    ),
)
_PLURAL_ONLY_OBJECTS = ("tooth",)  # "brushes the tooth" is unnatural; always plural


def concept_forms(word: str) -> tuple[str, ...]:
    """Surface forms that count as using a concept word (its inflections, lower-case).

    A verb gives its five forms (``throw throws threw throwing thrown``); a noun its singular
    and plural. Words outside the vocabulary give themselves.
    """
    forms: list[str] = [word]
    for frame in FRAMES:
        if frame.verb[0] == word:
            forms.extend(frame.verb)
            break
    forms.append(plural(word))
    return tuple(dict.fromkeys(forms))  # ordered de-duplication


def all_concept_sets() -> list[tuple[str, ...]]:
    """Every sorted 3-word concept key the frames allow, in a fixed order."""
    return sorted(_concept_table())


@functools.cache  # pure function of the module's constants; rebuilding it per call is slow
def _concept_table() -> dict[tuple[str, ...], list[tuple[int, str | None, str | None, int | None]]]:
    table: dict[tuple[str, ...], list[tuple[int, str | None, str | None, int | None]]] = {}

    def add(
        key_words: tuple[str, ...], real: tuple[int, str | None, str | None, int | None]
    ) -> None:
        if len(set(key_words)) < 3:
            return
        table.setdefault(tuple(sorted(key_words)), []).append(real)

    for fi, fr in enumerate(FRAMES):
        verb = fr.verb[0]
        for ag in fr.agents:
            for ob in fr.objects:
                if ag != ob:
                    add((verb, ag, ob), (fi, ag, ob, None))
            for ai, (_, _, noun) in enumerate(fr.adjuncts):
                if _is_concept_noun(noun) and noun != ag:
                    add((verb, ag, noun), (fi, ag, None, ai))
        for ob in fr.objects:
            for ai, (_, _, noun) in enumerate(fr.adjuncts):
                if _is_concept_noun(noun) and noun != ob:
                    add((verb, ob, noun), (fi, None, ob, ai))
    return table


def _is_concept_noun(noun: str) -> bool:
    # "TV" stays out of concept sets: its capitals would make coverage checks case games.
    return noun.isalpha() and noun.islower()


def _agent_phrase(
    rng: random.Random, noun: str, plural_agent: bool, indefinite: bool = False
) -> str:
    """Noun phrase for the agent, e.g. 'the tall man', 'two dogs', 'my cat'."""
    animal = noun in _ANIMALS
    adjs: tuple[str, ...] = (
        _ANIMAL_ADJ
        if animal
        else (_SMALL_HUMAN_ADJ if noun in ("boy", "girl", "child", "baby") else _HUMAN_ADJ)
    )
    if noun in _COLLECTIVE:
        adjs = ("big", "happy") if noun != "team" else ("young", "local")
    adj = _pick(rng, adjs) + " " if rng.random() < 0.3 else ""
    if plural_agent:
        det = _pick(
            rng,
            ("two ", "three ", "some ", "")
            if indefinite
            else ("the ", "two ", "three ", "some ", ""),
        )
        return det + adj + plural(noun)
    r = rng.random()
    if indefinite or r < 0.35:
        return with_article(adj + noun)
    if r < 0.5 and noun in _MY_OK:
        return "my " + adj + noun
    return "the " + adj + noun


def _object_phrase(rng: random.Random, noun: str) -> tuple[str, bool]:
    """Noun phrase for the object and whether it is grammatically plural."""
    style = _OBJ_STYLE.get(noun, "count")
    adj = ""
    if noun in _NOUN_ADJ and rng.random() < 0.3:
        adj = _pick(rng, _NOUN_ADJ[noun]) + " "
    if style == "bare":
        return noun, False
    if style == "the":
        if noun == "drum" and rng.random() < 0.5:  # "plays the drums" is the common form
            return "the drums", True
        return "the " + noun, False
    if style == "mass":
        return _pick(rng, ("the ", "some ", "")) + adj + noun, False
    if noun in _PLURAL_ONLY_OBJECTS:
        return _pick(rng, ("the ", "")) + plural(noun), True
    r = rng.random()
    if r < 0.15:
        return _pick(rng, ("two ", "some ", "the ")) + adj + plural(noun), True
    if r < 0.6:
        return "the " + adj + noun, False
    return with_article(adj + noun), False


def _adjunct_phrase(rng: random.Random, adjunct: tuple[str, str, str]) -> str:
    prep, det, noun = adjunct
    if det == "pl":
        return f"{prep} {plural(noun)}"
    if not det:  # bare noun: "in bed", "with soap", "on TV"
        return f"{prep} {noun}"
    adj = ""
    if noun in _NOUN_ADJ and rng.random() < 0.2:
        adj = _pick(rng, _NOUN_ADJ[noun]) + " "
    if det == "a" or det == "an":
        return f"{prep} {with_article(adj + noun)}"
    return f"{prep} {det} {adj}{noun}"


# Adjuncts that read well in front of the clause ("In the park, ..."); "To the dog, ..." does not.
_FRONTABLE = ("in", "at", "on", "near", "under", "by", "with", "after", "before")
_TIME_PRESENT = ("every morning", "every day", "on weekends", "in the evening", "every summer")
_TIME_PAST = ("yesterday", "last night", "this morning", "last weekend", "last summer", "on Sunday")
_WANT = (("likes", "like"), ("loves", "love"), ("wants", "want"), ("tries", "try"))
_WANT_PAST = ("decided", "learned", "wanted", "tried", "started")
_N_TEMPLATES = 9


@dataclass(frozen=True)
class _Clause:
    """The filled roles of one concept sentence, before a template orders them."""

    agent: str
    """Head noun of the agent ("dog"); its phrase is made per template (some need "a")."""
    plural_agent: bool
    verb: VerbForms
    obj: str
    """Object noun phrase ("the red ball"), "" for an intransitive verb."""
    obj_plural: bool
    adjunct: tuple[str, str, str] | None


def concept_sentence(
    rng: random.Random,
    frame: Frame,
    agent: str | None,
    obj: str | None,
    adjunct_index: int | None,
) -> str:
    """One sentence of ``frame`` with the given agent/object/adjunct (None: chosen at random).

    The adjunct is always present when given; otherwise it is added with probability 0.6.
    """
    if agent is None:
        agent = _pick(rng, [a for a in frame.agents if a != obj])
    if obj is None and frame.objects:
        obj = _pick(rng, [o for o in frame.objects if o != agent])
    adjunct: tuple[str, str, str] | None = None
    if adjunct_index is not None:
        adjunct = frame.adjuncts[adjunct_index]
    elif rng.random() < 0.6:
        choices = [a for a in frame.adjuncts if a[2] not in (agent, obj)]
        adjunct = choices[rng.randrange(len(choices))]
    plural_agent = agent not in _COLLECTIVE and agent != "baby" and rng.random() < 0.25
    ob_text, ob_plural = _object_phrase(rng, obj) if obj else ("", False)
    clause = _Clause(agent, plural_agent, frame.verb, ob_text, ob_plural, adjunct)
    template = rng.randrange(_N_TEMPLATES)
    if template == 6 and not obj:  # passive needs an object
        template = 0
    if template == 4 and (adjunct is None or adjunct[0] not in _FRONTABLE):
        template = 2
    return capitalize(_realise(rng, template, clause)) + "."


def _realise(rng: random.Random, template: int, c: _Clause) -> str:
    """Order a clause by one of the templates (tense, voice, fronting, coordination)."""
    base, s3, past, ing, pp = c.verb
    ag = _agent_phrase(rng, c.agent, c.plural_agent, indefinite=template == 7)
    present = base if c.plural_agent else s3
    be = "are" if c.plural_agent else "is"
    ob = " " + c.obj if c.obj else ""
    adj = " " + _adjunct_phrase(rng, c.adjunct) if c.adjunct else ""
    if template == 0:
        time = " " + _pick(rng, _TIME_PRESENT) if rng.random() < 0.3 else ""
        return f"{ag} {present}{ob}{adj}{time}"
    if template == 1:
        return f"{ag} {be} {ing}{ob}{adj}"
    if template == 2:
        time = " " + _pick(rng, _TIME_PAST) if rng.random() < 0.4 else ""
        return f"{ag} {past}{ob}{adj}{time}"
    if template == 3:
        return f"{capitalize(_pick(rng, _TIME_PAST))}, {ag} {past}{ob}{adj}"
    if template == 4:
        verb = _pick(rng, (present, past, f"{be} {ing}"))
        return f"{capitalize(adj.strip())}, {ag} {verb}{ob}"
    if template == 5:
        if rng.random() < 0.5:
            want = _WANT[rng.randrange(len(_WANT))]
            return f"{ag} {want[1] if c.plural_agent else want[0]} to {base}{ob}{adj}"
        return f"{ag} {_pick(rng, _WANT_PAST)} to {base}{ob}{adj}"
    if template == 6:
        tense = rng.random() < 0.5
        be_ob = ("are" if c.obj_plural else "is") if tense else ("were" if c.obj_plural else "was")
        return f"{capitalize(c.obj)} {be_ob} {pp} by {ag}{adj}"
    if template == 7:
        return f"There {be} {ag} {ing}{ob}{adj}"
    after = ("looks happy", "look happy") if c.agent in _ANIMALS else _pick_pair(rng)
    if rng.random() < 0.3:  # coordinated past: both verbs in the past
        return f"{ag} {past}{ob}{adj} and {_past_of(after[0])}"
    return f"{ag} {present}{ob}{adj} and {after[1] if c.plural_agent else after[0]}"


def _pick_pair(rng: random.Random) -> tuple[str, str]:
    pairs = (
        ("smiles", "smile"),
        ("laughs", "laugh"),
        ("looks happy", "look happy"),
        ("goes home", "go home"),
        ("waves", "wave"),
    )
    return pairs[rng.randrange(len(pairs))]


def _past_of(third_person: str) -> str:
    return {
        "smiles": "smiled",
        "laughs": "laughed",
        "looks happy": "looked happy",
        "goes home": "went home",
        "waves": "waved",
    }[third_person]


def concept_prompt(words: Sequence[str]) -> str:
    """``"Concepts: dog, ball, throw. Sentence:"`` for ``words`` in the given order."""
    return CONCEPT_PREFIX + ", ".join(words) + CONCEPT_SUFFIX


def concept_references(rng: random.Random, key: tuple[str, ...], n: int) -> list[str]:
    """``n`` distinct sentences using every word of the concept set ``key`` (sorted words)."""
    reals = _concept_table()[key]
    out: list[str] = []
    for _ in range(50 * n):  # generous cap: some sets have few distinct surface forms
        fi, agent, obj, ai = reals[rng.randrange(len(reals))]
        s = concept_sentence(rng, FRAMES[fi], agent, obj, ai)
        if s not in out:
            out.append(s)
        if len(out) == n:
            break
    return out


def covers(sentence: str, words: Sequence[str]) -> bool:
    """Whether ``sentence`` uses every concept (any inflected form, case-insensitive)."""
    tokens = {t.strip(".,!?;:").lower() for t in sentence.split()}
    return all(any(f.lower() in tokens for f in concept_forms(w)) for w in words)


# ----------------------------------------------------------------------------------------------
# Reverse
# ----------------------------------------------------------------------------------------------

REVERSE_WORDS: tuple[str, ...] = (
    "red",
    "blue",
    "green",
    "gold",
    "pink",
    "fox",
    "owl",
    "cat",
    "dog",
    "bee",
    "sun",
    "moon",
    "star",
    "sky",
    "rain",
    "car",
    "hat",
    "cup",
    "pen",
    "box",
)


def reverse_example(rng: random.Random) -> tuple[str, str, list[str]]:
    """A reverse prompt, its completion and the word list (3-6 words, repeats allowed)."""
    words = [_pick(rng, REVERSE_WORDS) for _ in range(rng.randint(3, 6))]
    prompt = REVERSE_PREFIX + " ".join(words) + REVERSE_ARROW
    return prompt, " " + " ".join(reversed(words)), words


# ----------------------------------------------------------------------------------------------
# Task records and language-model documents
# ----------------------------------------------------------------------------------------------

TASK_SIZES = {"train": 3000, "validation": 300, "test": 300}


def review_records(seed: int, sizes: dict[str, int] = TASK_SIZES) -> list[dict[str, object]]:
    """Review task rows ``{"prompt", "references", "split", "label"}`` with unique prompts."""
    rng = random.Random(f"reviews-{seed}")
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for split in SPLITS:
        n = 0
        while n < sizes[split]:
            text, label = review(rng)
            prompt, completion = split_review(text, rng)
            if prompt in seen:  # unique prompts: no prompt is shared by two splits
                continue
            seen.add(prompt)
            rows.append(
                {"prompt": prompt, "references": [completion], "split": split, "label": label}
            )
            n += 1
    return rows


def concept_split(
    seed: int, sizes: dict[str, int] = TASK_SIZES
) -> dict[str, list[tuple[str, ...]]]:
    """Disjoint concept sets per split (validation and test first, train takes the rest)."""
    keys = all_concept_sets()
    random.Random(f"concept-split-{seed}").shuffle(keys)
    n_val, n_test = sizes["validation"], sizes["test"]
    return {
        "validation": keys[:n_val],
        "test": keys[n_val : n_val + n_test],
        "train": keys[n_val + n_test : n_val + n_test + sizes["train"]],
    }


def concept_records(seed: int, sizes: dict[str, int] = TASK_SIZES) -> list[dict[str, object]]:
    """Concept task rows ``{"prompt", "references", "split", "concepts"}``; 3-5 references each."""
    rng = random.Random(f"concepts-{seed}")
    rows: list[dict[str, object]] = []
    for split, keys in concept_split(seed, sizes).items():
        for key in keys:
            words = list(key)
            rng.shuffle(words)
            refs = concept_references(rng, key, rng.randint(3, 5))
            rows.append(
                {
                    "prompt": concept_prompt(words),
                    "references": [" " + r for r in refs],
                    "split": split,
                    "concepts": words,
                }
            )
    order = {s: i for i, s in enumerate(SPLITS)}
    # sort is stable: the shuffled order inside each split is kept
    rows.sort(key=lambda r: order[str(r["split"])])
    return rows


def reverse_records(seed: int, sizes: dict[str, int] = TASK_SIZES) -> list[dict[str, object]]:
    """Reverse task rows ``{"prompt", "references", "split", "words"}`` with unique prompts."""
    rng = random.Random(f"reverse-{seed}")
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for split in SPLITS:
        n = 0
        while n < sizes[split]:
            prompt, completion, words = reverse_example(rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append(
                {"prompt": prompt, "references": [completion], "split": split, "words": words}
            )
            n += 1
    return rows


def lm_documents(
    seed: int,
    n_reviews: int,
    n_concept_sentences: int,
    n_reverse: int,
    split: str = "train",
    task_seed: int = 0,
) -> list[tuple[str, str]]:
    """Training (or held-out) documents for the language model, without the EOS token.

    Reviews are fresh draws (exact texts of the task's held-out rows are excluded from
    ``"train"``); concept sentences use only the concept sets of ``split``; reverse examples
    skip every prompt of the task's held-out splits when ``split == "train"``.

    Returns:
        ``(task_name, text)`` pairs in a shuffled, seed-fixed order.
    """
    rng = random.Random(f"lm-{split}-{seed}")
    held_out = {
        str(r["prompt"]) + str(r["references"][0])  # type: ignore[index]
        for r in review_records(task_seed)
        if r["split"] != "train"
    }
    docs: list[tuple[str, str]] = []
    while len(docs) < n_reviews:
        text, _label = review(rng)
        doc = REVIEW_PREFIX + text
        if split == "train" and doc in held_out:
            continue
        docs.append(("reviews", doc))
    keys = concept_split(task_seed)[split]
    for i in range(n_concept_sentences):
        key = keys[i % len(keys)]
        words = list(key)
        rng.shuffle(words)
        sentence = concept_references(rng, key, 1)[0]
        docs.append(("concepts", concept_prompt(words) + " " + sentence))
    held_rev = {str(r["prompt"]) for r in reverse_records(task_seed) if r["split"] != "train"}
    n = 0
    while n < n_reverse:
        prompt, completion, _ = reverse_example(rng)
        if split == "train" and prompt in held_rev:
            continue
        docs.append(("reverse", prompt + completion))
        n += 1
    rng.shuffle(docs)
    return docs
