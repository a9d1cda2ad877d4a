"""The TRL side of the speed benches (skipped without TRL): both trainers run and are timed."""

from __future__ import annotations

import pytest

from textgym import LanguageModel
from textgym.trl_timing import trl_completions_per_s


@pytest.mark.parametrize("trainer", ["rloo", "grpo"])
def test_trl_trainers_are_timed_after_warm_up(trainer: str, tiny_gpt2_dir: str) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    calls: list[int] = []

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        calls.append(len(completions))
        return [float(len(c)) for c in completions]

    per_s = trl_completions_per_s(
        trainer, lm.model, lm.tokenizer, ["the movie", "a dog", "the plot", "i"], reward,  # type: ignore[arg-type]
        batch_size=4, num_generations=2, max_new_tokens=4, beta=0.04, warmup=1, steps=2,
    )  # fmt: skip
    assert per_s is not None
    assert per_s > 0
    assert sum(calls) == 4 * 3  # every step scored its batch: warm-up + 2 timed steps
