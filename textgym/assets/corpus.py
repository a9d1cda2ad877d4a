"""A deterministic, grammar-made English corpus for the embedded model and the built-in tasks.

Everything here is pure Python (no torch), driven by an explicit ``random.Random``; the global
RNG is never touched, and sets are never iterated (string hashing is salted per process), so the
same seed gives the same text in every process.

The grammars live in ``review_grammar.py`` and ``concept_grammar.py`` (shared helpers in
``english.py``), their word lists and templates in ``grammar/*.json``; the order of every list is
part of the output, since the generator draws by index. This module holds the reverse task,
the task rows and the language-model documents, and re-exports the grammars' public names.

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

import random

from textgym.assets import load_grammar
from textgym.assets.concept_grammar import (
    CONCEPT_PREFIX,
    CONCEPT_SUFFIX,
    FRAMES,
    Frame,
    VerbForms,
    all_concept_sets,
    concept_forms,
    concept_prompt,
    concept_references,
    concept_sentence,
    covers,
)
from textgym.assets.english import capitalize, pick, plural, with_article
from textgym.assets.review_grammar import REVIEW_PREFIX, review, split_review

REVERSE_PREFIX = "Reverse: "
REVERSE_ARROW = " ->"
SPLITS = ("train", "validation", "test")

# ----------------------------------------------------------------------------------------------
# Reverse
# ----------------------------------------------------------------------------------------------

REVERSE_WORDS: tuple[str, ...] = tuple(load_grammar("reverse")["words"])


def reverse_example(rng: random.Random) -> tuple[str, str, list[str]]:
    """A reverse prompt, its completion and the word list (3-6 words, repeats allowed)."""
    words = [pick(rng, REVERSE_WORDS) for _ in range(rng.randint(3, 6))]
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


__all__ = [
    "CONCEPT_PREFIX",
    "CONCEPT_SUFFIX",
    "FRAMES",
    "REVERSE_ARROW",
    "REVERSE_PREFIX",
    "REVERSE_WORDS",
    "REVIEW_PREFIX",
    "SPLITS",
    "TASK_SIZES",
    "Frame",
    "VerbForms",
    "all_concept_sets",
    "capitalize",
    "concept_forms",
    "concept_prompt",
    "concept_records",
    "concept_references",
    "concept_sentence",
    "concept_split",
    "covers",
    "lm_documents",
    "plural",
    "reverse_example",
    "reverse_records",
    "review",
    "review_records",
    "split_review",
    "with_article",
]
