"""Build the data of the dynamic-expert tasks: ``data/target_sum.jsonl``, ``data/grid_nav.jsonl``.

Usage::

    python -m textgym.assets.build_dynamic                       # the shipped files
    python -m textgym.assets.build_dynamic --out /tmp/data       # writes /tmp/data/*.jsonl
    python -m textgym.assets.build_dynamic --train 5000 --max-length 15 --out /tmp/big

Each split holds equally many prompts of every optimal solution length in
[``min_length``, ``max_length``] (the difficulty / horizon knob), in a shuffled order; a prompt
appears once over all splits. One JSON object a line::

    {"prompt": str, "references": [the expert's solution from the start], "split": str,
     "optimal_length": int}

so that a study can bucket prompts by horizon. Every draw comes from ``random.Random`` seeded
with ``"<task>-<seed>"``: the same seed writes the same bytes. The prompt formats, puzzles and
solvers are those of ``textgym.dynamic_tasks`` (pure Python, no torch); this script draws the
prompts and writes the files.

* target_sum: y = start - target uniform among the values whose shortest plan has the wanted
  length (|y| <= 99), then the start uniform among those keeping start and target in 0..99.
* grid_nav: 5x5 grids with 4-9 walls placed uniformly, redrawn until one has a pair of open
  cells the wanted number of moves apart; then one such (start, goal) pair uniformly.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textgym.assets import DATA_DIR
from textgym.dynamic_tasks import (
    GRID_NAV_PROMPT,
    STEPS,
    TARGET_SUM_PROMPT,
    grid_distances,
    parse,
    sum_distances,
)

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DynamicDataConfig:
    """Sizes and seed of one build of the dynamic tasks' data."""

    seed: int = 0
    """Seeds every draw (``random.Random(f"{task}-{seed}")``)."""
    train: int = 600
    """Prompts in the train split (the shipped files stay small: tests/test_assets.py)."""
    validation: int = 100
    """Prompts in the validation split."""
    test: int = 500
    """Prompts in the test split."""
    min_length: int = 3
    """Shortest optimal solution (actions, EOS excluded)."""
    max_length: int = 12
    """Longest optimal solution."""

    def __post_init__(self) -> None:
        for split in SPLITS:
            if getattr(self, split) < 0:
                raise ValueError(f"{split} must be >= 0, got {getattr(self, split)}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(
                f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}"
            )


def target_sum_prompt(rng: random.Random, length: int, low: int = 0, high: int = 99) -> str:
    """A target_sum prompt (the built-in steps) whose shortest plan has ``length`` steps."""
    values = tuple(v for _, v in STEPS)
    span = high - low
    ys = sorted(y for y, d in sum_distances(values, max(64, span)).items() if d == length)
    ys = [y for y in ys if abs(y) <= span]
    if not ys:
        raise ValueError(f"no start/target pair in [{low}, {high}] needs {length} steps")
    y = ys[rng.randrange(len(ys))]
    start = rng.randint(max(low, low + y), min(high, high + y))
    steps = ", ".join(f"{w} {v:+d}" for w, v in STEPS)
    return TARGET_SUM_PROMPT.format(target=start - y, start=start, steps=steps)


def grid_nav_prompt(
    rng: random.Random, length: int, size: int = 5, walls: tuple[int, int] = (4, 9)
) -> str:
    """A grid_nav prompt whose shortest path from ``@`` to ``*`` has ``length`` moves."""
    cells = [(r, c) for r in range(size) for c in range(size)]
    for _ in range(100_000):
        blocked = set(rng.sample(cells, rng.randint(*walls)))
        grid = [["#" if (r, c) in blocked else "." for c in range(size)] for r in range(size)]
        rows = tuple("".join(row) for row in grid)
        pairs = [
            (start, goal)
            for goal in cells
            if goal not in blocked
            for start, d in sorted(grid_distances(rows, goal).items())
            if d == length
        ]
        if pairs:
            (r0, c0), (r1, c1) = pairs[rng.randrange(len(pairs))]
            grid[r0][c0], grid[r1][c1] = "@", "*"
            return GRID_NAV_PROMPT.format(rows="|".join("".join(row) for row in grid))
    raise ValueError(f"no {size}x{size} grid with {walls} walls has a path of {length} moves")


SAMPLERS: dict[str, Callable[[random.Random, int], str]] = {
    "target_sum": target_sum_prompt,
    "grid_nav": grid_nav_prompt,
}
"""Task name -> sampler of a prompt with a given optimal length."""


def records(task: str, cfg: DynamicDataConfig) -> list[dict[str, object]]:
    """The rows of one task's data file, split after split (train, validation, test).

    Args:
        task: ``"target_sum"`` or ``"grid_nav"``.
        cfg: sizes, seed, lengths.

    Returns:
        Rows ``{"prompt", "references", "split", "optimal_length"}``.
    """
    if task not in SAMPLERS:
        raise ValueError(f"unknown dynamic task {task!r}; valid: {sorted(SAMPLERS)}")
    rng = random.Random(f"{task}-{cfg.seed}")
    lengths = list(range(cfg.min_length, cfg.max_length + 1))
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for split in SPLITS:
        n = getattr(cfg, split)
        wanted = [lengths[i % len(lengths)] for i in range(n)]
        rng.shuffle(wanted)
        for k in wanted:
            for _ in range(10_000):
                prompt = SAMPLERS[task](rng, k)
                if prompt not in seen:
                    break
            else:
                raise ValueError(f"{task}: too few distinct prompts of length {k}")
            seen.add(prompt)
            solution = parse(task, prompt).solve()
            assert len(solution) == k, (prompt, solution)
            reference = " " + " ".join(solution)
            rows.append(
                {"prompt": prompt, "references": [reference], "split": split, "optimal_length": k}
            )
    return rows


def write(out_dir: Path, cfg: DynamicDataConfig) -> dict[str, int]:
    """Write ``<task>.jsonl`` of every dynamic task into ``out_dir``; return rows per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for task in SAMPLERS:
        rows = records(task, cfg)
        with (out_dir / f"{task}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        counts[task] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Build the dynamic tasks' data files.")
    defaults = DynamicDataConfig()
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder of the .jsonl files")
    for name in ("seed", "train", "validation", "test", "min_length", "max_length"):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    fields = ("seed", "train", "validation", "test", "min_length", "max_length")
    cfg = DynamicDataConfig(**{k: getattr(args, k) for k in fields})
    for task, n in write(args.out, cfg).items():
        print(f"wrote {n} rows to {args.out / f'{task}.jsonl'}")


if __name__ == "__main__":
    main()
