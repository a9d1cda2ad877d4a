"""RL over supervised learning on a non-differentiable metric (RL4LMs, Ramamurthy et al. 2023,
arXiv:2210.01241), small scale, on the concept-to-sentence task.

Claim: starting from a supervised model, on-policy RL (REINFORCE, PPO, NLPO) on a metric reward
raises the held-out metrics over the supervised start, including metrics it was not trained on.

Protocol (fixed before any test result of an RL policy of this design was looked at)
-------------------------------------------------------------------------------------
- Task: ``concepts`` (CommonGen-like: "Concepts: a, b, c. Sentence:", 3-5 references per
  prompt). Start = supervised model: the embedded model (``textgym.DEFAULT_MODEL``, ~1M
  parameters, trained on the train split's references). π_ref = the start, frozen.
- Reward trained on: sentence CIDEr-D (``make("cider", corpus=<train reference sets>)``: document
  frequencies from the train split, so the reward of a completion does not depend on its batch).
  Why CIDEr-D rather than METEOR: it is dense (TF-IDF-weighted 1-4-grams against every reference,
  a Gaussian length penalty, clipped counts so repeating a concept word does not pay), it rewards
  the rare concept words most, which is the task, and it is about 10x cheaper than nltk's METEOR
  with WordNet, so the budget buys more episodes. METEOR, BLEU, ROUGE-L and chrF are then metrics
  *not* trained on.
- Methods, all with β = 0.02 (KL penalty to π_ref inside the reward, k1 per token), 64 episodes
  per update (max 24 new tokens, temperature 1), the same number of updates for all:
    reinforce  REINFORCE with the leave-one-out baseline (RLOO, K = 4: 16 prompts x 4 samples),
               one Adam step per update;
    ppo        KL-regularised PPO (GAE γ = 1, λ = 0.95, ε = 0.2), 2 epochs x 4 minibatches;
    nlpo       the same PPO sampling and learning under NLPO's action mask: the top-p (p = 0.9)
               tokens of a mask model π_ψ (``textgym.envs.TopPMask``), π_ψ = π_ref at the start
               and refreshed with π_θ's weights every μ = 20 updates (RL4LMs' NLPO).
- Budget (full): 60 updates x 64 episodes = 3,840 episodes per run, 10x the 24 x 16 of
  ``repro_rl_concepts.py``. Learning rates: chosen by ``--pilot`` (below) on train/validation
  numbers only: REINFORCE ``RL_LR``, PPO and NLPO ``PPO_LR`` (NLPO shares PPO's).
- Seeds: 5 (full), 2 (``--quick``); seed s trains with seed s and is evaluated with sampler seed
  1000 + s, the start too, so start and trained policies see the same prompts and random stream.
- Evaluation: all 300 test prompts, one completion each, two decodings:
    greedy   (primary: the supervised model is decoded greedily in practice, RL4LMs compare
             under one decoding, and greedy removes the gain that mere sharpening of a sampled
             distribution would give; NLPO's mask plays no part at test time);
    sampled  (temperature 1, the policy's own distribution, no mask; the previous study's).
  Metrics: corpus BLEU and chrF (sacrebleu), ROUGE-L, METEOR, corpus CIDEr-D (document
  frequencies from the test references), distinct-2, length; under sampling also KL(π_θ‖π_start)
  (mean over completions of Σ_t log π_θ - log π_ref). Also the train reward: mean CIDEr-D of the
  last 5 updates' episodes minus the first 5's.
- Statistics: for each method, setting and metric the change from the start paired by seed
  (trained - start of the same seed), its mean and 95% percentile-bootstrap CI over seeds
  (``textgym.stats.paired_change_row``). Verdict per setting: a metric "rises" when its change's
  CI lies above 0.

Pilot (``--pilot``; train and validation only, seed 100, full budget): one run per lr, its train
reward (first vs last 5 updates) and its validation CIDEr-D (first 150 validation prompts, greedy
and sampled); the lr with the best greedy validation CIDEr-D is taken. The first grid, REINFORCE
{3e-4, 1e-3, 3e-3} and PPO {1e-4, 3e-4, 1e-3}, had its best at its lowest lr (larger ones drove
the KL to 4-20 nats and lowered greedy CIDEr-D; REINFORCE at 3e-3 collapsed to empty
completions), so it was extended down: REINFORCE {3e-5, 1e-4}, PPO {3e-5}, then PPO {1e-5}.
Chosen: REINFORCE 1e-4 (greedy val CIDEr-D 1.625 vs start 1.558; 3e-5 gave 1.623), PPO 3e-5
(1.694; 1e-5 gave 1.656, 1e-4 1.625). Table: ``<out>/pilot/pilot.md``.

    python experiments/repro_rl_over_supervised.py            # 5 seeds, 42 min (2 shared cores)
    python experiments/repro_rl_over_supervised.py --quick    # 2 seeds, 15 updates, 6.5 min
    python experiments/repro_rl_over_supervised.py --pilot    # the lr pilot (~15 min)

Results: ``experiments/results/rl_over_supervised/`` (``summary.json``, ``summary.md``,
``rl_over_supervised.png``, ``cells/``: one JSON per method and seed, named by
``textgym.benchmark.cell_path`` and checked by its ``check_same_config``, reused on a rerun, so an
interrupted run loses at most the cell it was in); ``--quick`` writes to ``.../quick/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from textgym.agents import PPO, REINFORCE, PPOConfig, REINFORCEConfig
from textgym.rewards import make

import textgym
from textgym import benchmark, plots, provenance
from textgym.envs import TopPMask
from textgym.evaluation import evaluate_policy_on_task
from textgym.lm import LanguageModel
from textgym.records import write_json
from textgym.rollout import Sampling
from textgym.stats import bootstrap_ci, paired_change_row, study_row, write_summary
from textgym.tasks import load

STUDY = "rl_over_supervised"
TASK = "concepts"
OUT = Path("experiments/results/rl_over_supervised")
RL_METHODS = ("reinforce", "ppo", "nlpo")
METHODS = ("start", *RL_METHODS)
SETTINGS = {"greedy": Sampling(top_k=1), "sampled": Sampling()}
METRICS = ("bleu", "rougeL", "meteor", "cider", "chrf", "distinct2", "length", "kl")
SHOWN = ("bleu", "rougeL", "meteor", "cider", "chrf", "distinct2")
EVAL_SEED = 1000
RL_LR = 1e-4
"""REINFORCE's Adam step size (chosen by --pilot)."""
PPO_LR = 3e-5
"""PPO's and NLPO's Adam step size (chosen by --pilot)."""
PILOT_SEED = 100
PILOT_LRS = {"reinforce": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3), "ppo": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)}
"""The grids as finally run (the first grid and its extensions: see the module docstring)."""


def config(quick: bool) -> benchmark.BenchConfig:
    """The study's budget as a ``BenchConfig`` (its cell path and config check are reused); the
    fields the benchmark has no name for go in ``extra`` (checked here, see ``load_cell``)."""
    cfg = benchmark.BenchConfig(
        agents=METHODS,
        tasks=(TASK,),
        seeds=5,
        out=str(OUT),
        num_envs=64,
        max_new_tokens=24,
        rl_updates=60,
        rl_lr=RL_LR,
        ppo_lr=PPO_LR,
        test_prompts=300,
        threads=1,
        extra={
            "reward": "cider (train-split document frequencies)",
            "beta": 0.02,
            "rloo_k": 4,
            "ppo_epochs": 2,
            "ppo_minibatches": 4,
            "nlpo_top_p": 0.9,
            "nlpo_mu": 20,
            "eval_split": "test",
        },
    )
    if quick:
        cfg = replace(cfg, seeds=2, rl_updates=15, test_prompts=150, out=str(OUT / "quick"))
    return cfg


# ---------------------------------------------------------------------------- training


def cider_reward() -> Any:
    """Sentence CIDEr-D with the train split's reference sets as the document corpus."""
    return make("cider", corpus=list(load(TASK, "train").references or ()))


def train_env(lm: LanguageModel, cfg: benchmark.BenchConfig, **kwargs: Any) -> Any:
    """``num_envs`` episodes of the train split, rewarded by CIDEr-D; kwargs go to the env."""
    return gym.make_vec(
        "TextGen-v0",
        num_envs=cfg.num_envs,
        model=lm,
        task=TASK,
        split="train",
        reward=cider_reward(),
        max_new_tokens=cfg.max_new_tokens,
        **kwargs,
    )


def ppo_config(cfg: benchmark.BenchConfig, seed: int) -> PPOConfig:
    x = cfg.extra
    return PPOConfig(
        lr=cfg.ppo_lr,
        beta=x["beta"],
        n_epochs=x["ppo_epochs"],
        n_minibatches=x["ppo_minibatches"],
        seed=seed,
    )


def train_start(lm: LanguageModel, cfg: benchmark.BenchConfig, seed: int) -> list[dict]:
    return []


def train_reinforce(lm: LanguageModel, cfg: benchmark.BenchConfig, seed: int) -> list[dict]:
    x = cfg.extra
    rcfg = REINFORCEConfig(
        baseline="rloo", rloo_k=x["rloo_k"], lr=cfg.rl_lr, beta=x["beta"], seed=seed
    )
    return REINFORCE(lm, train_env(lm, cfg), config=rcfg, progress_bar=False).learn(cfg.rl_updates)


def train_ppo(lm: LanguageModel, cfg: benchmark.BenchConfig, seed: int) -> list[dict]:
    agent = PPO(lm, train_env(lm, cfg), config=ppo_config(cfg, seed), progress_bar=False)
    return agent.learn(cfg.rl_updates)


def train_nlpo(lm: LanguageModel, cfg: benchmark.BenchConfig, seed: int) -> list[dict]:
    """PPO under the top-p mask of π_ψ, which takes π_θ's weights every μ updates."""
    psi = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    psi.model.requires_grad_(False).eval()
    mask = TopPMask(psi, top_p=cfg.extra["nlpo_top_p"])
    env = train_env(lm, cfg, action_mask=mask)
    agent = PPO(lm, env, config=ppo_config(cfg, seed), progress_bar=False)
    history: list[dict] = []
    mu = cfg.extra["nlpo_mu"]
    while len(history) < cfg.rl_updates:
        history += agent.learn(min(mu, cfg.rl_updates - len(history)))
        psi.model.load_state_dict(lm.model.state_dict())
    return history


TRAIN: dict[str, Callable[[LanguageModel, benchmark.BenchConfig, int], list[dict]]] = {
    "start": train_start,
    "reinforce": train_reinforce,
    "ppo": train_ppo,
    "nlpo": train_nlpo,
}


# ---------------------------------------------------------------------------- cells


def run_cell(cfg: benchmark.BenchConfig, method: str, seed: int, n_prompts: int) -> dict[str, Any]:
    """Train ``method`` from the start with ``seed``; evaluate it greedy and sampled on the first
    ``n_prompts`` prompts of ``cfg.extra["eval_split"]``."""
    torch.manual_seed(seed)  # PPO's value head is initialised from the global RNG
    ref = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    ref.model.requires_grad_(False)
    lm = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    start = time.perf_counter()
    history = TRAIN[method.split("@")[0]](lm, cfg, seed)
    train_s = time.perf_counter() - start
    lm.model.eval()
    metrics = {
        name: evaluate_policy_on_task(
            lm,
            TASK,
            ref=ref,
            split=cfg.extra["eval_split"],
            n_prompts=n_prompts,
            max_new_tokens=cfg.max_new_tokens,
            seed=EVAL_SEED + seed,
            sampling=sampling,
        )
        for name, sampling in SETTINGS.items()
    }
    keep = ("reward", "kl", "length", "entropy", "entropy_rollout", "approx_kl", "clip_fraction")
    return {
        "agent": method,
        "task": TASK,
        "seed": seed,
        "train_seconds": train_s,
        "eval_seconds": time.perf_counter() - start - train_s,
        "metrics": metrics,
        "history": [{k: round(v, 5) for k, v in row.items() if k in keep} for row in history],
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("agents", "tasks")},
    }


def load_cell(path: Path, cfg: benchmark.BenchConfig) -> dict[str, Any]:
    """A finished cell, refused when it was run with another budget (``extra`` included)."""
    rec: dict[str, Any] = json.loads(path.read_text())
    benchmark.check_same_config(rec, cfg, path)
    if rec["config"].get("extra") != cfg.extra:  # the benchmark lets extra differ; not here
        raise ValueError(
            f"{path} was run with extra={rec['config'].get('extra')}, now {cfg.extra}; use "
            "another --out or delete the cell"
        )
    return rec


def run_cells(
    cfg: benchmark.BenchConfig, cells: list[tuple[str, int]], n_prompts: int
) -> list[dict[str, Any]]:
    """Run or reuse each (method, seed) cell, seed by seed; each is written as soon as it ends."""
    records = []
    for method, seed in cells:
        cell_cfg = cfg
        if "@" in method:  # a pilot cell: "<method>@<lr>"
            name, lr = method.split("@")
            if name == "reinforce":
                cell_cfg = replace(cfg, rl_lr=float(lr))
            else:
                cell_cfg = replace(cfg, ppo_lr=float(lr))
        path = benchmark.cell_path(cell_cfg, method, TASK, seed)
        if path.exists():
            records.append(load_cell(path, cell_cfg))
            continue
        t0 = time.perf_counter()
        rec = run_cell(cell_cfg, method, seed, n_prompts)
        write_json(path, rec, newline=False)  # atomic: an interrupted write leaves no half cell
        print(
            f"# {method} seed {seed}: {time.perf_counter() - t0:.0f} s, greedy CIDEr-D "
            f"{rec['metrics']['greedy']['cider']:.3f}, sampled CIDEr-D "
            f"{rec['metrics']['sampled']['cider']:.3f}",
            flush=True,
        )
        records.append(rec)
    return records


def train_reward_ends(rec: dict[str, Any], k: int = 5) -> tuple[float, float]:
    """Mean train reward (CIDEr-D) of the first and of the last ``k`` updates."""
    r = [row["reward"] for row in rec["history"]]
    return statistics.fmean(r[:k]), statistics.fmean(r[-k:])


# ---------------------------------------------------------------------------- report


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """summary.json's rows: every metric per method and setting, and the paired change."""
    by = {(r["agent"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records if r["agent"] == "start"})
    rows = []
    for setting in SETTINGS:
        metrics = [m for m in METRICS if not (setting == "greedy" and m == "kl")]
        for method in METHODS:
            have = [s for s in seeds if (method, s) in by]
            if not have:
                continue
            for m in metrics:
                after = [by[method, s]["metrics"][setting][m] for s in have]
                rows.append(study_row(STUDY, method, setting, m, after, seeds=have))
                if method != "start":
                    before = [by["start", s]["metrics"][setting][m] for s in have]
                    rows.append(paired_change_row(STUDY, method, setting, m, after, before))
    for method in RL_METHODS:
        recs = [by[method, s] for s in seeds if (method, s) in by]
        if recs:
            first, last = zip(*(train_reward_ends(r) for r in recs), strict=True)
            rows.append(study_row(STUDY, method, "train", "train_cider", list(last)))
            rows.append(paired_change_row(STUDY, method, "train", "train_cider", last, first))
            kl = [statistics.fmean(row["kl"] for row in r["history"][-5:]) for r in recs]
            rows.append(study_row(STUDY, method, "train", "train_kl", kl))
    return rows


def fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return "n/a"
    digits = 2 if max(abs(row["mean"]), *map(abs, row["ci95"])) >= 1 else 3
    lo, hi = row["ci95"]
    return f"{row['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def table(rows: list[dict[str, Any]], cfg: benchmark.BenchConfig) -> str:
    """Markdown: start values, then each method's paired change (mean [95% CI]) per setting."""
    at = {(r["method"], r["setting"], r["metric"]): r for r in rows}
    lines = []
    for setting in SETTINGS:
        metrics = [m for m in METRICS if not (setting == "greedy" and m == "kl")]
        lines += [
            f"\n### {setting} decoding, {cfg.extra['eval_split']} prompts: change from the start "
            "(paired by seed, mean [95% bootstrap CI])\n",
            "| method | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        start = [at.get(("start", setting, m)) for m in metrics]
        cells = [f"{r['mean']:.3g}" if r else "n/a" for r in start]
        lines.append("| start (value) | " + " | ".join(cells) + " |")
        for method in RL_METHODS:
            cells = [fmt(at.get((method, setting, f"{m}_change"))) for m in metrics]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "\n### training (train split): CIDEr-D reward, last 5 updates minus first 5 (paired), "
        "and the KL of the last 5\n",
        "| method | train CIDEr-D (last 5) | change | train KL (last 5, nats) |",
        "|---|---|---|---|",
    ]
    for method in RL_METHODS:
        last, change, kl = (
            at.get((method, "train", m)) for m in ("train_cider", "train_cider_change", "train_kl")
        )
        if last and change and kl:
            lines.append(f"| {method} | {last['mean']:.3f} | {fmt(change)} | {kl['mean']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict[str, Any]], path: Path) -> Path:
    """Paired change in % of the start per metric, one bar per method (95% CI), per setting."""
    plt = plots.pyplot()
    by = {(r["agent"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records if r["agent"] == "start"})
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(10, 3.4), dpi=80, sharey=True)
    width = 0.8 / len(RL_METHODS)
    for ax, setting in zip(axes, SETTINGS, strict=True):
        for j, method in enumerate(RL_METHODS):
            have = [s for s in seeds if (method, s) in by]
            if not have:
                continue
            means, lows, highs = [], [], []
            for m in SHOWN:
                rel = [
                    100
                    * (by[method, s]["metrics"][setting][m] - by["start", s]["metrics"][setting][m])
                    / abs(by["start", s]["metrics"][setting][m])
                    for s in have
                ]
                lo, hi = bootstrap_ci(rel)
                mean = statistics.fmean(rel)
                means.append(mean)
                lows.append(mean - lo)
                highs.append(hi - mean)
            xs = [i + (j - (len(RL_METHODS) - 1) / 2) * width for i in range(len(SHOWN))]
            ax.bar(xs, means, width, yerr=[lows, highs], capsize=2, label=method)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(range(len(SHOWN)), SHOWN)
        ax.set_title(f"{setting} decoding (test)")
    axes[0].set_ylabel("% change vs. supervised start")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{TASK}: RL on CIDEr-D over the supervised start, paired by seed (95% CI)")
    return plots.save(fig, path)


# ---------------------------------------------------------------------------- pilot


def pilot(cfg: benchmark.BenchConfig) -> None:
    """The lr pilot on train/validation: one seed per lr, full budget, 150 validation prompts."""
    cfg = replace(
        cfg,
        out=str(Path(cfg.out) / "pilot"),
        rl_lr=3e-4,  # fixed, so that the pilot's cells do not depend on the chosen lrs
        ppo_lr=1e-4,
        extra={**cfg.extra, "eval_split": "validation"},
    )
    cells = [(f"{m}@{lr:g}", PILOT_SEED) for m, lrs in PILOT_LRS.items() for lr in lrs]
    records = run_cells(cfg, [("start", PILOT_SEED), *cells], n_prompts=150)
    lines = [
        f"# {STUDY} pilot: seed {PILOT_SEED}, {cfg.rl_updates} updates x {cfg.num_envs} episodes, "
        "150 validation prompts\n",
        "| run | train CIDEr-D first 5 | last 5 | train KL last 5 | val CIDEr-D greedy | "
        "val CIDEr-D sampled | val KL sampled | val BLEU greedy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        g, s = r["metrics"]["greedy"], r["metrics"]["sampled"]
        first, last = train_reward_ends(r) if r["history"] else (float("nan"),) * 2
        kl = statistics.fmean(h["kl"] for h in r["history"][-5:]) if r["history"] else 0.0
        lines.append(
            f"| {r['agent']} | {first:.3f} | {last:.3f} | {kl:.2f} | {g['cider']:.3f} | "
            f"{s['cider']:.3f} | {s['kl']:.2f} | {g['bleu']:.1f} |"
        )
    for m in PILOT_LRS:
        runs = [r for r in records if r["agent"].startswith(f"{m}@")]
        best = max(runs, key=lambda r: r["metrics"]["greedy"]["cider"])
        lines.append(f"\nbest {m} lr by greedy validation CIDEr-D: {best['agent'].split('@')[1]}")
    md = "\n".join(lines) + "\n"
    (Path(cfg.out) / "pilot.md").write_text(md)
    print(md)


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 15 updates, 150 prompts")
    parser.add_argument("--pilot", action="store_true", help="the lr pilot (train/validation)")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument("--updates", type=int, help="override the number of updates")
    parser.add_argument("--test-prompts", type=int, help="override the number of test prompts")
    parser.add_argument("--out", help="override the output folder")
    ns = parser.parse_args()
    cfg = config(ns.quick)
    over = {
        "seeds": ns.seeds,
        "rl_updates": ns.updates,
        "test_prompts": ns.test_prompts,
        "out": ns.out,
    }
    cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    if ns.pilot:
        pilot(cfg)
        return
    cells = [(m, s) for s in range(cfg.seeds) for m in METHODS]
    records = run_cells(cfg, cells, n_prompts=cfg.test_prompts)
    rows = summarise(records)
    out = Path(cfg.out)
    runtime = time.perf_counter() - start
    cell_s = sum(r["train_seconds"] + r["eval_seconds"] for r in records)
    header = (
        f"# {STUDY}: {cfg.seeds} seeds, {cfg.rl_updates} updates x {cfg.num_envs} episodes on "
        f"CIDEr-D (β = {cfg.extra['beta']}), lr REINFORCE {cfg.rl_lr:g} / PPO, NLPO "
        f"{cfg.ppo_lr:g}, {cfg.test_prompts} test prompts; this invocation {runtime:.0f} s, all "
        f"cells {cell_s:.0f} s of compute\n\n{provenance.describe()}\n"
    )
    md = header + table(rows, cfg)
    write_summary(
        out / "summary.json",
        rows,
        study=STUDY,
        task=TASK,
        model="embedded" if cfg.model == textgym.DEFAULT_MODEL else cfg.model,
        config={k: v for k, v in asdict(cfg).items() if k != "model"},
        runtime_s=runtime,
        cells_compute_s=cell_s,
        git=provenance.git_sha(),
        versions=provenance.versions("sacrebleu", "nltk"),
        provenance=provenance.describe("sacrebleu", "nltk"),
    )
    (out / "summary.md").write_text(md)
    plot(records, out / f"{STUDY}.png")
    print(md)


if __name__ == "__main__":
    main()
