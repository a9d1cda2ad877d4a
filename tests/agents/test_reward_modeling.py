"""Reward modelling: the Bradley-Terry loss, the config, and RewardModelTrainer on every form of
feedback (pairs, rankings, ratings by regression and ordinal, thumbs).

Fast tests train r_φ on the tiny random GPT-2 of ``tests/conftest.py``; the slow tests train it on
the embedded model's review samples labelled by VADER and check held-out pairwise accuracy. The
resume test over every agent (``test_checkpoints.py``) covers the trainer's checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from textgym.agents import RewardModelConfig, RewardModelTrainer
from textgym.agents.feedback_losses import (
    ordinal_loss,
    plackett_luce_loss,
    regression_loss,
    thumbs_loss,
)
from textgym.agents.reward_modeling import (
    HITS,
    LOSSES,
    bradley_terry_loss,
    pairwise_accuracy,
    tokenize_feedback,
)
from textgym.rewards import make
from textgym.rewards.reward_model import RewardModel
from torch import Tensor
from torch.testing import assert_close

from textgym import tasks
from textgym.feedback import Ranking, Rating, Thumb, ranking_order
from textgym.pair_sampling import synthetic_preferences
from textgym.preference import PreferencePair
from textgym.tasks import Task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = [
    PreferencePair("the movie was", "great", "awful"),
    PreferencePair("this film is", "good", "bad"),
    PreferencePair("i", "loved it", "hated it"),
    PreferencePair("the plot", "is great", "is bad"),
]


# ---------------------------------------------------------------------------- the loss


def test_bradley_terry_loss_equals_minus_log_sigmoid_of_margin() -> None:
    g = torch.Generator().manual_seed(0)
    r_w, r_l = torch.randn(16, generator=g), torch.randn(16, generator=g)
    direct = -torch.log(torch.sigmoid((r_w - r_l).double())).mean()
    assert_close(bradley_terry_loss(r_w, r_l).double(), direct, rtol=1e-6, atol=1e-7)


def test_bradley_terry_loss_is_log2_at_zero_margin() -> None:
    r = torch.randn(8)
    assert_close(bradley_terry_loss(r, r.clone()), torch.tensor(math.log(2.0)))


def test_bradley_terry_loss_is_finite_at_large_margins() -> None:
    loss = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([200.0]))
    assert_close(loss, torch.tensor(200.0))  # -log σ(-200) = 200 + log(1 + e^-200)


def test_bradley_terry_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(4))


# ---------------------------------------------------------------------------- training


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="lr must be > 0"):
        RewardModelConfig(lr=0.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RewardModelConfig(batch_size=0)


def test_training_fits_toy_pairs_and_is_seeded(tiny_gpt2_lm: Any) -> None:
    cfg = RewardModelConfig(lr=3e-3, epochs=8, batch_size=2, seed=3)

    def run() -> tuple[list[dict[str, float]], float]:
        torch.manual_seed(0)
        rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
        trainer = RewardModelTrainer(rm, PAIRS, PAIRS, cfg, device="cpu", progress_bar=False)
        history = trainer.learn()
        return history, pairwise_accuracy(rm, PAIRS)

    (history, acc), (again, _) = run(), run()
    assert [set(h) for h in history[:2]] == [
        {"epoch", "val_loss", "val_acc", "seconds"},
        {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"},
    ]
    assert len(history) == cfg.epochs + 1
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert acc == history[-1]["val_acc"] == 1.0
    assert [h["val_loss"] for h in again] == [h["val_loss"] for h in history]


def test_learn_in_pieces_equals_learn_at_once(tiny_gpt2_lm: Any) -> None:
    cfg = RewardModelConfig(lr=3e-3, epochs=3, batch_size=3, seed=1)  # 2 updates an epoch

    def trainer() -> RewardModelTrainer:
        torch.manual_seed(0)
        rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
        return RewardModelTrainer(rm, PAIRS, PAIRS, cfg, device="cpu", progress_bar=False)

    whole = trainer()
    whole.learn()
    pieces = trainer()  # after whole's run: dropout draws from the global RNG, seeded in trainer()
    assert [len(pieces.learn(n)) for n in (1, 2, 3)] == [1, 1, 2]  # rows at epoch ends only
    assert pieces.step == whole.step == cfg.epochs * 2
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(pieces.history) == strip(whole.history)
    for a, b in zip(whole.model.parameters(), pieces.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_non_finite_loss_raises_naming_the_update(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    with torch.no_grad():
        rm.head.bias.fill_(float("inf"))  # r_w - r_l = inf - inf = nan
    trainer = RewardModelTrainer(
        rm, PAIRS, None, RewardModelConfig(batch_size=2), device="cpu", progress_bar=False
    )
    with pytest.raises(FloatingPointError, match="at update 0"):
        trainer.learn()


def review_pairs(lm: Any, split: str, n_prompts: int, seed: int) -> list[PreferencePair]:
    """The reviews set-up of ``experiments/train_reward_model.py``: VADER is the gold reward."""
    prompts = list(tasks.load("reviews", split=split).prompts[:n_prompts])
    return synthetic_preferences(lm, prompts, make("sentiment"), seed=seed)


@pytest.mark.slow
def test_reward_model_learns_the_hidden_gold_preferences(embedded_lm: Any) -> None:
    start = time.perf_counter()
    train = review_pairs(embedded_lm, "train", n_prompts=240, seed=0)
    val = review_pairs(embedded_lm, "validation", n_prompts=80, seed=1)
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(embedded_lm, device="cpu")
    trainer = RewardModelTrainer(
        rm, train, val, RewardModelConfig(epochs=2), device="cpu", progress_bar=False
    )
    history = trainer.learn()
    assert history[0]["val_acc"] < 0.7  # the untrained head is near chance
    elapsed = time.perf_counter() - start
    assert history[-1]["val_acc"] >= 0.85, (len(train), len(val), elapsed, history)


# ---------------------------------------------------------------------------- the other forms

RANKINGS = [
    Ranking("the movie was", ("great", "good", "bad", "awful"), (0, 1, 2, 3)),
    Ranking("this film is", ("bad", "very good", "good"), (2, 0, 1)),  # K = 3: padded to 4
    Ranking("the plot", ("is great", "is bad"), (0, 1)),
]
RATINGS = [
    Rating("the movie was", "great", 5),
    Rating("the movie was", "bad", 1),
    Rating("this film is", "good", 4),
    Rating("the plot", "is bad", 2),
    Rating("i", "loved it", 5),
]
THUMBS = [
    Thumb("the movie was", "great", True),
    Thumb("the movie was", "awful", False),
    Thumb("this film is", "good", True),
    Thumb("i", "hated it", False),
]
FORMS: dict[str, list[Any]] = {
    "bradley_terry": PAIRS,
    "plackett_luce": RANKINGS,
    "regression": RATINGS,
    "ordinal": RATINGS,
    "logistic": THUMBS,
}


def trainer_for(lm: Any, loss: str, **config: Any) -> RewardModelTrainer:
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(lm, device="cpu")
    cfg = RewardModelConfig(loss=loss, **config)  # type: ignore[arg-type]
    return RewardModelTrainer(rm, FORMS[loss], FORMS[loss], cfg, device="cpu", progress_bar=False)


def loss_by_hand(rm: RewardModel, loss: str, theta: Tensor | None) -> Tensor:
    """feedback_losses on scores from rm.score(texts), arranged by hand (not by the trainer)."""
    data = FORMS[loss]
    if loss == "bradley_terry":
        r = rm.score(
            [p.prompt for p in data] * 2, [p.chosen for p in data] + [p.rejected for p in data]
        )
        r_w, r_l = torch.from_numpy(r).chunk(2)
        return bradley_terry_loss(r_w, r_l)
    if loss == "plackett_luce":
        scores, mask = torch.zeros(len(data), 4), torch.zeros(len(data), 4)
        for i, ranking in enumerate(data):
            best_first = ranking_order(ranking)
            r = rm.score([ranking.prompt] * len(best_first), best_first)
            scores[i, : len(r)], mask[i, : len(r)] = torch.from_numpy(r), 1
        return plackett_luce_loss(scores, mask)
    r = torch.from_numpy(rm.score([d.prompt for d in data], [d.completion for d in data]))
    if loss == "logistic":
        return thumbs_loss(r, torch.tensor([d.up for d in data]))
    ratings = torch.tensor([d.rating for d in data])
    if loss == "regression":
        return regression_loss(r, 2 * (ratings - 1) / 4 - 1)
    assert theta is not None
    return ordinal_loss(r, (ratings - 1).long(), theta)


@pytest.mark.parametrize("loss", list(FORMS))
def test_each_forms_loss_is_feedback_losses_on_the_scored_texts(
    tiny_gpt2_lm: Any, loss: str
) -> None:
    trainer = trainer_for(tiny_gpt2_lm, loss, lr=1e-2, batch_size=2, epochs=1)
    trainer.learn()  # off the initial head, and θ moved
    theta = trainer.thresholds()
    assert (theta is None) == (loss != "ordinal")
    value, _ = trainer.evaluate()  # the trainer's own rows, items and targets, in eval mode
    with torch.no_grad():
        want = loss_by_hand(trainer.model, loss, theta)
    assert_close(torch.tensor(value), want.float(), rtol=1e-5, atol=1e-6)


def test_ordinal_thresholds_start_spread_and_stay_increasing(tiny_gpt2_lm: Any) -> None:
    trainer = trainer_for(tiny_gpt2_lm, "ordinal", lr=0.5, batch_size=2, epochs=3)
    start = trainer.thresholds()
    assert start is not None
    assert_close(start.detach(), torch.tensor([-2.0, -2 / 3, 2 / 3, 2.0]))  # C = 5 classes
    trainer.learn()  # big steps: the softplus gaps keep the order whatever the update
    theta = trainer.thresholds()
    assert theta is not None
    assert not torch.equal(theta, start)
    assert (theta.diff() > 0).all()


def test_accuracy_of_each_form_by_hand() -> None:
    r = torch.tensor([[2.0, 1.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    # list 0 orders (0,1) right, (0,2) wrong, (1,2) wrong; list 1 ties (0,1): 1/2.
    assert HITS["plackett_luce"](r, valid, torch.zeros(2)) == (1.5, 4.0)
    s, ratings = torch.tensor([[0.5], [0.1], [0.1], [-1.0]]), torch.tensor([5.0, 3.0, 4.0, 3.0])
    # differently rated pairs: (5,3) twice and (5,4) right, (4,3) once tied (1/2), once right
    assert HITS["ordinal"](s, torch.ones(4, 1, dtype=torch.bool), ratings) == (4.5, 5.0)
    thumbs = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert HITS["logistic"](torch.tensor([[0.3], [0.2], [0.0], [-1.0]]), s > 0, thumbs) == (
        2.5,
        4.0,
    )


def test_a_ranking_of_two_trains_as_a_pair_step_for_step(tiny_gpt2_lm: Any) -> None:
    """Plackett-Luce on K = 2 is Bradley-Terry: the same gradient from the same weights, and two
    trainers (same seed) that agree update after update."""
    cfg = RewardModelConfig(lr=3e-3, epochs=3, batch_size=3, seed=2)
    as_rankings = [Ranking(p.prompt, (p.chosen, p.rejected), (0, 1)) for p in PAIRS]

    def trainer(data: list[Any], loss: str) -> RewardModelTrainer:
        torch.manual_seed(0)  # the head's init
        rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
        return RewardModelTrainer(rm, data, data, replace(cfg, loss=loss), device="cpu",  # type: ignore[arg-type]
                                  progress_bar=False)  # fmt: skip

    bt, pl = trainer(PAIRS, "bradley_terry"), trainer(as_rankings, "plackett_luce")
    for t in (bt, pl):  # one batch's loss and gradient, in eval mode (no dropout)
        t.model.eval()
        ids, mask, _, valid = t.train_data.rows(torch.tensor([2, 0, 3]))
        r = t.model(ids, mask).view(2, 3).T  # (b, K)
        LOSSES[t.config.loss](r, valid, torch.zeros(3), None).backward()
        t.model.train()
    for a, b in zip(bt.model.parameters(), pl.model.parameters(), strict=True):
        assert a.grad is not None
        assert b.grad is not None
        assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)  # float32 rounding of two formulas
    for t in (bt, pl):
        t.optimizer.zero_grad()
        torch.manual_seed(1)  # dropout's masks: the same draws in both runs
        t.learn()
    assert len(bt.history) == len(pl.history) == 4
    for a, b in zip(bt.history, pl.history, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - {"seconds"}:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # Adam turns the rounding noise of near-zero gradients into whole steps of a few weights, so
    # after training the models are compared as functions, their rewards, to that noise.
    prompts = [p.prompt for p in PAIRS] * 2
    texts = [p.chosen for p in PAIRS] + [p.rejected for p in PAIRS]
    assert_close(bt.model.score(prompts, texts), pl.model.score(prompts, texts), rtol=0, atol=1e-2)


@pytest.mark.parametrize("loss", list(FORMS))
def test_each_form_saves_a_reward_that_rewards_make_loads(
    tiny_gpt2_lm: Any, loss: str, tmp_path: Path
) -> None:
    trainer = trainer_for(tiny_gpt2_lm, loss, lr=1e-2, batch_size=2, epochs=1)
    trainer.learn()
    trainer.save(tmp_path / "ckpt")  # the checkpoint's reward_model/ is a RewardModel folder
    reward = make("reward_model", model=str(tmp_path / "ckpt" / "reward_model"), device="cpu")
    prompts, texts = ["the movie was", "a dog", "i"], ["great", "plays in the park", "hated it"]
    assert_close(reward(prompts, texts), trainer.model.score(prompts, texts), rtol=0, atol=1e-6)
    again = RewardModelTrainer.load(tmp_path / "ckpt", device="cpu", progress_bar=False)
    assert again.config.loss == loss
    assert again.evaluate() == pytest.approx(trainer.evaluate(), abs=1e-6)


def test_an_env_pays_a_rating_reward_model(tiny_gpt2_lm: Any) -> None:
    import gymnasium as gym

    trainer = trainer_for(tiny_gpt2_lm, "ordinal", lr=1e-2, batch_size=2, epochs=1)
    trainer.learn()
    reward = trainer.model.as_reward()
    env = gym.make("TextGen-v0", model=tiny_gpt2_lm, task=Task.from_list(["the movie was"]),
                   reward=reward, max_new_tokens=3)  # fmt: skip
    env.reset(seed=0)
    total, done, info = 0.0, False, {}
    while not done:
        _, r, terminated, truncated, info = env.step(int(env.action_space.sample()))
        total += float(r)
        done = terminated or truncated
    assert total == pytest.approx(float(reward([info["prompt"]], [info["text"]])[0]), abs=1e-6)


@pytest.mark.parametrize(
    ("loss", "data", "error", "match"),
    [
        ("plackett_luce", PAIRS, TypeError, r"trains on Ranking records, but record 0 is a Pref"),
        ("logistic", RATINGS, TypeError, r"Thumb -> 'logistic'"),
        ("plackett_luce", [Ranking("x", ("good", "bad", "great"), (0, 1, 1))], ValueError,
         r"ranking 0: ranks \[0, 1, 1\] hold a tie"),
        ("regression", [Rating("x", "good", 4), Rating("x", "bad", 2, 0, 10)], ValueError,
         r"2 scales"),
        ("ordinal", [Rating("x", "good", 4.5)], ValueError, r"whole steps.*use loss='regression'"),
        ("ordinal", [], ValueError, "no feedback records"),
    ],
)  # fmt: skip
def test_bad_feedback_is_refused_naming_the_fix(
    tiny_gpt2_lm: Any, loss: str, data: list[Any], error: type, match: str
) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    with pytest.raises(error, match=match):
        RewardModelTrainer(rm, data, None, RewardModelConfig(loss=loss), device="cpu")  # type: ignore[arg-type]


def test_config_and_batches_name_the_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss 'pairwise'"):
        RewardModelConfig(loss="pairwise")  # type: ignore[arg-type]


def test_a_pair_batch_only_trains_bradley_terry(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    batch = rm.tokenize_pairs(PAIRS)  # the pairs' own batch, as before the other forms
    assert pairwise_accuracy(rm, batch) == pairwise_accuracy(rm, PAIRS)
    assert tokenize_feedback(rm, batch).items.tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    with pytest.raises(TypeError, match="PreferenceBatch holds pairs"):
        tokenize_feedback(rm, rm.tokenize_pairs(PAIRS), "logistic")


@pytest.fixture(scope="module")
def gold_feedback(embedded_lm: Any) -> dict[str, Any]:
    """240 judgments of each form from one simulated person (VADER behind logistic noise 0.1) on
    the embedded model's review samples, and held-out pairs ordered by VADER itself."""
    import numpy as np

    from textgym.decoding import generate
    from textgym.feedback import Annotator

    gold = make("sentiment")
    prompts = list(tasks.load("reviews", split="train").prompts[:240])
    out = generate(embedded_lm, [p for p in prompts for _ in range(4)], max_new_tokens=16,
                   do_sample=True, generator=torch.Generator().manual_seed(0))  # fmt: skip
    texts = [list(out.texts[i : i + 4]) for i in range(0, len(out.texts), 4)]
    keep = [i for i, ts in enumerate(texts) if all(t.strip() for t in ts)]
    prompts, texts = [prompts[i] for i in keep], [texts[i] for i in keep]
    first = [ts[0] for ts in texts]
    person, rng = Annotator(gold, noise=0.1), np.random.default_rng(0)
    ratings = person.rate(prompts, first, rng)
    val_prompts = list(tasks.load("reviews", split="validation").prompts[:48])
    return {
        "bradley_terry": person.compare(prompts, first, [ts[1] for ts in texts], rng),
        "plackett_luce": person.rank(prompts[: len(prompts) // 3], texts[: len(prompts) // 3], rng),
        "regression": ratings,
        "ordinal": ratings,
        "logistic": person.thumb(prompts, first, rng),
        "held_out": synthetic_preferences(
            embedded_lm, val_prompts, gold, k=4, max_new_tokens=16, seed=1
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(FORMS))
def test_each_form_learns_the_hidden_gold_preferences(
    embedded_lm: Any, gold_feedback: dict[str, Any], loss: str
) -> None:
    """The same 240 judgments (a ranking of 4 counted as 3) give each form's reward model a
    held-out gold accuracy 0.08 above the same seeded model untrained (measured: 0.69-0.78 against
    0.54)."""
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(embedded_lm, device="cpu")
    held_out = gold_feedback["held_out"]
    baseline = pairwise_accuracy(rm, held_out)
    config = RewardModelConfig(loss=loss, lr=1e-3, epochs=2, batch_size=16)  # type: ignore[arg-type]
    trainer = RewardModelTrainer(rm, gold_feedback[loss], None, config, device="cpu",
                                 progress_bar=False)  # fmt: skip
    trainer.learn()
    accuracy = pairwise_accuracy(rm, held_out)
    assert accuracy >= baseline + 0.08, (loss, baseline, accuracy, len(held_out))
