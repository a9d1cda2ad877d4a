"""KTO: rows and labels, the config, the loss at the start, learning the thumbs' direction, and
(slow) learning from thumbs labelled by a gold reward on the embedded model."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from textgym.agents import KTO, KTOConfig
from textgym.agents.kto import as_rows

from textgym import LanguageModel
from textgym.feedback import Thumb

THUMBS = [
    Thumb("the movie was", " great and i loved it", True),
    Thumb("the movie was", " bad", False),
    Thumb("the plot", " is very good", True),
    Thumb("the plot", " is awful and bad", False),
    Thumb("a dog", " plays in the park", True),
    Thumb("a dog", " sits", False),
]


def test_rows_pair_each_completion_with_the_next_rows_for_z0() -> None:
    rows, labels = as_rows(THUMBS)
    assert [(r.prompt, r.chosen, r.rejected) for r in rows[:2]] == [
        ("the movie was", " great and i loved it", " bad"),
        ("the movie was", " bad", " is very good"),
    ]
    assert rows[-1].rejected == THUMBS[0].completion  # wraps around
    assert labels.tolist() == [True, False] * 3
    with pytest.raises(ValueError, match="at least 2"):
        as_rows(THUMBS[:1])
    with pytest.raises(TypeError, match="Thumb records"):
        as_rows([("x", "y", True)] * 2)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beta": 0.0}, "beta"), ({"batch_size": 1}, "batch_size"),
     ({"undesirable_weight": -1.0}, "undesirable_weight"), ({"lr": "1e-4"}, "KTOConfig.lr")],
)  # fmt: skip
def test_config_is_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        KTOConfig(**kwargs)


def test_first_loss_is_half_the_weights_and_training_separates_the_thumbs(
    tiny_gpt2_dir: str,
) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    cfg = KTOConfig(batch_size=6, lr=1e-2, undesirable_weight=1.5)
    agent = KTO(lm, data=THUMBS, config=cfg, progress_bar=False)
    first = agent.learn(1)[0]
    # π_θ = π_ref at the first update: h = z_0 = 0, so each example loses λ_y·(1 - σ(0)).
    assert first["loss"] == pytest.approx((3 * 1.0 + 3 * 1.5) / 2 / 6, abs=1e-4)
    assert first["z0"] == pytest.approx(0.0, abs=1e-4)
    last = agent.learn(15)[-1]
    assert last["reward_desirable"] > 0 > last["reward_undesirable"]
    assert last["accuracy"] == 1.0
    assert math.isfinite(last["loss"])


def test_eval_terms_and_tokenized_rows_need_labels(tiny_gpt2_dir: str) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    agent = KTO(lm, data=THUMBS, eval_data=THUMBS[:4], config=KTOConfig(eval_every=1),
                progress_bar=False)  # fmt: skip
    row = agent.learn(1)[0]
    assert "eval_loss" in row
    assert agent.evaluate()["loss"] == pytest.approx(row["eval_loss"], rel=0.5)
    with pytest.raises(ValueError, match="need their labels"):
        KTO(lm, data=agent.data, progress_bar=False)


@pytest.mark.slow
def test_kto_on_gold_labelled_thumbs_raises_held_out_sentiment() -> None:
    """Thumbs from a hidden gold reward: the embedded model's review samples, up when VADER
    scores them above the batch median. KTO then raises the gold reward of fresh samples."""
    import gymnasium as gym
    from textgym.rewards import make

    from textgym import tasks
    from textgym.decoding import generate
    from textgym.rollout import evaluate_policy

    lm = LanguageModel.from_pretrained(device="cpu")
    prompts = list(tasks.load("reviews", "train").prompts[:256])
    out = generate(lm, prompts, max_new_tokens=16, do_sample=True,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    gold = make("sentiment")(prompts, list(out.texts))
    cut = float(torch.tensor(gold).median())
    thumbs = [Thumb(p, y, bool(g > cut)) for p, y, g in zip(prompts, out.texts, gold, strict=True)
              if y.strip()]  # fmt: skip
    held_out = gym.make_vec("TextGen-v0", num_envs=64, model=lm, task="reviews",
                            split="validation", reward="sentiment", max_new_tokens=16)  # fmt: skip
    before = evaluate_policy(lm, held_out, seed=1)
    KTO(lm, data=thumbs, config=KTOConfig(lr=1e-4, batch_size=16), progress_bar=False).learn(60)
    after = evaluate_policy(lm, held_out, seed=1)
    assert after["reward"] > before["reward"] + 0.05, (before, after)
