"""Interrupted-then-resumed training equals the uninterrupted run, bit for bit on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from textgym.agents import PPO, REINFORCE, PPOConfig, REINFORCEConfig
from toy import good_count, make_env

from textgym import LanguageModel
from textgym.rollout import Sampling


def good_count_short(prompt: str, completion: str) -> float:
    """ "good" counts, and every word costs 0.1: a reward that also moves the length."""
    return good_count(prompt, completion) - 0.1 * len(completion.split())


def without_timings(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in rows]


CASES = [
    (
        PPO,
        PPOConfig(
            n_minibatches=2,
            n_epochs=2,
            lr=1e-3,
            kl_target=1.0,
            beta=0.1,
            sampling=Sampling(temperature=0.9, top_k=20),
        ),
    ),
    (REINFORCE, REINFORCEConfig(baseline="moving_average", beta=0.05, lr=1e-3)),
    (REINFORCE, REINFORCEConfig(baseline="rloo", rloo_k=4, lr=1e-3)),
]


@pytest.mark.parametrize(
    ("agent_cls", "config"), CASES, ids=["ppo", "reinforce-ma", "reinforce-rloo"]
)
def test_resume_equals_uninterrupted_run(
    agent_cls: Any, config: Any, tiny_gpt2_dir: str, tmp_path: Path
) -> None:
    def fresh() -> Any:
        lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
        return agent_cls(
            lm, make_env(lm, reward=good_count_short), config=config, progress_bar=False
        )

    straight = fresh()
    straight.learn(4)

    first = fresh()
    first.learn(2)
    first.save(tmp_path / "ckpt")
    del first
    lm_dir = tmp_path / "ckpt" / "policy"
    resumed = agent_cls.load(
        tmp_path / "ckpt",
        make_env(LanguageModel.from_pretrained(lm_dir, device="cpu"), reward=good_count_short),
        device="cpu",
        progress_bar=False,
    )
    assert resumed.step == 2
    resumed.learn(2)

    assert without_timings(resumed.history) == without_timings(straight.history)
    for (name, a), b in zip(
        straight.trainable.named_parameters(), resumed.trainable.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    if hasattr(straight, "kl_ctl"):
        assert straight.kl_ctl.value == resumed.kl_ctl.value
