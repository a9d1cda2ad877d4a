"""The benchmark and the shared evaluation: a minimal benchmark run writes its tables, and a
rerun resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from textgym import benchmark
from textgym.evaluation import distinct_n


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    return benchmark


def test_distinct_n() -> None:
    assert distinct_n(["a b a b"], 1) == pytest.approx(0.5)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a", ""], 2) == 0.0


def test_benchmark_tables_and_resume(bench, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = bench.parse(
        [
            "--quick",
            "--agents",
            "reinforce",
            "--tasks",
            "reverse",
            "--seeds",
            "1",
            "--rl-updates",
            "2",
            "--test-prompts",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    cfg = bench.replace(cfg, num_envs=4, max_new_tokens=8)
    bench.main_with(cfg)
    cells = list((tmp_path / "cells").glob("*.json"))
    assert [c.name for c in cells] == ["reinforce__reverse__0.json"]
    cell = json.loads(cells[0].read_text())
    for m in (
        "reward",
        "bleu",
        "chrf",
        "rougeL",
        "meteor",
        "cider",
        "sentiment",
        "ppl_ref",
        "kl",
        "distinct1",
        "distinct2",
        "length",
    ):
        assert m in cell["metrics"], m
    with open(tmp_path / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["agent"], r["task"]) for r in rows] == [("reinforce", "reverse")]
    assert float(rows[0]["length"]) > 0
    md = (tmp_path / "benchmark.md").read_text()
    assert "| reinforce |" in md
    assert "### reverse" in md
    assert (tmp_path / "benchmark_reward.png").exists()

    # Resume: the finished cell is loaded, not trained again.
    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(bench, "run_cell", fail)
    records = bench.run(cfg, progress=False)
    assert len(records) == 1
    assert records[0]["metrics"] == cell["metrics"]


@pytest.mark.parametrize("agent", ["gail", "dagger", "bc", "dpo"])
def test_benchmark_agent_cell(bench, agent: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each imitation/preference agent trains a (tiny) cell and moves the policy off the start."""
    cfg = bench.replace(
        bench.BenchConfig.quick(),
        agents=(agent,),
        tasks=("reverse",),
        seeds=1,
        num_envs=4,
        max_new_tokens=8,
        rl_updates=2,
        bc_steps=2,
        dpo_updates=2,
        dpo_prompts=4,
        dagger_iterations=1,
        test_prompts=4,
        out=str(tmp_path),
    )
    records = bench.run(cfg, progress=False)
    assert [(r["agent"], r["task"]) for r in records] == [(agent, "reverse")]
    # Trained: π_θ is no longer π_ref (an untrained policy's k1 estimate is float noise, ~1e-7).
    assert abs(records[0]["metrics"]["kl"]) > 1e-3
