"""The feedback data model: records, exact conversions, loaders and their errors, judgment
counting, token rows, and the simulated person who gives every form from a gold reward."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from textgym.feedback import (
    Annotator,
    Correction,
    FeedbackBatch,
    Ranking,
    Rating,
    Thumb,
    correction_to_demonstration,
    correction_to_pair,
    corrections_to_demonstrations,
    corrections_to_pairs,
    from_records,
    judgments,
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


# ---------------------------------------------------------------------------- counting, helpers


def test_judgments_count_a_ranking_of_k_as_k_minus_1() -> None:
    assert judgments(Ranking("x", ("a", "b", "c", "d"), (0, 1, 2, 3))) == 3
    assert judgments(Ranking("x", ("a", "b"), (1, 0))) == 1
    for record in (PreferencePair("x", "a", "b"), Rating("x", "a", 3), Thumb("x", "a", True),
                   Correction("x", "a", "b")):  # fmt: skip
        assert judgments(record) == 1
    with pytest.raises(TypeError, match="not a feedback record: tuple"):
        judgments(("x", "a"))  # type: ignore[arg-type]


def test_corrections_become_dpo_pairs_and_bc_demonstrations_in_one_call() -> None:
    fixes = [Correction("x", " bad", " good"), Correction("y", " awful", " great")]
    assert corrections_to_pairs(fixes) == [correction_to_pair(c) for c in fixes]
    assert corrections_to_demonstrations(fixes) == [("x", " good"), ("y", " great")]
    with pytest.raises(TypeError, match="record 1 is a Thumb, not a Correction"):
        corrections_to_pairs([fixes[0], Thumb("x", "a", True)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no Correction records"):
        corrections_to_demonstrations([])


def test_feedback_batch_rows_are_item_major_and_padding_repeats_the_first_item() -> None:
    ids = torch.arange(5)[:, None].repeat(1, 3)  # (R, L): row r holds r
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    batch = FeedbackBatch(ids, mask, mask.bool(), torch.tensor([[2, 0, 4], [1, 3, -1]]),
                          torch.zeros(2))  # fmt: skip
    got_ids, got_mask, _, valid = batch.rows(torch.tensor([1, 0]))
    assert got_ids[:, 0].tolist() == [1, 2, 3, 0, 1, 4]  # item 0 of both, item 1, item 2 (pad: 1)
    assert got_mask.shape == (6, 3)  # row 2 has 3 tokens
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    with pytest.raises(ValueError, match="first item"):
        FeedbackBatch(ids, mask, mask.bool(), torch.tensor([[-1, 0]]), torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(N,\) targets"):
        FeedbackBatch(ids, mask, mask.bool(), torch.tensor([[0, 1]]), torch.zeros(2))


# ---------------------------------------------------------------------------- the simulated person


def utility(prompts: Any, completions: Any, references: Any = None) -> np.ndarray:
    """A gold reward that reads u off the completion's text ("0.7" -> 0.7)."""
    return np.array([float(c) for c in completions])


def test_a_noise_free_person_follows_the_gold_reward() -> None:
    person, rng = Annotator(utility, noise=0.0), np.random.default_rng(0)
    texts = ["0.1", "0.3", "0.5", "0.7", "0.95"]
    assert [r.rating for r in person.rate(["x"] * 5, texts, rng)] == [1, 2, 3, 4, 5]
    assert [t.up for t in person.thumb(["x"] * 5, texts, rng)] == [False] * 3 + [True] * 2
    (ranking,) = person.rank(["x"], [["0.3", "0.9", "0.1", "0.5"]], rng)
    assert ranking_order(ranking) == ["0.9", "0.5", "0.3", "0.1"]
    pairs = person.compare(["x"] * 2, ["0.2", "0.8"], ["0.6", "0.4"], rng)
    assert [(p.chosen, p.rejected) for p in pairs] == [("0.6", "0.2"), ("0.8", "0.4")]
    ties = person.compare(["x"] * 200, ["0.5"] * 200, ["0.50"] * 200, rng)  # equal u: a coin
    assert 60 < sum(p.chosen == "0.5" for p in ties) < 140


def test_noisy_judgments_follow_their_models() -> None:
    """Comparisons are Bradley-Terry on u/τ, rankings Plackett-Luce (the same draws for K = 2),
    thumbs and ratings logistic around their cuts: frequencies within 4 standard errors."""
    n, tau = 4000, 0.1
    person = Annotator(utility, noise=tau)
    sigma = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731

    def near(freq: float, p: float) -> bool:
        return abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n)

    pairs = person.compare(["x"] * n, ["0.6"] * n, ["0.5"] * n, np.random.default_rng(1))
    assert near(np.mean([p.chosen == "0.6" for p in pairs]), sigma(0.1 / tau))
    again = person.rank(["x"] * n, [("0.6", "0.5")] * n, np.random.default_rng(1))
    assert [ranking_order(r)[0] for r in again] == [p.chosen for p in pairs]
    three = person.rank(["x"] * n, [("0.7", "0.6", "0.4")] * n, np.random.default_rng(2))
    top = [ranking_order(r)[0] for r in three]
    weights = np.exp(np.array([0.7, 0.6, 0.4]) / tau)
    assert near(top.count("0.6") / n, weights[1] / weights.sum())
    thumbs = person.thumb(["x"] * n, ["0.55"] * n, np.random.default_rng(3))
    assert near(np.mean([t.up for t in thumbs]), sigma(0.05 / tau))
    ratings = [r.rating for r in person.rate(["x"] * n, ["0.5"] * n, np.random.default_rng(4))]
    assert near(np.mean([r <= 2 for r in ratings]), sigma((0.4 - 0.5) / tau))  # cut 0.4: 2 | 3


def test_corrections_keep_the_edits_that_change_the_text() -> None:
    editor = lambda x, y: y.replace("bad", "good")  # noqa: E731
    fixes = Annotator.correct(["x", "y"], [" so bad", " fine"], editor)
    assert fixes == [Correction("x", " so bad", " so good")]  # " fine" was left: no record


def test_annotator_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="noise must be"):
        Annotator(utility, noise=-1.0)
    with pytest.raises(ValueError, match="scale must be whole numbers"):
        Annotator(utility, scale=(1, 1))
    with pytest.raises(ValueError, match="one list of K completions"):
        Annotator(utility).rank(["x", "y"], [["0.1", "0.2"], ["0.3"]], np.random.default_rng(0))


def test_corrections_train_dpo_and_bc_in_one_call_each(tiny_gpt2_dir: str) -> None:
    """The two recipes of docs/feedback.md: DPO on corrected ≻ original widens the margin of the
    edits; BC on the edits raises their likelihood (the originals are not its data)."""
    from textgym.agents import BC, DPO, BCConfig, DPOConfig

    from textgym import LanguageModel
    from textgym.packing import completion_logps
    from textgym.preference import tokenize_pairs

    fixes = [
        Correction("the movie was", " bad", " great"),
        Correction("the plot", " is awful and bad", " is very good"),
        Correction("a dog", " sits", " plays in the park"),
        Correction("this film", " was not good", " was great"),
    ]

    def logps(
        lm: LanguageModel,
    ) -> torch.Tensor:  # (2, N): log π(corrected | x), log π(original | x)
        with torch.no_grad():
            batch = tokenize_pairs(lm, corrections_to_pairs(fixes))
            return completion_logps(lm, batch, packing=False).view(2, -1)

    policy = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    start = logps(policy)
    dpo = DPO(policy, data=corrections_to_pairs(fixes), config=DPOConfig(batch_size=4, lr=1e-2),
              progress_bar=False)  # fmt: skip
    assert dpo.learn(1)[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    dpo.learn(10)
    margin = lambda lp: lp[0] - lp[1]  # noqa: E731
    assert (margin(logps(policy)) > margin(start) + 1.0).all()

    policy = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    config = BCConfig(lr=1e-2, batch_size=4, val_fraction=0.0, patience=None)
    bc = BC(policy, corrections_to_demonstrations(fixes), config, progress_bar=False)
    bc.learn(10)
    assert (logps(policy)[0] > start[0] + 1.0).all()


@pytest.mark.slow
def test_the_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block of docs/feedback.md, in order, in one namespace (files go to tmp)."""
    import re

    text = (Path(__file__).parent.parent / "docs" / "feedback.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/feedback.md", "exec"), namespace)
    assert (tmp_path / "runs" / "rm-ordinal" / "reward_model" / "reward_model.json").exists()
    assert namespace["judgments"](namespace["ranking"]) == 3
