"""Write tests/rewards/cider_fixture.json: pycocoevalcap's CIDEr-D scores on fixed inputs.

The test suite compares textgym's own CIDEr-D with these numbers, so it does not need
pycocoevalcap (about 100 MB with its Java tools) installed. Re-run after changing the cases:

    pip install pycocoevalcap==1.2
    python tests/rewards/make_cider_fixture.py

pycocoevalcap's ``Cider`` (coco-caption) is CIDEr-D: n = 1..4, σ = 6, clipping, x10. It takes
tokenised text and splits on whitespace, so the cases are fed to both implementations as is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("cider_fixture.json")

WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "sits",
    "runs",
    "on",
    "mat",
    "red",
    "ball",
    "rolls",
    "is",
    "in",
    "park",
    "two",
    "men",
    "play",
    "soccer",
    "green",
    "field",
    "woman",
    "rides",
    "bike",
    "street",
    "café",
    "naïve",
    "東京",
    "größe",
    "über",
    "ñandú",
    "and",
    "with",
    "of",
]

HAND_CASES: list[tuple[str, list[str]]] = [
    ("a cat sits on a mat", ["a cat is on the mat", "there is a cat on a mat"]),
    ("dog dog dog dog dog", ["a dog runs in the park"]),  # clipping: repeats cannot win
    ("", ["an empty candidate scores zero"]),
    ("the red ball rolls", ["a red ball is rolling", "the ball rolls", "red ball"]),
    ("two men play soccer on a green field", ["two men play soccer on a green field"]),
    ("cat", ["cat"]),  # single words: no bigrams
    ("café naïve 東京", ["café 東京 naïve", "größe über ñandú"]),
    ("a woman rides a bike in the street", ["", "a woman rides a bike"]),  # an empty reference
]


def random_cases(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """Random word sequences (lengths 0-14, 1-5 references) from a seeded local generator."""
    rng = np.random.default_rng(seed)

    def sentence(lo: int) -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, 15))).tolist())

    return [(sentence(0), [sentence(1) for _ in range(int(rng.integers(1, 6)))]) for _ in range(n)]


def coco_scores(cases: list[tuple[str, list[str]]]) -> list[float]:
    """pycocoevalcap's per-candidate CIDEr-D, document frequencies from these references."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: refs for i, (_, refs) in enumerate(cases)}
    res = {i: [hyp] for i, (hyp, _) in enumerate(cases)}
    _, scores = Cider().compute_score(gts, res)
    return [float(s) for s in scores]


def main() -> None:
    """Compute and write the fixture."""
    corpora = {"hand": HAND_CASES, "random": HAND_CASES + random_cases(120, seed=0)}
    fixture = {
        name: {
            "completions": [h for h, _ in cases],
            "references": [r for _, r in cases],
            "scores": coco_scores(cases),
        }
        for name, cases in corpora.items()
    }
    fixture["_source"] = {"package": "pycocoevalcap==1.2", "class": "pycocoevalcap.cider.Cider"}
    OUT.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")  # noqa: T201  (a script)


if __name__ == "__main__":
    main()
