"""bench_rewards' verdicts: neural rewards against the limit of batching, the rest against 1x."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[1] / "experiments" / "bench_rewards.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rewards", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_rewards"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_neural_ratio_is_read_against_its_limit(bench: ModuleType) -> None:
    # loop: 20 ms per sample; batched: 10 ms per sample of which 8 ms in the forward. Without the
    # 2 ms outside the forward the ratio would be 20 / 8 = 2.5: the limit; 2 is 0.8 of it.
    row = bench.Row("model", True, batched=100.0, loop=50.0, batched_forward=0.8, loop_forward=0.5)
    assert row.ratio == pytest.approx(2.0)
    assert row.limit == pytest.approx(2.5)
    assert row.attained == pytest.approx(0.8)
    assert row.verdict == "yes"
    slow = bench.Row("model", True, batched=100.0, loop=50.0, batched_forward=0.5)
    assert slow.attained == pytest.approx(0.5)
    assert slow.verdict == "NO"  # half of the batched call is outside the model


def test_a_non_neural_ratio_is_read_against_1x(bench: ModuleType) -> None:
    assert bench.Row("bleu", False, batched=99.0, loop=100.0).verdict == "~"  # timing noise
    assert bench.Row("bleu", False, batched=90.0, loop=100.0).verdict == "NO"
    row = bench.Row("bleu", False, batched=150.0, loop=100.0)
    assert row.limit is None
    assert row.verdict == "yes"
