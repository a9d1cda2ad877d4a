"""Reward modelling: the Bradley-Terry loss, the config, and RewardModelTrainer.

Fast tests train r_φ on the tiny random GPT-2 of ``tests/conftest.py``; the slow test trains it on
the embedded model's review samples labelled by VADER and checks held-out pairwise accuracy. The
resume test over every agent (``test_checkpoints.py``) covers the trainer's checkpoints.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch
from textgym.agents import RewardModelConfig, RewardModelTrainer
from textgym.agents.reward_modeling import bradley_terry_loss, pairwise_accuracy
from textgym.rewards import make
from textgym.rewards.reward_model import RewardModel
from torch.testing import assert_close

from textgym import tasks
from textgym.pair_sampling import synthetic_preferences
from textgym.preference import PreferencePair

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
