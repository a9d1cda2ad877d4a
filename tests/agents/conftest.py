"""Fixtures of the agent tests."""

from __future__ import annotations

import pytest

from textgym import LanguageModel


@pytest.fixture
def lm(tiny_gpt2_dir: str) -> LanguageModel:
    """A fresh tiny random GPT-2 policy (each test trains its own copy)."""
    return LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
