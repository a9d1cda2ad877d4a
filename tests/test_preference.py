"""Preference data: loading, validation, tokenization layout, on-policy pair sampling."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from textgym.lm import LanguageModel
from textgym.pair_sampling import _win_rates, sample_pairs, synthetic_preferences
from textgym.preference import (
    PreferenceBatch,
    PreferencePair,
    from_records,
    load_jsonl,
    tokenize_pairs,
)


@pytest.fixture
def lm(tiny_gpt2_dir: str) -> LanguageModel:
    return LanguageModel(
        GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir), AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    )


def _write(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path


def test_load_jsonl_reads_pairs_in_order(tmp_path: Path) -> None:
    rows = [
        {"prompt": "the movie", "chosen": "was great", "rejected": "was bad", "extra": 1},
        {"prompt": "the plot", "chosen": "is good", "rejected": "is awful"},
    ]
    pairs = load_jsonl(_write(tmp_path / "p.jsonl", rows))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("the movie", "was great", "was bad"),
        ("the plot", "is good", "is awful"),
    ]


def test_load_jsonl_custom_keys(tmp_path: Path) -> None:
    pairs = load_jsonl(
        _write(tmp_path / "p.jsonl", [{"q": "a", "good": "b", "bad": "c"}]),
        prompt_key="q",
        chosen_key="good",
        rejected_key="bad",
    )
    assert pairs == [PreferencePair("a", "b", "c")]


@pytest.mark.parametrize(
    ("row", "error", "match"),
    [
        ({"prompt": "a", "chosen": "b"}, KeyError, r"p.jsonl:1: missing field\(s\) \['rejected'\]"),
        (
            {"prompt": "a", "chosen": "", "rejected": "c"},
            ValueError,
            "p.jsonl:1: .*chosen is an empty",
        ),
        (
            {"prompt": "a", "chosen": "b", "rejected": [{"role": "user"}]},
            TypeError,
            "chat template",
        ),
        ([1, 2], TypeError, "expected a JSON object"),
    ],
)
def test_load_jsonl_errors_name_the_line(
    tmp_path: Path, row: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        load_jsonl(_write(tmp_path / "p.jsonl", [row]))


def test_load_jsonl_bad_json_and_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_jsonl(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no preference records"):
        load_jsonl(empty)


def test_from_records_accepts_a_datasets_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"prompt": ["a", "b"], "chosen": ["c", "d"], "rejected": ["e", "f"]}
    )
    assert from_records(ds) == [PreferencePair("a", "c", "e"), PreferencePair("b", "d", "f")]
    with pytest.raises(KeyError, match="needs"):
        from_records(ds.remove_columns("rejected"))


def test_tokenize_pairs_layout(lm: LanguageModel) -> None:
    pairs = [
        PreferencePair("the movie", "was great", "was very bad"),
        PreferencePair("a dog", "runs", "sits on the ball", rejected_ids=(30, 31)),
    ]
    batch = tokenize_pairs(lm, pairs)
    assert len(batch) == 2
    assert batch.input_ids.shape[0] == 4
    tok, eos = lm.tokenizer, lm.eos_token_id
    for row, (prompt, completion) in enumerate(
        [("the movie", "was great"), ("a dog", "runs"), ("the movie", "was very bad")]
    ):
        p = tok(prompt)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"] + [eos]
        n = len(p) + len(c)
        assert batch.input_ids[row, :n].tolist() == p + c
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert batch.completion_mask[row].nonzero().flatten().tolist() == list(range(len(p), n))
    # Given token ids are used as they are, no EOS added.
    p = tok("a dog")["input_ids"]
    assert batch.input_ids[3, : len(p) + 2].tolist() == [*p, 30, 31]
    assert int(batch.completion_mask[3].sum()) == 2


def test_select_trims_to_the_longest_row(lm: LanguageModel) -> None:
    pairs = [
        PreferencePair("the", "a", "b"),
        PreferencePair("the movie was", "great and very good", "bad"),
    ]
    batch = tokenize_pairs(lm, pairs)
    one = batch.select(torch.tensor([0]))
    assert one.input_ids.shape == (2, int(batch.attention_mask[[0, 2]].sum(1).max()))
    assert one.input_ids.shape[1] < batch.input_ids.shape[1]
    with pytest.raises(ValueError, match="three"):
        PreferenceBatch(batch.input_ids[:3], batch.attention_mask[:3], batch.completion_mask[:3])


def test_prompt_over_the_context_raises(lm: LanguageModel) -> None:
    long_prompt = " ".join(["the"] * 64)  # the tiny model has 64 positions
    with pytest.raises(ValueError, match="text 1 has 64 tokens"):
        tokenize_pairs(lm, [PreferencePair("a", "b", "c"), PreferencePair(long_prompt, "b", "c")])
    with pytest.raises(ValueError, match="max_length must be"):
        tokenize_pairs(lm, [PreferencePair("a", "b", "c")], max_length=65)


def test_a_completion_without_tokens_raises(lm: LanguageModel) -> None:
    with pytest.raises(
        ValueError, match="pair 1: the rejected completion ' ' encodes to no tokens"
    ):
        tokenize_pairs(
            lm, [PreferencePair("a", "b", "c"), PreferencePair("a", "b", " ")], add_eos=False
        )


def test_long_completions_are_cut_with_a_warning(lm: LanguageModel) -> None:
    pairs = [PreferencePair("the movie", " ".join(["good"] * 20), "bad")]
    with pytest.warns(UserWarning, match="1 of 2 completions were cut to fit 10 tokens"):
        batch = tokenize_pairs(lm, pairs, max_length=10)
    assert batch.input_ids.shape[1] == 10


def test_win_rates_from_a_pairwise_preference() -> None:
    def prefer_longer(prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return np.array(
            [
                1.0 if len(x) > len(y) else 0.0 if len(x) < len(y) else 0.5
                for x, y in zip(a, b, strict=True)
            ]
        )

    rates = _win_rates(prefer_longer, ["p", "q"], [["aa", "a", "aaa"], ["b", "b", "bb"]])
    np.testing.assert_allclose(rates, [[0.5, 0.0, 1.0], [0.25, 0.25, 1.0]])


def test_sample_pairs_keeps_best_and_worst_with_a_margin(lm: LanguageModel) -> None:
    def n_words(
        prompts: Sequence[str], completions: Sequence[str], refs: object = None
    ) -> np.ndarray:
        return np.array([len(c.split()) for c in completions], dtype=np.float32)

    prompts = ["the movie", "a dog", "the cat", "i loved"]
    out = sample_pairs(
        lm,
        prompts,
        k=4,
        reward=n_words,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.scores.shape == out.sample_scores.shape == (4, 4)
    assert 0 < len(out.pairs) <= 4
    for pair in out.pairs:
        i = prompts.index(pair.prompt)
        assert pair.margin == pytest.approx(out.scores[i].max() - out.scores[i].min())
        assert pair.margin > 0
        assert pair.chosen_ids is not None
        assert pair.rejected_ids is not None
        assert len(pair.chosen.split()) == out.scores[i].max()
    # Same generator seed, same pairs.
    again = sample_pairs(
        lm,
        prompts,
        k=4,
        reward=n_words,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert again.pairs == out.pairs
    # A margin no pair reaches keeps none; the gold reference joins as the last candidate.
    assert (
        sample_pairs(lm, prompts, k=2, reward=n_words, max_new_tokens=6, min_margin=99).pairs == []
    )
    refs = [["great great great great great great great great"]] * 4
    gold = sample_pairs(
        lm, prompts, k=2, reward=n_words, max_new_tokens=6, references=refs, include_reference=True
    )
    assert gold.scores.shape == (4, 3)
    assert all(p.chosen == refs[0][0] for p in gold.pairs)


def test_sample_pairs_argument_errors(lm: LanguageModel) -> None:
    def r(p: Sequence[str], c: Sequence[str], refs: object = None) -> np.ndarray:
        return np.zeros(len(c), dtype=np.float32)

    with pytest.raises(ValueError, match="exactly one"):
        sample_pairs(lm, ["a"], k=2)
    with pytest.raises(ValueError, match="k must be"):
        sample_pairs(lm, ["a"], k=1, reward=r)
    with pytest.raises(ValueError, match="needs references"):
        sample_pairs(lm, ["a"], k=2, reward=r, include_reference=True)


@pytest.mark.usefixtures("one_torch_thread")
def test_synthetic_pairs_are_ranked_by_the_gold_reward_and_seeded(
    embedded_lm: LanguageModel,
) -> None:
    from textgym.rewards import make

    from textgym import tasks

    gold = make("sentiment")
    reviews = list(tasks.load("reviews", split="train").prompts[:6])
    kw: dict[str, Any] = {"k": 3, "max_new_tokens": 12, "min_margin": 0.05}
    pairs = synthetic_preferences(embedded_lm, reviews, gold, seed=1, **kw)
    assert pairs == synthetic_preferences(embedded_lm, reviews, gold, seed=1, **kw)
    assert pairs != synthetic_preferences(embedded_lm, reviews, gold, seed=2, **kw)
    x = [p.prompt for p in pairs]
    margin = gold(x, [p.chosen for p in pairs]) - gold(x, [p.rejected for p in pairs])
    assert len(pairs) > 0
    assert np.all(margin > 0.05)
    np.testing.assert_allclose(margin, [p.margin for p in pairs], rtol=1e-5, atol=1e-6)
    best_worst = synthetic_preferences(embedded_lm, reviews, gold, seed=1, pairs="best_worst", **kw)
    assert 0 < len(best_worst) <= len(reviews)
    triple = lambda p: (p.prompt, p.chosen, p.rejected)  # noqa: E731
    assert {triple(p) for p in best_worst} <= {triple(p) for p in pairs}


def test_synthetic_preferences_argument_errors(lm: LanguageModel) -> None:
    def r(p: Sequence[str], c: Sequence[str], refs: object = None) -> np.ndarray:
        return np.zeros(len(c), dtype=np.float32)

    with pytest.raises(ValueError, match="pairs must be 'all' or 'best_worst'"):
        synthetic_preferences(lm, ["a"], r, pairs="some")  # type: ignore[arg-type]  # under test
    with pytest.raises(ValueError, match="non-empty list"):
        synthetic_preferences(lm, [], r)
    with pytest.raises(ValueError, match="non-empty list"):
        synthetic_preferences(lm, "the movie", r)


def test_review_pairs_are_distinct_shipped_reviews() -> None:
    from textgym.preference import review_pairs

    pairs = review_pairs(50)
    assert len(pairs) == 50
    assert all(p.chosen != p.rejected for p in pairs)  # no tied pair for DPO to drop
    assert len({p.prompt for p in pairs}) > 1
    assert review_pairs(50) == pairs  # deterministic: benches compare runs on the same data
