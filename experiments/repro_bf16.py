"""Does bf16 mixed precision learn like float32? PPO on the demo task, 3 seeds each.

Protocol (fixed before the runs): the demo's PPO (reviews prompts, VADER sentiment reward,
PPOConfig(lr=3e-4, beta=0.05, n_epochs=2), 32 episodes of 24 tokens a round, 40 updates) from the
embedded model, once with ``compute_dtype=None`` (float32) and once with ``compute_dtype="bf16"``
(autocast; float32 weights and optimizer state), seeds 0, 1, 2. The metric is the mean env reward
of the last 10 updates of each run, and the KL to π_ref over the same updates. The claim holds
when the two 95% bootstrap intervals over seeds overlap and the difference of the means is within
the larger seed standard deviation. Writes ``experiments/results/bf16/`` (summary.json, the curves
as curves.csv and bf16.png).

    python experiments/repro_bf16.py            # ~6 min on 2 CPU cores
    python experiments/repro_bf16.py --quick    # 1 seed, 10 updates
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import gymnasium as gym
import torch
from textgym.agents import PPO, PPOConfig

from textgym import plots
from textgym.lm import LanguageModel
from textgym.provenance import describe
from textgym.stats import summary_row

PRECISIONS = {"fp32": None, "bf16": "bf16"}
LAST = 10


def run(precision: str, seed: int, updates: int) -> list[dict[str, float]]:
    torch.manual_seed(seed)  # the value head's init
    lm = LanguageModel.from_pretrained(device="cpu", compute_dtype=PRECISIONS[precision])
    env = gym.make_vec("TextGen-v0", num_envs=32, model=lm, max_new_tokens=24)
    config = PPOConfig(lr=3e-4, beta=0.05, n_epochs=2, seed=seed)
    return PPO(lm, env, config=config, progress_bar=False).learn(updates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bf16"))
    ns = parser.parse_args()
    seeds, updates = ((0,), 10) if ns.quick else ((0, 1, 2), 40)
    torch.set_num_threads(1)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[list[dict[str, float]]]] = {p: [] for p in PRECISIONS}
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for seed in seeds:
        for precision in PRECISIONS:
            start = time.perf_counter()
            curves[precision].append(run(precision, seed, updates))
            seconds[precision].append(time.perf_counter() - start)
            print(f"# {precision} seed {seed}: {seconds[precision][-1]:.0f} s", flush=True)
    rows = []
    for precision, runs in curves.items():
        last = min(LAST, updates)
        reward = [statistics.fmean(r["reward"] for r in h[-last:]) for h in runs]
        kl = [statistics.fmean(r["kl"] for r in h[-last:]) for h in runs]
        rows.append(summary_row(precision, "reward_last10", reward, seconds=seconds[precision]))
        rows.append(summary_row(precision, "kl_last10", kl))
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["precision", "seed", "update", "reward", "kl"])
        for precision, runs in curves.items():
            for seed, h in zip(seeds, runs, strict=True):
                w.writerows([precision, seed, int(r["update"]), r["reward"], r["kl"]] for r in h)
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for i, (precision, runs) in enumerate(curves.items()):
        for j, h in enumerate(runs):
            ax.plot([r["reward"] for r in h], color=f"C{i}", alpha=0.8,
                    label=precision if j == 0 else None)  # fmt: skip
    ax.set_xlabel("PPO update")
    ax.set_ylabel("mean sentiment reward")
    ax.set_title("PPO on the demo task: float32 vs bf16 autocast (one line a seed)")
    ax.legend()
    plots.save(fig, out / "bf16.png")
    print(f"# {describe()}")
    for r in rows:
        print(f"{r['method']:5} {r['metric']:13} {r['mean']:.3f}  CI95 [{r['ci95'][0]:.3f}, "
              f"{r['ci95'][1]:.3f}]  per seed {[round(v, 3) for v in r['values']]}")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
