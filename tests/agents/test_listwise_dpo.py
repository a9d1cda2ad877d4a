"""Listwise DPO: rows and items, the config, the loss at the start (log K! by hand), DPO at K = 2
through the agent, learning the order, and (slow) learning from gold-labelled rankings."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from textgym.agents import DPO, DPOConfig, ListwiseDPO, ListwiseDPOConfig
from textgym.agents.listwise_dpo import ranking_metrics, tokenize_rankings
from torch.testing import assert_close

from textgym import LanguageModel
from textgym.feedback import Ranking
from textgym.preference import PreferencePair, tokenize_pairs

RANKINGS = [
    Ranking("the movie was", (" bad", " great and i loved it", " good"), (2, 0, 1)),
    Ranking("the plot", (" is very good", " is awful and bad", " is good"), (0, 2, 1)),
    Ranking("a dog", (" plays in the park", " sits"), (0, 1)),  # K = 2: padded to 3
    Ranking("this film", (" was great", " was good", " was not good but bad"), (0, 1, 2)),
]
PAIRS = [
    PreferencePair("the movie was", " great and i loved it", " bad"),
    PreferencePair("the plot", " is very good", " is awful and bad"),
    PreferencePair("a dog", " plays in the park", " sits"),
    PreferencePair("this film", " was great", " was not good but bad"),
    PreferencePair("the cat", " is good", " is bad"),
]


def test_rows_are_dpos_tokens_best_first_with_padded_items(lm: LanguageModel) -> None:
    batch = tokenize_rankings(lm, RANKINGS)
    assert batch.items.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, -1], [8, 9, 10]]
    ids, mask, completion, valid = batch.rows(torch.tensor([0]))
    assert valid.tolist() == [[True, True, True]]
    pairs = tokenize_pairs(lm, [PreferencePair("the movie was", " great and i loved it", " good"),
                                PreferencePair("the movie was", " bad", " bad")])  # fmt: skip
    for row, want in zip(range(3), (0, 2, 1), strict=True):  # best first: great, good, bad
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == pairs.input_ids[want, :n].tolist()
        assert completion[row, :n].tolist() == pairs.completion_mask[want, :n].tolist()


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ([Ranking("x", ("a", "b", "c"), (0, 0, 1))], ValueError, r"ranking 0: ranks .* hold a tie"),
        (PAIRS, TypeError, r"record 0 is a PreferencePair \(a pair p: Ranking"),
        ([], ValueError, "at least one ranking"),
    ],
)
def test_bad_data_is_refused(lm: LanguageModel, data: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ListwiseDPO(lm, data=data, progress_bar=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beta": 0.0}, "beta"), ({"batch_size": 0}, "batch_size"), ({"lr": "1e-4"}, "lr"),
     ({"max_length": 1}, "max_length")],
)  # fmt: skip
def test_config_is_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        ListwiseDPOConfig(**kwargs)


def test_first_loss_is_log_k_factorial_and_training_learns_the_order(lm: LanguageModel) -> None:
    agent = ListwiseDPO(lm, data=RANKINGS, config=ListwiseDPOConfig(batch_size=4, lr=1e-2),
                        progress_bar=False)  # fmt: skip
    first = agent.learn(1)[0]
    # π_θ = π_ref: every r̂ = 0, so a list of K loses log K! (3 lists of 3, one of 2).
    assert first["loss"] == pytest.approx((3 * math.log(6) + math.log(2)) / 4, abs=1e-5)
    assert first["margin"] == pytest.approx(0.0, abs=1e-5)
    last = agent.learn(20)[-1]
    assert last["accuracy"] == 1.0
    assert last["loss"] < first["loss"] / 4
    assert last["reward_best"] > 0 > last["reward_worst"]
    assert agent.evaluate(RANKINGS)["accuracy"] == 1.0


def test_two_completions_are_dpo_through_the_agent(tiny_gpt2_dir: str) -> None:
    """Listwise DPO on rankings of two and DPO on the same pairs: the same losses and metrics,
    update after update (float rounding only; the rows are tokenised and scored alike)."""
    policies = [LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu") for _ in range(2)]
    dpo = DPO(policies[0], data=PAIRS, config=DPOConfig(batch_size=2, lr=1e-3, seed=3),
              progress_bar=False)  # fmt: skip
    as_rankings = [Ranking(p.prompt, (p.chosen, p.rejected), (0, 1)) for p in PAIRS]
    listwise = ListwiseDPO(policies[1], data=as_rankings,
                           config=ListwiseDPOConfig(batch_size=2, lr=1e-3, seed=3),
                           progress_bar=False)  # fmt: skip
    n = len(PAIRS)  # DPO caches the chosen rows, then the rejected; listwise ranking by ranking
    assert_close(listwise.ref_logps, dpo.ref_logps.view(2, n).T.flatten(), rtol=0, atol=0)
    for a, b in zip(dpo.learn(6), listwise.learn(6), strict=True):
        for key in ("loss", "accuracy", "margin", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        assert a["reward_chosen"] == pytest.approx(b["reward_best"], rel=1e-4, abs=1e-6)
    held = dpo.evaluate(PAIRS)
    assert listwise.evaluate(as_rankings)["loss"] == pytest.approx(held["loss"], rel=1e-4)


def test_ranking_metrics_by_hand() -> None:
    h = torch.tensor([[3.0, 1.0, 2.0], [1.0, -1.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    m = ranking_metrics(h, valid, beta=0.5)
    assert m["accuracy"].item() == pytest.approx(3 / 4)  # (0,1) (0,2) right, (1,2) wrong; (0,1)
    assert m["margin"].item() == pytest.approx(((1.5 - 1.0) + (0.5 + 0.5)) / 2)
    assert m["reward_worst"].item() == pytest.approx((1.0 - 0.5) / 2)


def test_eval_every_needs_eval_data(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="eval_every=2 needs eval_data"):
        ListwiseDPO(lm, data=RANKINGS, config=ListwiseDPOConfig(eval_every=2), progress_bar=False)
    agent = ListwiseDPO(lm, data=RANKINGS, eval_data=RANKINGS[:2],
                        config=ListwiseDPOConfig(eval_every=1), progress_bar=False)  # fmt: skip
    row = agent.learn(1)[0]
    assert row["eval_loss"] == pytest.approx(agent.evaluate()["loss"])


@pytest.mark.slow
def test_listwise_dpo_on_gold_ranked_samples_raises_held_out_sentiment() -> None:
    """Rankings of 4 review samples of the embedded model by a simulated person (VADER behind
    logistic noise 0.1): listwise DPO raises the gold reward of fresh samples on held-out
    prompts, with the sampler seeded alike before and after (measured: 0.53 -> 0.78)."""
    import gymnasium as gym
    import numpy as np
    from textgym.rewards import make

    from textgym import tasks
    from textgym.decoding import generate
    from textgym.feedback import Annotator
    from textgym.rollout import evaluate_policy

    lm = LanguageModel.from_pretrained(device="cpu")
    prompts = list(tasks.load("reviews", "train").prompts[:96])
    out = generate(lm, [p for p in prompts for _ in range(4)], max_new_tokens=16, do_sample=True,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    texts = [list(out.texts[i : i + 4]) for i in range(0, len(out.texts), 4)]
    keep = [i for i, ts in enumerate(texts) if all(t.strip() for t in ts)]
    person = Annotator(make("sentiment"), noise=0.1)
    rankings = person.rank([prompts[i] for i in keep], [texts[i] for i in keep],
                           np.random.default_rng(0))  # fmt: skip
    held_out = gym.make_vec("TextGen-v0", num_envs=64, model=lm, task="reviews",
                            split="validation", reward="sentiment", max_new_tokens=16)  # fmt: skip
    before = evaluate_policy(lm, held_out, seed=1)
    agent = ListwiseDPO(lm, data=rankings, config=ListwiseDPOConfig(batch_size=8),
                        progress_bar=False)  # fmt: skip
    agent.learn(40)
    after = evaluate_policy(lm, held_out, seed=1)
    assert after["reward"] > before["reward"] + 0.05, (before, after)
