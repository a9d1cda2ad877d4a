"""RL on concept-to-sentence (RL4LMs' CommonGen set-up, Ramamurthy et al. 2023, arXiv:2210.01241).

RL4LMs report that on CommonGen, on-policy RL (PPO, and NLPO) trained on a lexical reward raises
the n-gram metrics (BLEU, METEOR, CIDEr, SPICE) over the supervised starting point. Here, at small
scale: the embedded model already writes concept sentences (it was trained on the train split's
references), so it is the supervised starting point; REINFORCE (RLOO, K = 4) and PPO then train on
the task's reward, 0.5 BLEU + 0.5 ROUGE-L against all references (sentence level), with a KL
penalty β = 0.02 to the start. METEOR and CIDEr-D are *not* trained on: whether they move too says
whether the gain is more than metric gaming.

Evaluation: one sampled completion (temperature 1) per test prompt, corpus metrics, mean ± std
over seeds; the gain column is the trained policy minus the starting point on the same prompts
and sampler seed. This reuses ``textgym.benchmark``'s cells (and their resume) with a larger budget.

    python experiments/repro_rl_concepts.py                  # 3 seeds, ~15 min on 2 busy CPU cores
    python experiments/repro_rl_concepts.py --quick          # 2 seeds, 12 updates, PPO lr 3e-4
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from textgym import benchmark, plots

METRICS = (
    "reward",
    "bleu",
    "meteor",
    "cider",
    "rougeL",
    "chrf",
    "kl",
    "ppl_ref",
    "distinct2",
    "length",
)


def config(quick: bool) -> benchmark.BenchConfig:
    cfg = replace(
        benchmark.BenchConfig(),
        agents=("base", "reinforce", "ppo"),
        tasks=("concepts",),
        seeds=3,
        num_envs=16,
        max_new_tokens=20,
        rl_updates=24,
        ppo_lr=5e-5,
        test_prompts=128,
        out="experiments/results/rl_concepts",
    )
    if quick:
        cfg = replace(
            cfg,
            seeds=2,
            num_envs=16,
            rl_updates=12,
            ppo_lr=3e-4,
            test_prompts=96,
            out="experiments/results/rl_concepts_quick",
        )
    return cfg


def table(records: list[dict]) -> str:
    """Mean ± std per agent, and the gain over the starting point (paired by seed)."""
    base = {r["seed"]: r["metrics"] for r in records if r["agent"] == "base"}
    lines = ["| agent | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for agent in ("base", "reinforce", "ppo"):
        recs = [r for r in records if r["agent"] == agent]
        if not recs:
            continue
        cells = []
        for m in METRICS:
            xs = [r["metrics"][m] for r in recs]
            gain = [r["metrics"][m] - base[r["seed"]][m] for r in recs if r["seed"] in base]
            digits = 1 if abs(statistics.mean(xs)) >= 10 else 3
            s = f"{statistics.mean(xs):.{digits}f}"
            if len(xs) > 1:
                s += f" ± {statistics.stdev(xs):.{digits}f}"
            if agent != "base" and gain:
                s += f" ({statistics.mean(gain):+.{digits}f})"
            cells.append(s)
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], out: Path) -> Path:
    """Gain over the starting point per metric (mean ± std over seeds), one bar per agent."""
    plt = plots.pyplot()

    shown = ("bleu", "meteor", "cider", "rougeL", "chrf")
    base = {r["seed"]: r["metrics"] for r in records if r["agent"] == "base"}
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    for j, agent in enumerate(("reinforce", "ppo")):
        recs = [r for r in records if r["agent"] == agent]
        # Relative gain, so BLEU (0-100) and METEOR (0-1) share one axis.
        rel = [
            [(r["metrics"][m] - base[r["seed"]][m]) / abs(base[r["seed"]][m]) * 100 for r in recs]
            for m in shown
        ]
        means = [statistics.mean(x) for x in rel]
        stds = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in rel]
        ax.bar(
            [i + (j - 0.5) * 0.4 for i in range(len(shown))],
            means,
            0.4,
            yerr=stds,
            label=agent,
            capsize=2,
        )
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(range(len(shown)), shown)
    ax.set_ylabel("% change vs. start")
    ax.set_title("concepts: RL gain over the starting model (test split)")
    ax.legend(fontsize=8)
    return plots.save(fig, out.parent / f"{out.name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--out")
    ns = parser.parse_args()
    cfg = config(ns.quick)
    cfg = replace(
        cfg, **{k: v for k, v in {"seeds": ns.seeds, "out": ns.out}.items() if v is not None}
    )
    start = time.perf_counter()
    records = benchmark.run(cfg)
    out = Path(cfg.out)
    md = (
        f"# repro_rl_concepts: {cfg.seeds} seeds, {cfg.rl_updates} updates x {cfg.num_envs} "
        f"episodes, {cfg.test_prompts} test prompts, torch {torch.__version__}, "
        f"{time.perf_counter() - start:.0f} s (cells reused from {out}/cells when present)\n\n"
        + table(records)
    )
    (out.parent / f"{out.name}.md").write_text(md)
    plot(records, out)
    print(md)


if __name__ == "__main__":
    main()
