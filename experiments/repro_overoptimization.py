"""Reward-model over-optimisation (Gao, Schulman & Hilton 2023, arXiv:2210.10760), small scale.

Claim: optimising a learned proxy reward r_φ, the gold reward it imitates first rises and then
falls while the proxy keeps rising (Goodhart's law); the gold peak sits at a larger distance
d = √KL(π‖π_ref) when the proxy was trained on more data; a KL penalty acts like early stopping
(it moves a run along the gold-vs-KL frontier rather than above it).

Protocol (fixed before any result of this design was looked at)
----------------------------------------------------------------
- Policy π_ref: the embedded model (``textgym.DEFAULT_MODEL``) on the ``reviews`` task, completions
  of at most 20 new tokens, temperature 1.
- Gold g(y), a mix of signals a proxy cannot read off a few hundred pairs of π_ref samples::

      g(y) = VADER(y) - rep₂(y) - 0.1 · max(0, n_strong(y) - 3)

  VADER(y) in [0, 1] is ``make("sentiment")``; rep₂ is the fraction of the completion's word
  bigrams that repeat an earlier one (``rewards.simple.repeated_fraction``); n_strong counts words
  whose VADER lexicon valence is ≥ 2.5 ("great", "love", "best", ...). π_ref rarely repeats itself
  or piles up superlatives, so pairs of its samples mostly teach sentiment.
- Proxies r_φ: Bradley-Terry reward models on the embedded model's trunk
  (``RewardModel.from_backbone``, 2 epochs), trained on the first 250 / 1,000 / 4,000 of one pool
  of gold-labelled pairs of π_ref samples (K = 4 per train prompt, all pairs with gold margin
  > 0.1; nested subsets), normalised to mean 0, std 1 on π_ref samples; held-out pairwise accuracy
  on pairs of validation prompts.
- Control (misspecified proxy): VADER alone, which ignores both penalties. It checks that the
  pipeline can show a turn at all.
- Best-of-n: N = 1,024 samples of π_ref for each of 32 validation prompts; for n = 1, 2, 4, ...,
  1,024 the exact expectation, over subsets of n of the N samples, of the gold and proxy of the
  sample the proxy ranks first (order statistics: the i-th of N sorted by proxy is the best of a
  random n-subset with probability C(i-1, n-1)/C(N, n)); KL_bon = log n - (n-1)/n.
- RL: PPO (``PPOConfig`` defaults, lr 1e-4, 32 episodes per update, 48 updates) on each proxy and
  the control with no KL penalty (β = 0; the KL is measured, not paid), and on the 1,000-pair
  proxy with β = 0.01, 0.03, 0.1. At updates 0, 2, 4, 6, 9, 12, 16, 20, 25, 30, 36, 42, 48:
  one completion for each of 128 validation prompts (sampler seed 1234), the mean gold, proxy and
  per-sequence KL Σ_t log π/π_ref.
- 3 seeds; a seed draws its own pairs, trains its own proxies and runs its own RL.
- Statistics per run: the gold peak's location d* = √KL at the best evaluated point, the drop
  gold(peak) - gold(end), the proxy's change from the start (paired), Gao's RL form
  g(d) - g(0) = d(α - β log d) (best-of-n: d(α - βd)) fitted by least squares, with its peak.
  Rows of ``summary.json`` give the per-seed values, mean and 95% bootstrap CI
  (``textgym.stats``); the peak shift with data is the paired difference d*(4,000) - d*(250).
  The KL penalty: each β > 0 point's gold minus the same seed's β = 0 curve at the same KL
  (linear interpolation), averaged over the run's points: about 0 = on the frontier, > 0 = above.
- Changed after a one-seed pilot (``--quick``) for run time only, on a machine 3x oversubscribed:
  best-of-n prompts 64 -> 32 and RL updates 60 -> 48; nothing else.
- Verdicts: "over-optimisation shows" for a proxy when the drop's CI excludes 0 while its proxy
  change is > 0; "the peak moves out with data" when the paired d* difference's CI is > 0.

    python experiments/repro_overoptimization.py           # 3 seeds, about 45 min on 2 CPU cores
    python experiments/repro_overoptimization.py --quick   # 2 seeds, 2 proxies, 24 updates

Results: ``experiments/results/overoptimization/`` (summary.json, summary.md, overoptimization.png,
and ``cells/``, one JSON per seed and part, reused when present with the same config, so an
interrupted run loses at most the part it was in).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from textgym.agents import PPO, PPOConfig, RewardModelConfig, RewardModelTrainer
from textgym.rewards import batched, make
from textgym.rewards.reward_model import RewardModel
from textgym.rewards.simple import repeated_fraction

import textgym
from textgym import plots, provenance, tasks
from textgym.decoding import generate
from textgym.evaluation import sample_with_kl, task_env
from textgym.lm import LanguageModel
from textgym.pair_sampling import synthetic_preferences
from textgym.records import write_json
from textgym.stats import (
    best_of_n_kl,
    best_of_n_weights,
    fit_gao,
    gao_curve,
    mean_std,
    paired_change_row,
    study_row,
)
from textgym.stats import write_summary as write_rows
from textgym.training import frozen_copy, progress

STUDY = "overoptimization"
STRONG = 2.5  # VADER lexicon valence of a "strongly positive" word
CONTROL = "VADER (misspecified)"


@dataclass(frozen=True)
class OveroptConfig:
    model: str = textgym.DEFAULT_MODEL
    pair_sizes: tuple[int, ...] = (250, 1000, 4000)
    """gold-labelled pairs of each proxy (nested subsets of one pool)."""
    rm_epochs: int = 2
    val_prompts: int = 150
    """validation prompts of the proxies' held-out pairs."""
    bon_prompts: int = 32
    bon_samples: int = 1024
    """N, samples of π_ref per prompt for best-of-n (n ≤ N)."""
    eval_at: tuple[int, ...] = (0, 2, 4, 6, 9, 12, 16, 20, 25, 30, 36, 42, 48)
    """PPO updates after which the policy is measured (the last one ends the run)."""
    betas: tuple[float, ...] = (0.01, 0.03, 0.1)
    """KL coefficients of the penalised runs, on the ``beta_proxy`` proxy."""
    beta_proxy: int = 1000
    num_envs: int = 32
    max_new_tokens: int = 20
    eval_prompts: int = 128
    lr: float = 1e-4
    seeds: int = 3
    out: str = "experiments/results/overoptimization"
    threads: int = 1


QUICK = {
    "pair_sizes": (250, 1000),
    "bon_prompts": 32,
    "bon_samples": 256,
    "eval_at": (0, 2, 4, 8, 12, 16, 20, 24),
    "betas": (0.03,),
    "eval_prompts": 64,
    "seeds": 2,
    "out": "experiments/results/overoptimization_quick",
}


# ---------------------------------------------------------------------------- the gold reward


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return dict(SentimentIntensityAnalyzer().lexicon)


def gold_parts(completions: Sequence[str]) -> dict[str, np.ndarray]:
    """VADER in [0, 1], rep₂ and n_strong of each completion (the gold's three signals)."""
    lexicon = _lexicon()
    vader = make("sentiment")(["" for _ in completions], list(completions))
    rep, strong = [], []
    for text in completions:
        words = text.lower().split()
        rep.append(repeated_fraction(words, 2))
        strong.append(sum(lexicon.get(w.strip(".,!?;:\"'()"), 0.0) >= STRONG for w in words))
    return {"vader": np.asarray(vader), "rep2": np.asarray(rep), "strong": np.asarray(strong)}


@batched
def gold_score(prompts: Sequence[str], completions: Sequence[str], *_: Any) -> np.ndarray:
    """g(y) = VADER(y) - rep₂(y) - 0.1 · max(0, n_strong(y) - 3), per completion."""
    p = gold_parts(completions)
    return p["vader"] - p["rep2"] - 0.1 * np.maximum(0.0, p["strong"] - 3.0)


GOLD = make(gold_score)


# ---------------------------------------------------------------------------- the proxies


def train_proxies(cfg: OveroptConfig, base: LanguageModel, seed: int) -> tuple[dict, dict]:
    """One proxy per pair budget (nested subsets of one pool), normalised on π_ref samples."""
    n_train = max(cfg.pair_sizes)
    train_prompts = list(tasks.load("reviews", split="train").prompts)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_prompts))
    pool: list[Any] = []
    start = 0
    while len(pool) < n_train and start < len(order):  # ~4 pairs per prompt: sample in chunks
        chunk = [train_prompts[i] for i in order[start : start + 256]]
        pool += synthetic_preferences(
            base, chunk, GOLD, k=4, max_new_tokens=cfg.max_new_tokens, seed=seed * 1000 + start
        )
        start += 256
    if len(pool) < n_train:
        raise RuntimeError(f"only {len(pool)} gold-labelled pairs for a proxy of {n_train}")
    val_prompts = list(tasks.load("reviews", split="validation").prompts[: cfg.val_prompts])
    val = synthetic_preferences(
        base, val_prompts, GOLD, k=4, max_new_tokens=cfg.max_new_tokens, seed=seed + 7
    )
    head = pool[:128]  # both sides are π_ref samples: an unbiased sample to normalise on
    norm_p = [p.prompt for p in head] * 2
    norm_y = [p.chosen for p in head] + [p.rejected for p in head]
    proxies, stats = {}, {}
    for size in cfg.pair_sizes:
        torch.manual_seed(seed)  # the head's init
        rm = RewardModel.from_backbone(base, device="cpu")
        trainer = RewardModelTrainer(
            rm,
            pool[:size],
            val,
            RewardModelConfig(epochs=cfg.rm_epochs, seed=seed),
            device="cpu",
            progress_bar=False,
        )
        hist = trainer.learn()
        rm.eval()
        rm.normalize_(norm_p, norm_y)
        proxies[size] = rm.as_reward()
        stats[size] = {"pairs": size, "val_pairs": len(val), "val_acc": hist[-1]["val_acc"]}
    return proxies, stats


# ---------------------------------------------------------------------------- best-of-n


def best_of_n(cfg: OveroptConfig, base: LanguageModel, proxies: dict, seed: int) -> dict:
    """Exact best-of-n curves (gold and proxy of the proxy's pick) on π_ref's N samples."""
    prompts = list(tasks.load("reviews", split="validation").prompts[: cfg.bon_prompts])
    generator = torch.Generator().manual_seed(10_000 + seed)
    texts: list[list[str]] = []
    for i in progress(range(len(prompts)), "best-of-n samples"):
        prompt, row = prompts[i], []
        for s in range(0, cfg.bon_samples, 256):
            batch = [prompt] * min(256, cfg.bon_samples - s)
            out = generate(
                base, batch, max_new_tokens=cfg.max_new_tokens, do_sample=True, generator=generator
            )
            row += list(out.texts)
        texts.append(row)
    flat_p = [p for p, row in zip(prompts, texts, strict=True) for _ in row]
    flat_y = [y for row in texts for y in row]
    shape = (len(prompts), cfg.bon_samples)
    gold = np.asarray(GOLD(flat_p, flat_y)).reshape(shape)
    ns = [2**k for k in range(int(math.log2(cfg.bon_samples)) + 1)]
    curves = {}
    for name, proxy in [(CONTROL, make("sentiment")), *proxies.items()]:
        score = np.asarray(proxy(flat_p, flat_y)).reshape(shape)
        order = np.argsort(score, axis=1, kind="stable")
        g_sorted = np.take_along_axis(gold, order, 1)
        s_sorted = np.take_along_axis(score, order, 1)
        points = []
        for n in ns:
            w = best_of_n_weights(cfg.bon_samples, n)
            points.append(
                {
                    "n": n,
                    "kl": best_of_n_kl(n),
                    "gold": float((g_sorted @ w).mean()),
                    "proxy": float((s_sorted @ w).mean()),
                }
            )
        curves[str(name)] = points
    return curves


# ---------------------------------------------------------------------------- RL


@torch.no_grad()
def measure(policy: LanguageModel, ref: LanguageModel, proxy: Any, cfg: OveroptConfig) -> dict:
    out, kl = sample_with_kl(
        policy,
        ref,
        reward=proxy,
        n_prompts=cfg.eval_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=1234,
    )
    parts = gold_parts(out.texts)
    return {
        "kl": float(kl.mean()),
        "proxy": float(out.rewards.mean()),
        "gold": float(np.mean(GOLD(out.prompts, out.texts))),
        "vader": float(parts["vader"].mean()),
        "rep2": float(parts["rep2"].mean()),
        "strong": float(parts["strong"].mean()),
        "length": float(out.completion_mask.sum(-1).float().mean()),
        "sample": out.texts[0],
    }


def run_rl(cfg: OveroptConfig, proxy: Any, beta: float, seed: int, desc: str) -> list[dict]:
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    env = task_env(
        policy, "reviews", num_envs=cfg.num_envs, max_new_tokens=cfg.max_new_tokens, reward=proxy
    )
    agent = PPO(
        policy, env, config=PPOConfig(lr=cfg.lr, beta=beta, seed=seed), ref=ref, progress_bar=False
    )
    curve, done = [], 0
    for u in progress(cfg.eval_at, desc):
        if u > done:
            agent.learn(u - done)
            done = u
        curve.append({"update": u, **measure(policy, ref, proxy, cfg)})
    env.close()
    return curve


def runs(cfg: OveroptConfig) -> list[tuple[str, Any, float]]:
    """(run name, proxy key, β): proxy key an int pair budget or CONTROL."""
    out: list[tuple[str, Any, float]] = [(f"proxy {n} pairs, β=0", n, 0.0) for n in cfg.pair_sizes]
    out.append((f"{CONTROL}, β=0", CONTROL, 0.0))
    out += [(f"proxy {cfg.beta_proxy} pairs, β={b}", cfg.beta_proxy, b) for b in cfg.betas]
    return out


# ---------------------------------------------------------------------------- cells


def cell_config(cfg: OveroptConfig) -> dict[str, Any]:
    """What a cell's numbers depend on (not where they are written or the seed count)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("out", "seeds", "threads")}


def load_cell(path: Path, cfg: OveroptConfig) -> Any:
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if rec["config"] != json.loads(json.dumps(cell_config(cfg))):
        raise SystemExit(
            f"{path} was computed with another config; delete {path.parent} or pass another --out"
        )
    return rec["data"]


def save_cell(path: Path, cfg: OveroptConfig, data: Any, seconds: float) -> None:
    rec = {"config": cell_config(cfg), "seconds": seconds, "data": data}
    write_json(path, rec, newline=False)  # atomic: an interrupted write leaves no half cell


def run_seed(cfg: OveroptConfig, seed: int) -> dict[str, Any]:
    cells = Path(cfg.out) / "cells"
    names = {"proxies": cells / f"seed{seed}_proxies.json", "bon": cells / f"seed{seed}_bon.json"}
    for name, _, _ in runs(cfg):
        names[name] = cells / f"seed{seed}_{slug(name)}.json"
    have = {k: load_cell(p, cfg) for k, p in names.items()}
    if all(v is not None for v in have.values()):
        return have
    torch.manual_seed(seed)
    base = LanguageModel.from_pretrained(cfg.model, device="cpu")
    t = time.perf_counter()
    proxies, stats = train_proxies(cfg, base, seed)  # retrained (seeded) for the missing parts
    print(f"# seed {seed} proxies: {stats}", flush=True)
    have["proxies"] = {str(k): v for k, v in stats.items()}
    save_cell(names["proxies"], cfg, have["proxies"], time.perf_counter() - t)
    if have["bon"] is None:
        t = time.perf_counter()
        have["bon"] = best_of_n(cfg, base, proxies, seed)
        save_cell(names["bon"], cfg, have["bon"], time.perf_counter() - t)
    for name, key, beta in runs(cfg):
        if have[name] is None:
            t = time.perf_counter()
            proxy = make("sentiment") if key == CONTROL else proxies[key]
            have[name] = run_rl(cfg, proxy, beta, seed, f"seed {seed} {name}")
            save_cell(names[name], cfg, have[name], time.perf_counter() - t)
    return have


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".=" else "_" for c in name).strip("_")


# ---------------------------------------------------------------------------- summary


def frontier_gap(curve: list[dict], frontier: list[dict]) -> float:
    """Mean gold of ``curve``'s points after the start minus ``frontier``'s gold at their KL."""
    fk = np.array([p["kl"] for p in frontier])
    fg = np.array([p["gold"] for p in frontier])
    order = np.argsort(fk)
    gaps = [
        p["gold"] - float(np.interp(p["kl"], fk[order], fg[order]))
        for p in curve[1:]
        if p["kl"] <= fk.max()
    ]
    return float(np.mean(gaps)) if gaps else float("nan")


def summarise(cfg: OveroptConfig, per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in cfg.pair_sizes:
        acc = [s["proxies"][str(size)]["val_acc"] for s in per_seed]
        rows.append(study_row(STUDY, f"proxy {size} pairs", "reward model", "val_acc", acc))
    for name, _, beta in runs(cfg):
        curves = [s[name] for s in per_seed]
        start = [c[0]["gold"] for c in curves]
        peak_i = [int(np.argmax([p["gold"] for p in c])) for c in curves]
        peak = [c[i]["gold"] for c, i in zip(curves, peak_i, strict=True)]
        end = [c[-1]["gold"] for c in curves]
        setting = f"RL, β={beta}"
        rows.append(
            study_row(
                STUDY,
                name,
                setting,
                "peak_d",
                [math.sqrt(max(c[i]["kl"], 0.0)) for c, i in zip(curves, peak_i, strict=True)],
            )
        )
        rows.append(paired_change_row(STUDY, name, setting, "gold_peak_minus_end", peak, end))
        rows.append(paired_change_row(STUDY, name, setting, "gold", end, start))
        rows.append(
            paired_change_row(
                STUDY,
                name,
                setting,
                "proxy",
                [c[-1]["proxy"] for c in curves],
                [c[0]["proxy"] for c in curves],
            )
        )
        rows.append(study_row(STUDY, name, setting, "kl_end", [c[-1]["kl"] for c in curves]))
        fits = [fit_rl(c) for c in curves]
        for k in ("alpha", "beta", "r2", "peak_d"):
            values = [f[k] for f in fits]
            if all(math.isfinite(v) for v in values):  # a fit with β <= 0 has no peak
                rows.append(study_row(STUDY, name, setting, f"gao_rl_{k}", values))
        if beta > 0:
            gaps = [
                frontier_gap(s[name], s[f"proxy {cfg.beta_proxy} pairs, β=0"]) for s in per_seed
            ]
            rows.append(study_row(STUDY, name, setting, "gold_above_beta0_frontier", gaps))
    for key in [CONTROL, *map(str, cfg.pair_sizes)]:
        name = CONTROL if key == CONTROL else f"proxy {key} pairs"
        curves = [s["bon"][key] for s in per_seed]
        peak_i = [int(np.argmax([p["gold"] for p in c])) for c in curves]
        rows.append(
            study_row(
                STUDY,
                name,
                "best-of-n",
                "peak_d",
                [math.sqrt(c[i]["kl"]) for c, i in zip(curves, peak_i, strict=True)],
            )
        )
        rows.append(
            paired_change_row(
                STUDY,
                name,
                "best-of-n",
                "gold_peak_minus_end",
                [c[i]["gold"] for c, i in zip(curves, peak_i, strict=True)],
                [c[-1]["gold"] for c in curves],
            )
        )
        rows.append(
            paired_change_row(
                STUDY,
                name,
                "best-of-n",
                "gold",
                [c[-1]["gold"] for c in curves],
                [c[0]["gold"] for c in curves],
            )
        )
        fits = [fit_bon(c) for c in curves]
        for k in ("alpha", "beta", "r2", "peak_d"):
            values = [f[k] for f in fits]
            if all(math.isfinite(v) for v in values):
                rows.append(study_row(STUDY, name, "best-of-n", f"gao_bon_{k}", values))
    lo, hi = min(cfg.pair_sizes), max(cfg.pair_sizes)
    by = {r["method"]: r for r in rows if r["metric"] == "peak_d" and r["setting"] == "RL, β=0.0"}
    rows.append(
        paired_change_row(
            STUDY, f"proxy {hi} vs {lo} pairs", "RL, β=0.0", "peak_d",
            by[f"proxy {hi} pairs, β=0"]["values"], by[f"proxy {lo} pairs, β=0"]["values"],
        )
    )  # fmt: skip
    return rows


def _d_gain(curve: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(np.maximum([p["kl"] for p in curve], 0.0))
    return d, np.array([p["gold"] for p in curve]) - curve[0]["gold"]


def fit_rl(curve: list[dict]) -> dict[str, float]:
    return fit_gao(*_d_gain(curve), form="rl")


def fit_bon(curve: list[dict]) -> dict[str, float]:
    return fit_gao(*_d_gain(curve), form="bon")


def table(cfg: OveroptConfig, rows: list[dict[str, Any]], seconds: float) -> str:
    def cell(method: str, setting: str, metric: str, digits: int = 3) -> str:
        for r in rows:
            if (r["method"], r["setting"], r["metric"]) == (method, setting, metric):
                lo, hi = r["ci95"]
                return f"{r['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
        return "n/a"

    lines = [
        f"# Over-optimisation: {cfg.seeds} seeds; the cells took {seconds / 60:.0f} min of wall "
        "time (seeds ran side by side on a shared 2-core machine)",
        "",
        provenance.describe("vaderSentiment"),
        "",
        "Mean [95% bootstrap CI] over seeds. d = √KL (nats). Drop = gold at its peak minus gold",
        "at the end (paired by seed); gold/proxy change = end minus start (paired).",
        "",
        "## Proxies",
        "",
        "| proxy | held-out pairwise accuracy |",
        "|---|---|",
    ]
    for size in cfg.pair_sizes:
        lines.append(f"| {size} pairs | {cell(f'proxy {size} pairs', 'reward model', 'val_acc')} |")
    lines += [
        "",
        "## RL (PPO)",
        "",
        "| run | peak d | gold drop peak→end | gold change | proxy change | KL at end | "
        "Gao RL α | Gao RL β | fitted peak d |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, beta in runs(cfg):
        s = f"RL, β={beta}"
        lines.append(
            f"| {name} | {cell(name, s, 'peak_d', 2)} | "
            f"{cell(name, s, 'gold_peak_minus_end_change')} | {cell(name, s, 'gold_change')} | "
            f"{cell(name, s, 'proxy_change', 2)} | {cell(name, s, 'kl_end', 1)} | "
            f"{cell(name, s, 'gao_rl_alpha')} | {cell(name, s, 'gao_rl_beta')} | "
            f"{cell(name, s, 'gao_rl_peak_d', 2)} |"
        )
    lo, hi = min(cfg.pair_sizes), max(cfg.pair_sizes)
    lines += [
        "",
        f"Peak shift with data, d*({hi}) - d*({lo}) paired by seed: "
        f"{cell(f'proxy {hi} vs {lo} pairs', 'RL, β=0.0', 'peak_d_change', 2)}",
        "",
        "KL penalty, gold above the β = 0 run of the same proxy and seed at the same KL:",
        "",
    ]
    for b in cfg.betas:
        name = f"proxy {cfg.beta_proxy} pairs, β={b}"
        lines.append(f"- β = {b}: {cell(name, f'RL, β={b}', 'gold_above_beta0_frontier')}")
    lines += [
        "",
        f"## Best-of-n (N = {cfg.bon_samples}, n ≤ {cfg.bon_samples}, "
        f"KL ≤ {math.log(cfg.bon_samples) - 1:.1f})",
        "",
        "| proxy | peak d | gold drop peak→end | gold change n=1→N | Gao BoN α | Gao BoN β | "
        "fitted peak d |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in [CONTROL, *map(str, cfg.pair_sizes)]:
        name = CONTROL if key == CONTROL else f"proxy {key} pairs"
        s = "best-of-n"
        lines.append(
            f"| {name} | {cell(name, s, 'peak_d', 2)} | "
            f"{cell(name, s, 'gold_peak_minus_end_change')} | {cell(name, s, 'gold_change')} | "
            f"{cell(name, s, 'gao_bon_alpha')} | {cell(name, s, 'gao_bon_beta')} | "
            f"{cell(name, s, 'gao_bon_peak_d', 2)} |"
        )
    return "\n".join(lines) + "\n"


def plot(cfg: OveroptConfig, per_seed: list[dict[str, Any]], out: Path) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), dpi=80)
    colors = {str(n): f"C{i}" for i, n in enumerate(cfg.pair_sizes)}
    colors[CONTROL] = "C3"
    for key, color in colors.items():
        label = CONTROL if key == CONTROL else f"proxy {key} pairs"
        curves = [s["bon"][key] for s in per_seed]
        d = np.sqrt([p["kl"] for p in curves[0]])
        g = np.array([[p["gold"] for p in c] for c in curves])
        axes[0].plot(d, g.mean(0), "o-", color=color, ms=3, label=label)
        axes[0].fill_between(d, g.min(0), g.max(0), color=color, alpha=0.15)
    axes[0].set_title(f"best-of-n (N={cfg.bon_samples}): gold of the proxy's pick")
    for name, key, beta in runs(cfg):
        if beta > 0:
            continue
        color = colors[str(key)]
        for i, s in enumerate(per_seed):
            c = s[name]
            d = np.sqrt(np.maximum([p["kl"] for p in c], 0.0))
            label = name if i == 0 else None
            axes[1].plot(d, [p["gold"] for p in c], "o-", color=color, ms=2, lw=1, label=label)
            axes[2].plot(d, [p["proxy"] for p in c], "o-", color=color, ms=2, lw=1, label=label)
            if key != CONTROL:
                fit = fit_rl(c)
                grid = np.linspace(0, d.max(), 60)
                curve = c[0]["gold"] + gao_curve(grid, fit["alpha"], fit["beta"], "rl")
                axes[1].plot(grid, curve, ":", color=color, lw=0.8)
    axes[1].set_title("RL, β = 0: gold (dotted: Gao RL fit)")
    axes[2].set_title("RL, β = 0: proxy (normalised; VADER for the control)")
    for j, name in enumerate([f"proxy {cfg.beta_proxy} pairs, β=0"] + [
        f"proxy {cfg.beta_proxy} pairs, β={b}" for b in cfg.betas
    ]):  # fmt: skip
        for i, s in enumerate(per_seed):
            c = s[name]
            axes[3].plot(
                [max(p["kl"], 1e-2) for p in c], [p["gold"] for p in c], "o-", color=f"C{j + 4}",
                ms=2, lw=1, label=name.split(", ")[1] if i == 0 else None,
            )  # fmt: skip
    axes[3].set_xscale("log")
    axes[3].set_title(f"KL penalty on the {cfg.beta_proxy}-pair proxy: gold vs KL")
    for ax in axes[:3]:
        ax.set_xlabel("d = √KL(π‖π_ref) (√nats)")
    axes[3].set_xlabel("KL(π‖π_ref) per sequence (nats)")
    axes[0].set_ylabel("gold g(y)")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return plots.save(fig, out / "overoptimization.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 proxies, 24 updates")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", help="results folder")
    parser.add_argument(
        "--only-seed", type=int, help="compute this seed's cells and stop (run seeds side by side)"
    )
    ns = parser.parse_args(argv)
    cfg = replace(OveroptConfig(), **QUICK) if ns.quick else OveroptConfig()
    cfg = replace(cfg, **{k: v for k, v in {"seeds": ns.seeds, "out": ns.out}.items() if v})
    torch.set_num_threads(cfg.threads)
    if ns.only_seed is not None:
        run_seed(cfg, ns.only_seed)
        return
    start = time.perf_counter()
    per_seed = [run_seed(cfg, seed) for seed in range(cfg.seeds)]
    seconds = time.perf_counter() - start
    out = Path(cfg.out)
    # Each cell records the seconds it took when computed (wall time on its process).
    cell_seconds = sum(
        json.loads(p.read_text()).get("seconds", 0.0) for p in (out / "cells").glob("*.json")
    )
    rows = summarise(cfg, per_seed)
    write_rows(
        out / "summary.json",
        rows,
        config=asdict(cfg),
        seconds=seconds,
        cell_seconds=cell_seconds,
        provenance=provenance.describe("vaderSentiment"),
    )
    plot(cfg, per_seed, out)
    md = table(cfg, rows, cell_seconds)
    (out / "summary.md").write_text(md)
    print(md)
    spread = {
        n: mean_std([s["proxies"][str(n)]["val_acc"] for s in per_seed]) for n in cfg.pair_sizes
    }
    print(f"# proxy accuracy: {spread}; {seconds:.0f} s this invocation")


if __name__ == "__main__":
    main()
