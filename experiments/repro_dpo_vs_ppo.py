"""DPO vs PPO on the reward-KL frontier (Rafailov et al. 2023, arXiv:2305.18290, Fig. 2 left).

Claim: in controlled sentiment generation (§6.1), with a sentiment classifier as the gold reward,
PPO optimising the gold reward itself and DPO learning from preference pairs labelled by it, DPO's
frontier of gold reward against KL(π_θ‖π_ref) dominates PPO's: more reward at the same KL.

Protocol (fixed before any gold reward of this design was looked at)
---------------------------------------------------------------------
- π_ref: the embedded model (``textgym.DEFAULT_MODEL``) on the ``reviews`` task, completions of
  at most 20 new tokens, temperature 1; every run starts from it.
- Gold r*(x, y): VADER sentiment of the completion, ``textgym.rewards.make("sentiment")``, in
  [0, 1] (0.5 neutral).
- DPO (``textgym.agents.DPO``, Eq. 7, AdamW lr 1e-4, B = 8 pairs an update): pairs from
  ``textgym.pair_sampling.synthetic_preferences``: K = 4 samples of π_ref for each of 400 train
  prompts (drawn per seed), every pair of a prompt's samples with gold margin > 0.1 (about 1,600
  pairs). β ∈ {0.03, 0.1, 0.3, 1}, each evaluated after 8, 12, 16, 20, 26, 33, 40, 50, 65, 85,
  120 and 170 updates.
- PPO (``textgym.agents.PPO``, ``PPOConfig`` defaults otherwise): the gold reward itself with the
  KL-shaped reward r* - β·KL, 32 episodes of train prompts an update; (β, lr) ∈ {0.03, 0.3} x
  {3e-5}, {0.03, 0.1, 0.3} x {1e-4} and {0.03} x {3e-4}, each evaluated after 1, 2, 3, 4, 6, 8,
  11, 14, 18 and 24 updates (dense early, where PPO's KL moves fastest).
- The sweeps come from a one-seed pilot (seed 0) that printed the KL of each checkpoint only, no
  gold reward: DPO's KL goes from 0.1 to 1 in its first ~20 updates whatever β (Adam's first
  steps do not depend on β), reaches 10-80 after 80-300 updates for β ≤ 0.1, 3-15 for β = 0.3,
  and stays at 0.15-6 for β = 1; PPO at lr 3e-5 (β = 0.03) covers KL 0.03-7 in 32 updates, at
  lr 1e-4 0.25-16 (saturating), at lr 3e-4 (an earlier one-seed run) 17-35 after 4 updates. The
  grid is meant to put ≥ 4 points per method and seed in each decade 0.1-1, 1-10 and 10-100. It
  was then trimmed for time (300 -> 200 evaluation prompts, 8 -> 6 PPO runs, 15 -> 12 DPO
  evaluations) after the first full run's first minutes, from their KL and run times only.
  Known beforehand: the earlier one-seed version of this study (DPO at KL 0.4-11, PPO above 20).
- Evaluation of a checkpoint: one sampled completion (temperature 1) for each of the first 200
  validation prompts, sampler seed 4321 + seed (the same stream for every checkpoint of a seed,
  DPO's and PPO's alike); the point is (KL, gold) with KL the mean over prompts of the sequence-
  level k1 estimate Σ_t log π_θ(a_t|s_t) - log π_ref(a_t|s_t) (``sample_with_kl``) and gold the
  mean r*. The start (π_ref) is evaluated once per seed.
- Seeds 0, 1, 2: a seed draws the pair prompts and pairs, DPO's data order, PPO's rollouts and
  minibatches, and the evaluation sampler.
- Comparison at matched KL: the points of a method (all its settings and checkpoints) are binned
  by KL, decades [0.01, 0.1), [0.1, 1), [1, 10), [10, 100) (primary) and half decades
  (secondary, finer match); per seed and bin a method's frontier value is its best gold reward in
  the bin (the upper envelope). Each is reported over seeds (mean, 95% percentile bootstrap CI,
  ``textgym.stats``), with the points per seed and the KL of the best point; where both methods
  have points in every seed, the paired difference DPO - PPO by seed (``best_gold_change`` of
  method "DPO - PPO"), and each method's gain over the start (``best_gold_change`` of its own
  name). A bin where the difference's CI lies above 0 is DPO's; below 0, PPO's; else a tie.
- Verdict: "reproduced" when DPO wins every decade bin both reach, "partly" when it wins some,
  "not reproduced" when it wins none.

Caveats: the best of more points is higher by chance (evaluation noise, about 0.02 in gold), so
the points per bin are printed beside each value; with 3 seeds the percentile bootstrap interval is
narrow (it undercovers); DPO's label budget (400 prompts x 4 samples) and PPO's (32 episodes an
update) are not matched, as in the paper.

    python experiments/repro_dpo_vs_ppo.py           # 3 seeds: 22 min CPU, 40 min on a busy box
    python experiments/repro_dpo_vs_ppo.py --quick   # 2 seeds, a smaller grid: 3 min CPU, 5 min

Results: ``experiments/results/dpo_vs_ppo/`` (``--quick``: its ``quick/`` folder): summary.json,
summary.md, dpo_vs_ppo.png, and ``runs/``, one JSON per (method, setting, seed) with its points,
reused when present with the same config, so an interrupted run loses at most the run it was in.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from textgym.agents import DPO, PPO, DPOConfig, PPOConfig
from textgym.rewards import make

import textgym
from textgym import plots, provenance, tasks
from textgym.evaluation import sample_with_kl, task_env
from textgym.lm import LanguageModel
from textgym.pair_sampling import synthetic_preferences
from textgym.records import write_json
from textgym.stats import paired_change_row, study_row, write_summary
from textgym.training import frozen_copy

STUDY = "dpo_vs_ppo"
METHODS = ("DPO", "PPO")
DECADES = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Bin edges of the primary comparison (KL in nats per sequence)."""
GOLD = "sentiment"
"""The gold reward's name for ``textgym.rewards.make`` (PPO's reward, the pairs' labeller)."""
HALF_DECADES = tuple(10 ** (k / 2) for k in range(-4, 5))
"""Bin edges of the secondary, finer comparison."""


@dataclass(frozen=True)
class FrontierConfig:
    model: str = textgym.DEFAULT_MODEL
    pair_prompts: int = 400
    """train prompts of DPO's pairs (K samples each), drawn per seed."""
    pair_k: int = 4
    pair_margin: float = 0.1
    """a pair is kept when gold(y_w) - gold(y_l) exceeds this."""
    dpo_betas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    dpo_lr: float = 1e-4
    dpo_batch: int = 8
    dpo_eval_at: tuple[int, ...] = (8, 12, 16, 20, 26, 33, 40, 50, 65, 85, 120, 170)
    ppo_runs: tuple[tuple[float, float], ...] = (
        (0.03, 3e-5),
        (0.3, 3e-5),
        (0.03, 1e-4),
        (0.1, 1e-4),
        (0.3, 1e-4),
        (0.03, 3e-4),
    )
    """(β, learning rate) of each PPO run."""
    ppo_eval_at: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 11, 14, 18, 24)
    num_envs: int = 32
    max_new_tokens: int = 20
    eval_prompts: int = 200
    eval_seed: int = 4321
    """the sampler seed of seed s's evaluations is eval_seed + s."""
    seeds: int = 3
    out: str = "experiments/results/dpo_vs_ppo"
    threads: int = 1


QUICK: dict[str, Any] = {
    "pair_prompts": 200,
    "dpo_betas": (0.1, 1.0),
    "dpo_eval_at": (6, 12, 18, 27, 40, 60, 90),
    "ppo_runs": ((0.1, 3e-5), (0.03, 1e-4)),
    "ppo_eval_at": (1, 2, 4, 8, 12, 16),
    "eval_prompts": 128,
    "seeds": 2,
    "out": "experiments/results/dpo_vs_ppo/quick",
}


# ---------------------------------------------------------------------------- one run's points


def measure(policy: LanguageModel, ref: LanguageModel, cfg: FrontierConfig, seed: int) -> dict:
    """(KL, gold) of one checkpoint on the validation prompts, sampler seed eval_seed + seed."""
    out, kl = sample_with_kl(
        policy,
        ref,
        reward="sentiment",
        n_prompts=cfg.eval_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.eval_seed + seed,
    )
    gold = out.rewards.cpu().numpy()
    return {
        "kl": float(kl.mean()),
        "gold": float(gold.mean()),
        "gold_sem": float(gold.std(ddof=1) / math.sqrt(gold.size)),
    }


def walk(agent: Any, eval_at: Sequence[int], score: Callable[[], dict]) -> list[dict]:
    """Train ``agent`` through ``eval_at`` (update counts), scoring the policy at each."""
    points, done = [], 0
    for u in eval_at:
        agent.learn(u - done)
        done = u
        points.append({"update": u, **score()})
    return points


def train_dpo(cfg: FrontierConfig, pairs: list[Any], beta: float, seed: int) -> list[dict]:
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    agent = DPO(
        policy,
        data=pairs,
        ref=ref,
        config=DPOConfig(beta=beta, lr=cfg.dpo_lr, batch_size=cfg.dpo_batch, seed=seed),
        device="cpu",
        progress_bar=False,
    )
    return walk(agent, cfg.dpo_eval_at, lambda: measure(agent.policy, ref, cfg, seed))


def train_ppo(cfg: FrontierConfig, beta: float, lr: float, seed: int) -> list[dict]:
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    env = task_env(
        policy, "reviews", num_envs=cfg.num_envs, max_new_tokens=cfg.max_new_tokens, reward=GOLD
    )
    agent = PPO(
        policy,
        env,
        config=PPOConfig(lr=lr, beta=beta, seed=seed),
        ref=ref,
        progress_bar=False,
    )
    points = walk(agent, cfg.ppo_eval_at, lambda: measure(agent.policy, ref, cfg, seed))
    env.close()
    return points


def make_pairs(cfg: FrontierConfig, base: LanguageModel, seed: int) -> list[Any]:
    """Gold-labelled pairs of π_ref samples on ``pair_prompts`` train prompts drawn by ``seed``."""
    train = list(tasks.load("reviews", split="train").prompts)
    idx = np.random.default_rng(seed).choice(len(train), size=cfg.pair_prompts, replace=False)
    return synthetic_preferences(
        base,
        [train[i] for i in idx],
        make(GOLD),
        k=cfg.pair_k,
        min_margin=cfg.pair_margin,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
    )


# ---------------------------------------------------------------------------- the run files


def run_key(cfg: FrontierConfig, method: str, setting: str, seed: int) -> dict[str, Any]:
    """Everything a run's points depend on: a saved run is reused only when this matches."""
    key: dict[str, Any] = {
        "method": method,
        "setting": setting,
        "seed": seed,
        "model": Path(cfg.model).name,
        "max_new_tokens": cfg.max_new_tokens,
        "eval_prompts": cfg.eval_prompts,
        "eval_seed": cfg.eval_seed + seed,
    }
    if method == "DPO":
        key |= {
            "pair_prompts": cfg.pair_prompts,
            "pair_k": cfg.pair_k,
            "pair_margin": cfg.pair_margin,
            "lr": cfg.dpo_lr,
            "batch": cfg.dpo_batch,
            "eval_at": list(cfg.dpo_eval_at),
        }
    elif method == "PPO":
        key |= {"num_envs": cfg.num_envs, "eval_at": list(cfg.ppo_eval_at)}
    return key


def run_path(cfg: FrontierConfig, method: str, setting: str, seed: int) -> Path:
    name = f"{method}_{setting}_seed{seed}".replace(" ", "").replace(",", "_").replace("=", "")
    return Path(cfg.out) / "runs" / f"{name}.json"


def load_run(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if data.get("key") == key else None


def save_run(
    path: Path, key: dict[str, Any], points: list[dict], seconds: float, cpu_seconds: float
) -> dict:
    data = {"key": key, "seconds": seconds, "cpu_seconds": cpu_seconds, "points": points}
    write_json(path, data)  # atomic: an interrupted write leaves no half run to resume from
    return data


def settings(cfg: FrontierConfig) -> list[tuple[str, str, dict[str, float]]]:
    """(method, setting name, hyperparameters) of every run of one seed, the start included."""
    out: list[tuple[str, str, dict[str, float]]] = [("start", "π_ref", {})]
    out += [("DPO", f"β={b:g}", {"beta": b}) for b in cfg.dpo_betas]
    out += [("PPO", f"β={b:g}, lr={lr:g}", {"beta": b, "lr": lr}) for b, lr in cfg.ppo_runs]
    return out


def run_seed(cfg: FrontierConfig, seed: int) -> list[dict[str, Any]]:
    """Every run of ``seed``: loaded when saved with the same key, else trained and saved."""
    runs: list[dict[str, Any]] = []
    pairs: list[Any] | None = None
    for method, setting, hp in settings(cfg):
        key = run_key(cfg, method, setting, seed) | hp
        path = run_path(cfg, method, setting, seed)
        data = load_run(path, key)
        if data is None:
            start, cpu = time.perf_counter(), time.process_time()
            torch.manual_seed(seed)
            if method == "start":
                base = LanguageModel.from_pretrained(cfg.model, device="cpu")
                points = [{"update": 0, **measure(base, frozen_copy(base), cfg, seed)}]
            elif method == "DPO":
                if pairs is None:
                    base = LanguageModel.from_pretrained(cfg.model, device="cpu")
                    pairs = make_pairs(cfg, base, seed)
                    print(f"# seed {seed}: {len(pairs)} preference pairs", flush=True)
                points = train_dpo(cfg, pairs, hp["beta"], seed)
            else:
                points = train_ppo(cfg, hp["beta"], hp["lr"], seed)
            data = save_run(
                path, key, points, time.perf_counter() - start, time.process_time() - cpu
            )
            kls = ", ".join(f"{p['kl']:.2f}" for p in points)
            print(
                f"# seed {seed} {method} {setting}: {data['seconds']:.0f} s, KL {kls}", flush=True
            )
        runs.append({"method": method, "setting": setting, "seed": seed, **data})
    return runs


# ---------------------------------------------------------------------------- the comparison


def bin_label(lo: float, hi: float) -> str:
    return f"KL [{lo:.3g}, {hi:.3g})"


def best_in_bins(
    runs: list[dict[str, Any]], method: str, seeds: int, edges: Sequence[float]
) -> list[dict[str, Any]]:
    """Per bin: the best gold of ``method`` in each seed (None where it has no point there), the
    number of its points and the KL of the best one."""
    out = []
    for lo, hi in itertools.pairwise(edges):
        best: list[float | None] = []
        n_points: list[int] = []
        kl_best: list[float | None] = []
        for s in range(seeds):
            pts = [
                p
                for r in runs
                if r["method"] == method and r["seed"] == s
                for p in r["points"]
                if lo <= p["kl"] < hi
            ]
            top = max(pts, key=lambda p: p["gold"]) if pts else None
            best.append(None if top is None else top["gold"])
            kl_best.append(None if top is None else top["kl"])
            n_points.append(len(pts))
        out.append({"lo": lo, "hi": hi, "best": best, "n_points": n_points, "kl_of_best": kl_best})
    return out


def compare(
    cfg: FrontierConfig, runs: list[dict[str, Any]], edges: Sequence[float], grid: str
) -> list[dict[str, Any]]:
    """Rows of one binning: each method's best gold per bin, DPO - PPO and the gains from start."""
    start = [
        next(r for r in runs if r["method"] == "start" and r["seed"] == s)["points"][0]["gold"]
        for s in range(cfg.seeds)
    ]
    per = {m: best_in_bins(runs, m, cfg.seeds, edges) for m in METHODS}
    rows: list[dict[str, Any]] = []
    for i in range(len(edges) - 1):
        setting = bin_label(edges[i], edges[i + 1])
        extra = {"bins": grid, "kl_low": edges[i], "kl_high": edges[i + 1]}
        for m in METHODS:
            b = per[m][i]
            seeds = [s for s, v in enumerate(b["best"]) if v is not None]
            if not seeds:
                continue
            vals = [b["best"][s] for s in seeds]
            rows.append(
                study_row(
                    STUDY,
                    m,
                    setting,
                    "best_gold",
                    vals,
                    seeds=seeds,
                    n_points=b["n_points"],
                    kl_of_best=[b["kl_of_best"][s] for s in seeds],
                    **extra,
                )
            )
            if grid == "decade":
                rows.append(
                    paired_change_row(
                        STUDY,
                        m,
                        setting,
                        "best_gold",
                        vals,
                        [start[s] for s in seeds],
                        seeds=seeds,
                        **extra,
                    )
                )
        both = [
            s
            for s in range(cfg.seeds)
            if per["DPO"][i]["best"][s] is not None and per["PPO"][i]["best"][s] is not None
        ]
        if len(both) == cfg.seeds:
            rows.append(
                paired_change_row(
                    STUDY,
                    "DPO - PPO",
                    setting,
                    "best_gold",
                    [per["DPO"][i]["best"][s] for s in both],
                    [per["PPO"][i]["best"][s] for s in both],
                    seeds=both,
                    **extra,
                )
            )
    return rows


def summarise(cfg: FrontierConfig, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    start = [
        next(r for r in runs if r["method"] == "start" and r["seed"] == s)["points"][0]
        for s in range(cfg.seeds)
    ]
    rows = [
        study_row(STUDY, "π_ref", "start", "gold", [p["gold"] for p in start]),
        study_row(STUDY, "π_ref", "start", "kl", [p["kl"] for p in start]),
    ]
    rows += compare(cfg, runs, DECADES, "decade")
    rows += compare(cfg, runs, HALF_DECADES, "half-decade")
    return rows


def verdict(rows: list[dict[str, Any]], grid: str) -> dict[str, Any]:
    """Which method wins each compared bin of ``grid``, and the overall verdict."""
    winners = {}
    for r in rows:
        if r["method"] == "DPO - PPO" and r["bins"] == grid:
            low, high = r["ci95"]
            winners[r["setting"]] = "DPO" if low > 0 else "PPO" if high < 0 else "tie"
    n_dpo = sum(w == "DPO" for w in winners.values())
    overall = (
        "reproduced"
        if winners and n_dpo == len(winners)
        else "partly"
        if n_dpo
        else "not reproduced"
    )
    return {"bins": winners, "overall": overall}


# ---------------------------------------------------------------------------- reports


def _cell(row: dict[str, Any] | None, digits: int = 3) -> str:
    if row is None:
        return "-"
    low, high = row["ci95"]
    return f"{row['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table(cfg: FrontierConfig, rows: list[dict[str, Any]], grid: str) -> list[str]:
    def find(method: str, setting: str, metric: str) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in rows
                if r["method"] == method
                and r["setting"] == setting
                and r["metric"] == metric
                and r.get("bins") == grid
            ),
            None,
        )

    win = verdict(rows, grid)["bins"]
    lines = [
        "| KL bin | DPO best gold [CI] | DPO points/seed | DPO KL of best | PPO best gold [CI] | "
        "PPO points/seed | PPO KL of best | DPO - PPO [CI] | bin goes to |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    settings_in_order = list(dict.fromkeys(r["setting"] for r in rows if r.get("bins") == grid))
    for setting in settings_in_order:
        cells = [setting]
        for m in METHODS:
            r = find(m, setting, "best_gold")
            n = "-" if r is None else "/".join(str(k) for k in r["n_points"])
            kl = "-" if r is None else f"{statistics.fmean(r['kl_of_best']):.2g}"
            cells += [
                _cell(r) + ("" if r is None or len(r["values"]) == cfg.seeds else " *"),
                n,
                kl,
            ]
        cells += [_cell(find("DPO - PPO", setting, "best_gold_change")), win.get(setting, "-")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(
    cfg: FrontierConfig, rows: list[dict[str, Any]], meta: dict[str, Any], runs: list[dict]
) -> str:
    start = next(r for r in rows if r["method"] == "π_ref" and r["metric"] == "gold")
    lines = [
        f"# DPO vs PPO on the reward-KL frontier ({cfg.seeds} seeds)",
        "",
        f"{meta['provenance']}",
        "",
        f"Runtime {meta['runtime_s']:.0f} s wall this invocation; the runs took "
        f"{meta['compute_s']:.0f} s wall, {meta['cpu_s']:.0f} s CPU (reused runs included; "
        "one torch thread on a shared machine). Gold: VADER sentiment in [0, 1]; KL: "
        f"mean sequence-level k1 on {cfg.eval_prompts} validation prompts. π_ref's gold "
        f"{_cell(start)}.",
        "",
        "Per seed and KL bin, a method's value is its best gold over all its settings and "
        "checkpoints with KL in the bin; mean [95% bootstrap CI] over seeds (* = not every seed "
        "has a point there); DPO - PPO paired by seed where both have points in every seed.",
        "",
        "## KL decades (primary)",
        "",
        *table(cfg, rows, "decade"),
        "",
        f"Verdict (DPO's frontier dominates PPO's): **{verdict(rows, 'decade')['overall']}**.",
        "",
        "## Half decades (secondary)",
        "",
        *table(cfg, rows, "half-decade"),
        "",
        "## Runs",
        "",
        "| method | setting | seed | updates: KL / gold |",
        "|---|---|---|---|",
    ]
    for r in runs:
        pts = "; ".join(f"{p['update']}: {p['kl']:.2f} / {p['gold']:.3f}" for p in r["points"])
        lines.append(f"| {r['method']} | {r['setting']} | {r['seed']} | {pts} |")
    return "\n".join(lines) + "\n"


def plot(cfg: FrontierConfig, rows: list[dict[str, Any]], runs: list[dict], out: Path) -> Path:
    plt = plots.pyplot()
    colors = {"DPO": "tab:blue", "PPO": "tab:orange"}
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    for m in METHODS:
        pts = [p for r in runs if r["method"] == m for p in r["points"] if p["kl"] > DECADES[0]]
        ax.scatter(
            [p["kl"] for p in pts], [p["gold"] for p in pts], s=6, alpha=0.25, color=colors[m]
        )
        front = [
            r
            for r in rows
            if r["method"] == m and r["metric"] == "best_gold" and r["bins"] == "half-decade"
        ]
        for full, style in ((True, "o-"), (False, "o")):
            part = [r for r in front if (len(r["values"]) == cfg.seeds) == full]
            if not part:
                continue
            x = [math.exp(statistics.fmean(math.log(k) for k in r["kl_of_best"])) for r in part]
            y = np.array([r["mean"] for r in part])
            err = np.abs(np.array([[r["ci95"][0] for r in part], [r["ci95"][1] for r in part]]) - y)
            ax.errorbar(
                x,
                y,
                yerr=err,
                fmt=style,
                color=colors[m],
                mfc=colors[m] if full else "white",
                ms=4,
                capsize=3,
                label=m if full else f"{m} (not every seed)",
            )
    start = next(r for r in rows if r["method"] == "π_ref" and r["metric"] == "gold")
    ax.axhline(start["mean"], color="grey", ls=":", lw=1, label="π_ref")
    for edge in DECADES[1:-1]:
        ax.axvline(edge, color="grey", lw=0.5, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("KL(π_θ‖π_ref) per sequence (nats, log scale)")
    ax.set_ylabel("gold reward (VADER sentiment)")
    ax.set_title(
        f"reviews: best gold per half decade of KL (x: its KL), mean, 95% CI, {cfg.seeds} seeds",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return plots.save(fig, out / "dpo_vs_ppo.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, a smaller grid")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 3, quick 2)")
    parser.add_argument("--out", help="results folder")
    ns = parser.parse_args(argv)
    cfg = FrontierConfig()
    if ns.quick:
        cfg = replace(cfg, **QUICK)
    if ns.seeds:
        cfg = replace(cfg, seeds=ns.seeds)
    if ns.out:
        cfg = replace(cfg, out=ns.out)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    runs = [run for s in range(cfg.seeds) for run in run_seed(cfg, s)]
    rows = summarise(cfg, runs)
    out = Path(cfg.out)
    meta = {
        "study": STUDY,
        "config": asdict(cfg) | {"model": Path(cfg.model).name},
        "runtime_s": time.perf_counter() - started,
        "compute_s": sum(r["seconds"] for r in runs),
        "cpu_s": sum(r["cpu_seconds"] for r in runs),
        "provenance": provenance.describe("vaderSentiment"),
        "git": provenance.git_sha(),
        "versions": provenance.versions("vaderSentiment"),
        "verdict": verdict(rows, "decade"),
        "verdict_half_decades": verdict(rows, "half-decade"),
    }
    write_summary(out / "summary.json", rows, **meta)
    plot(cfg, rows, runs, out)
    md = report(cfg, rows, meta, runs)
    (out / "summary.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
