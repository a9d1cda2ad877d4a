"""The concept grammar: sentences that use a set of three concept words (CommonGen-like).

A :class:`Frame` is one scene (a verb, its agents, objects and prepositional adjuncts); the
frames and word lists are in ``grammar/concepts.json``. A concept set is a verb and two nouns
that one frame can put in one sentence; :func:`concept_sentence` orders the roles by one of
nine templates (tense, voice, fronting, coordination). Formats are in ``corpus.py``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from textgym.assets import load_grammar
from textgym.assets.english import capitalize, pick, plural, with_article

CONCEPT_PREFIX = "Concepts: "
CONCEPT_SUFFIX = ". Sentence:"
_CONCEPTS = load_grammar("concepts")

# (base, third person singular, past, -ing, past participle)
VerbForms = tuple[str, str, str, str, str]

_NOUN_ADJ: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _CONCEPTS["noun_adj"].items()}
_HUMAN_ADJ: tuple[str, ...] = tuple(_CONCEPTS["human_adj"])
_SMALL_HUMAN_ADJ: tuple[str, ...] = tuple(_CONCEPTS["small_human_adj"])
_ANIMAL_ADJ: tuple[str, ...] = tuple(_CONCEPTS["animal_adj"])
_ANIMALS: tuple[str, ...] = tuple(_CONCEPTS["animals"])
_COLLECTIVE: tuple[str, ...] = tuple(_CONCEPTS["collective"])  # singular agents only
_MY_OK: tuple[str, ...] = tuple(_CONCEPTS["my_ok"])
# How an object noun takes its determiner: "count" (a/the/two), "mass" (the/some/bare),
# "bare" (no article: "cooks dinner", "plays football"), "the" (always "the": "plays the piano").
_OBJ_STYLE: dict[str, str] = _CONCEPTS["obj_style"]


@dataclass(frozen=True)
class Frame:
    """One scene: a verb, who can do it, to what, and where/with what (prepositional adjuncts).

    ``adjuncts`` entries are ``(preposition, determiner, noun)`` with determiner ``"the"``,
    ``"a"``, ``"an"``, ``""`` (bare noun) or ``"pl"`` (plural noun, no article).
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


FRAMES: tuple[Frame, ...] = tuple(
    Frame(_v(fr["verb"]), tuple(fr["agents"]), tuple(fr["objects"]), _adj(*fr["adjuncts"]))
    for fr in _CONCEPTS["frames"]
)
"""Every scene of the concept grammar, in the order of ``grammar/concepts.json``."""
# "brushes the tooth" is unnatural; always plural
_PLURAL_ONLY_OBJECTS: tuple[str, ...] = tuple(_CONCEPTS["plural_only_objects"])


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
    adj = pick(rng, adjs) + " " if rng.random() < 0.3 else ""
    if plural_agent:
        det = pick(
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
        adj = pick(rng, _NOUN_ADJ[noun]) + " "
    if style == "bare":
        return noun, False
    if style == "the":
        if noun == "drum" and rng.random() < 0.5:  # "plays the drums" is the common form
            return "the drums", True
        return "the " + noun, False
    if style == "mass":
        return pick(rng, ("the ", "some ", "")) + adj + noun, False
    if noun in _PLURAL_ONLY_OBJECTS:
        return pick(rng, ("the ", "")) + plural(noun), True
    r = rng.random()
    if r < 0.15:
        return pick(rng, ("two ", "some ", "the ")) + adj + plural(noun), True
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
        adj = pick(rng, _NOUN_ADJ[noun]) + " "
    if det == "a" or det == "an":
        return f"{prep} {with_article(adj + noun)}"
    return f"{prep} {det} {adj}{noun}"


# Adjuncts that read well in front of the clause ("In the park, ..."); "To the dog, ..." does not.
_FRONTABLE: tuple[str, ...] = tuple(_CONCEPTS["frontable"])
_TIME_PRESENT: tuple[str, ...] = tuple(_CONCEPTS["time_present"])
_TIME_PAST: tuple[str, ...] = tuple(_CONCEPTS["time_past"])
_WANT: tuple[tuple[str, str], ...] = tuple((s3, base) for s3, base in _CONCEPTS["want"])
_WANT_PAST: tuple[str, ...] = tuple(_CONCEPTS["want_past"])
# What the agent does next, (third person, plural): "... and smiles"; and its past tense.
_AFTER: tuple[tuple[str, str], ...] = tuple((s3, base) for s3, base in _CONCEPTS["after"])
_AFTER_PAST: dict[str, str] = _CONCEPTS["after_past"]
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
        agent = pick(rng, [a for a in frame.agents if a != obj])
    if obj is None and frame.objects:
        obj = pick(rng, [o for o in frame.objects if o != agent])
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
        time = " " + pick(rng, _TIME_PRESENT) if rng.random() < 0.3 else ""
        return f"{ag} {present}{ob}{adj}{time}"
    if template == 1:
        return f"{ag} {be} {ing}{ob}{adj}"
    if template == 2:
        time = " " + pick(rng, _TIME_PAST) if rng.random() < 0.4 else ""
        return f"{ag} {past}{ob}{adj}{time}"
    if template == 3:
        return f"{capitalize(pick(rng, _TIME_PAST))}, {ag} {past}{ob}{adj}"
    if template == 4:
        verb = pick(rng, (present, past, f"{be} {ing}"))
        return f"{capitalize(adj.strip())}, {ag} {verb}{ob}"
    if template == 5:
        if rng.random() < 0.5:
            want = _WANT[rng.randrange(len(_WANT))]
            return f"{ag} {want[1] if c.plural_agent else want[0]} to {base}{ob}{adj}"
        return f"{ag} {pick(rng, _WANT_PAST)} to {base}{ob}{adj}"
    if template == 6:
        tense = rng.random() < 0.5
        be_ob = ("are" if c.obj_plural else "is") if tense else ("were" if c.obj_plural else "was")
        return f"{capitalize(c.obj)} {be_ob} {pp} by {ag}{adj}"
    if template == 7:
        return f"There {be} {ag} {ing}{ob}{adj}"
    after = (
        ("looks happy", "look happy") if c.agent in _ANIMALS else _AFTER[rng.randrange(len(_AFTER))]
    )
    if rng.random() < 0.3:  # coordinated past: both verbs in the past
        return f"{ag} {past}{ob}{adj} and {_AFTER_PAST[after[0]]}"
    return f"{ag} {present}{ob}{adj} and {after[1] if c.plural_agent else after[0]}"


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
