"""Iterative DPO against lexicon hacking: a KL anchor to π_0, and the best round on validation.

The finding (``experiments/results/benchmark``, iterative_dpo on reviews): three rounds of iterative
DPO ranked by VADER sentiment reach sentiment 0.995 at KL(π_θ‖π_0) 95 nats a sequence, with π_0
perplexity of the samples in the hundreds: the policy writes VADER's lexicon, not reviews. This
study adds what DNO-Prct (Rosset et al. 2024, arXiv:2404.03715) and its successors use against this
(``textgym.agents.IterativeDPOConfig``: ``reference="original"``, the KL anchor of Xiong et al.
2024 / Dong et al. 2024's online iterative DPO; best round on validation, DNO-Prct Alg. 2's last
line, scored by the reward minus β_sel·KL(π_t‖π_0)) and measures round-over-round gold reward, KL
and π_0 perplexity with and without them.

Protocol (fixed before any result of this script was seen):

- Task and gold: reviews; π_0 = the embedded model; gold = VADER sentiment in [0, 1]
  (``textgym.rewards.make("sentiment")``). The candidates are ranked by the gold itself, as in the
  finding, so hacking here is not a proxy/gold gap: the gold keeps rising while the text leaves
  π_0's language. Its signals are KL(π_t‖π_0) and the π_0 perplexity of the samples.
- Training: the benchmark cell that made the finding (``textgym/benchmark.py``): K = 4 samples a
  prompt, best vs worst, 128 train prompts a round (drawn by the agent from all 3000), 60 DPO
  updates of 8 pairs, lr 1e-4, β = 0.1, 24 new tokens; T = 6 rounds (the finding was at round 3;
  DNO-Prct runs 6).
- Methods. One training run per (anchor, seed); the selection methods read that run's validation:
      plain              reference="previous": round t is DPO against π_t (DNO-Prct); returns π_T
      anchored           reference="original": every round is DPO against π_0; returns π_T
      plain+best         the best of π_0..π_T on validation, score = reward - β_sel·KL(π_t‖π_0)
      anchored+best      the same on the anchored run
      plain+best(gold)   β_sel = 0: DNO-Prct's rule as written (validation reward alone)
  β_sel = 0.02: the KL coefficient the benchmark's REINFORCE and PPO pay on this task and reward.
  Validation: the first 128 prompts of the validation split, one sample each (the agent's own
  ``validation()``). The runs keep ``select_best_round=False`` so that π_T stays in ``agent.policy``
  to be measured; the selected weights are ``agent.best_policy()`` (the weights
  ``select_best_round=True`` loads at the end), measured once more as a check.
- Measurement after every round t = 0..T on the first 256 test prompts, one completion each at
  temperature 1, the sampler seeded per seed (common random numbers across rounds and methods):
  ``textgym.evaluation.evaluate_policy_on_task`` with ref = π_0: gold (sentiment), kl (per
  sequence), ppl_ref (π_0 perplexity of the completions given the prompt), distinct2, length. A
  selection method's value at round t is that of the policy it would return after t rounds.
- Seeds: 3 (full mode); quick mode: 2 seeds, 3 rounds, 64 prompts a round, 30 updates, 64
  validation and 64 test prompts.
- Statistics: mean and 95% percentile-bootstrap CI over seeds (``textgym.stats``); the change from
  π_0 paired by seed (rows whose metric ends in ``_change``).
- Verdict rule: a returned policy is "hacked" on a seed when its test KL > 30 nats or its ppl_ref
  > 10 (the benchmark's one-round DPO and PPO on this task sit at KL 16-27 and ppl_ref ~7, π_0 at
  ppl_ref 2.2, the finding at KL 95, ppl_ref 905). At round T a method "prevents hacking"
  (reproduced) when it is hacked on no seed and its paired gold change has a CI above 0; "partly"
  when it is hacked on fewer seeds than plain, or on none with a gold change whose CI reaches 0;
  "not reproduced" otherwise. The finding itself reproduces when plain is hacked on most seeds at
  round 3.

    python experiments/repro_iterative_dpo.py          # ~18 min on a shared 2-core CPU (10 CPU-min)
    python experiments/repro_iterative_dpo.py --quick  # ~5 min (2 CPU-min)

Outputs in ``--out`` (experiments/results/iterative_dpo, quick: .../iterative_dpo/quick):
summary.json (rows: study, method, setting = "round t", metric, values per seed, mean, ci95),
summary.md, iterative_dpo.png, and runs/<anchor>_seed<k>.json (one per training run; a rerun with
the same config reuses them).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from textgym.agents import DPOConfig, IterativeDPO, IterativeDPOConfig
from textgym.rewards import make
from tqdm import tqdm

import textgym
from textgym import plots
from textgym.evaluation import evaluate_policy_on_task, samples
from textgym.lm import LanguageModel
from textgym.provenance import describe, git_sha, versions
from textgym.records import write_json
from textgym.stats import bootstrap_ci, paired_change_row, study_row, write_summary
from textgym.tasks import load
from textgym.training import frozen_copy

STUDY = "iterative_dpo"
Anchor = Literal["previous", "original"]
ANCHORS: tuple[Anchor, ...] = ("previous", "original")
METHODS = ("plain", "anchored", "plain+best", "anchored+best", "plain+best(gold)")
METRICS = ("gold", "kl", "ppl_ref", "distinct2", "length")
HACK_KL, HACK_PPL = 30.0, 10.0
"""A policy is hacked when its test KL (nats a sequence) or its π_0 perplexity exceeds these."""


@dataclass(frozen=True)
class StudyConfig:
    seeds: int = 3
    rounds: int = 6
    """T, rounds of sample -> rank -> DPO."""
    prompts_per_round: int = 128
    updates_per_round: int = 60
    k: int = 4
    lr: float = 1e-4
    beta: float = 0.1
    batch_size: int = 8
    max_new_tokens: int = 24
    select_kl_coef: float = 0.02
    """β_sel of the +best methods (the benchmark's RL KL coefficient on this reward)."""
    val_prompts: int = 128
    test_prompts: int = 256
    threads: int = 1
    out: str = "experiments/results/iterative_dpo"


QUICK: dict[str, Any] = {
    "seeds": 2,
    "rounds": 3,
    "prompts_per_round": 64,
    "updates_per_round": 30,
    "val_prompts": 64,
    "test_prompts": 64,
    "out": "experiments/results/iterative_dpo/quick",
}


def measure(
    policy: LanguageModel, ref: LanguageModel, cfg: StudyConfig, seed: int
) -> dict[str, float]:
    """The test metrics of ``policy`` (same prompts and sampler seed for every round of a seed)."""
    m = evaluate_policy_on_task(
        policy,
        "reviews",
        ref=ref,
        split="test",
        n_prompts=cfg.test_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=10_000 + seed,
    )
    return {
        "gold": m["sentiment"],
        "kl": m["kl"],
        "ppl_ref": m["ppl_ref"],
        "distinct2": m["distinct2"],
        "length": m["length"],
    }


def train_run(cfg: StudyConfig, anchor: Anchor, seed: int, bar: Any) -> dict[str, Any]:
    """One iterative DPO run: test metrics of π_0..π_T, the agent's history, the selected policy."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    policy = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    pi_0 = frozen_copy(policy)
    val = load("reviews", "validation")
    icfg = IterativeDPOConfig(
        rounds=cfg.rounds,
        k=cfg.k,
        updates_per_round=cfg.updates_per_round,
        prompts_per_round=cfg.prompts_per_round,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
        dpo=DPOConfig(beta=cfg.beta, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed),
        reference=anchor,
        select_best_round=False,  # π_T stays in agent.policy; best_policy() is the selection
        select_kl_coef=cfg.select_kl_coef,
    )
    agent = IterativeDPO(
        policy,
        list(load("reviews", "train").prompts),
        reward=make("sentiment"),
        val_prompts=list(val.prompts[: cfg.val_prompts]),
        ref=pi_0,
        config=icfg,
        device="cpu",
        progress_bar=False,
    )
    rounds = [measure(policy, pi_0, cfg, seed)]
    history = agent.learn(0)  # row 0: π_0's validation
    bar.update(1)
    for t in range(1, cfg.rounds + 1):
        history += agent.learn(1)
        rounds.append(measure(policy, pi_0, cfg, seed))
        bar.update(1)
        r = rounds[-1]
        bar.write(
            f"{anchor} seed {seed} round {t}: gold {r['gold']:.3f} kl {r['kl']:.1f} "
            f"ppl_ref {r['ppl_ref']:.1f} | val reward {history[-1]['val_reward']:.3f} "
            f"kl {history[-1]['val_kl']:.1f} best round {int(history[-1]['best_round'])}"
        )
    selected = measure(agent.best_policy(), pi_0, cfg, seed)
    return {
        "anchor": anchor,
        "seed": seed,
        "config": asdict(cfg),
        "rounds": rounds,
        "history": history,
        "best_round": agent.best_round,
        "selected": selected,
        "samples_final": samples(policy, "reviews", n=3, max_new_tokens=cfg.max_new_tokens),
        "seconds": time.perf_counter() - start,
    }


def returned_rounds(run: dict[str, Any], method: str) -> list[int]:
    """The round whose policy ``method`` returns after t = 0..T rounds of ``run``."""
    hist = run["history"]
    if method in ("plain", "anchored"):
        return list(range(len(hist)))
    if method.endswith("(gold)"):  # the first round with the best validation reward so far
        best, out = 0, []
        for t, row in enumerate(hist):
            best = t if row["val_reward"] > hist[best]["val_reward"] else best
            out.append(best)
        return out
    return [int(row["best_round"]) for row in hist]  # the agent's own selection


def method_values(
    runs: dict[tuple[str, int], dict[str, Any]], method: str, seeds: Sequence[int]
) -> dict[str, list[list[float]]]:
    """metric -> [round t -> values per seed] for ``method`` (plus "round" returned)."""
    anchor = "original" if method.startswith("anchored") else "previous"
    out: dict[str, list[list[float]]] = {m: [] for m in (*METRICS, "round")}
    per_seed = [(runs[anchor, s], returned_rounds(runs[anchor, s], method)) for s in seeds]
    for t in range(len(per_seed[0][1])):
        for m in METRICS:
            out[m].append([run["rounds"][picks[t]][m] for run, picks in per_seed])
        out["round"].append([float(picks[t]) for _, picks in per_seed])
    return out


def verdicts(values: dict[str, dict[str, list[list[float]]]]) -> dict[str, dict[str, Any]]:
    """The docstring's rule at round T (and the hacked count at round 3) for every method."""

    def hacked(v: dict[str, list[list[float]]], t: int) -> int:
        pairs = zip(v["kl"][t], v["ppl_ref"][t], strict=True)
        return sum(kl > HACK_KL or ppl > HACK_PPL for kl, ppl in pairs)

    plain_hacked = hacked(values["plain"], -1)
    out: dict[str, dict[str, Any]] = {}
    for method, v in values.items():
        n_hacked = hacked(v, -1)
        change = [a - b for a, b in zip(v["gold"][-1], v["gold"][0], strict=True)]
        low, high = bootstrap_ci(change)
        round3 = hacked(v, min(3, len(v["kl"]) - 1))
        if method == "plain":
            word = f"finding {'' if round3 * 2 > len(change) else 'not '}reproduced"
        elif n_hacked == 0 and low > 0:
            word = "reproduced"
        elif n_hacked < plain_hacked or n_hacked == 0:
            word = "partly"
        else:
            word = "not reproduced"
        out[method] = {
            "hacked_seeds_final": n_hacked,
            "hacked_seeds_round3": round3,
            "gold_change_final": [float(np.mean(change)), low, high],
            "verdict": word,
        }
    return out


def summary_rows(
    values: dict[str, dict[str, list[list[float]]]], settings: Sequence[str]
) -> list[dict[str, Any]]:
    rows = []
    for method, v in values.items():
        for t, setting in enumerate(settings):
            for m in (*METRICS, "round"):
                rows.append(study_row(STUDY, method, setting, m, v[m][t]))
            if t > 0:
                for m in ("gold", "kl", "ppl_ref"):
                    rows.append(paired_change_row(STUDY, method, setting, m, v[m][t], v[m][0]))
    return rows


def fmt(values: Sequence[float], digits: int = 3) -> str:
    low, high = bootstrap_ci(values)
    return f"{np.mean(values):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(
    cfg: StudyConfig,
    values: dict[str, dict[str, list[list[float]]]],
    verdict: dict[str, dict[str, Any]],
    runs: dict[tuple[str, int], dict[str, Any]],
    seconds: float,
) -> str:
    train = sum(r["seconds"] for r in runs.values())
    lines = [
        f"# Iterative DPO against lexicon hacking ({cfg.seeds} seeds, {cfg.rounds} rounds)",
        "",
        f"The {len(runs)} runs (training and measurement) took {train / 60:.1f} min in all; this "
        f"report {seconds / 60:.1f} min (runs reused from runs/ are not re-timed); "
        f"{describe('numpy')}.",
        "",
        f"Reviews task, gold = VADER sentiment, {cfg.test_prompts} test prompts; K = {cfg.k}, "
        f"{cfg.prompts_per_round} prompts and {cfg.updates_per_round} DPO updates a round, "
        f"β = {cfg.beta}, lr {cfg.lr}; best round on {cfg.val_prompts} validation prompts by "
        f"reward - {cfg.select_kl_coef}·KL(π_t‖π_0) (+best) or by reward alone (+best(gold)). "
        "Mean [95% bootstrap CI] over seeds; Δ gold: paired change from π_0; "
        f"hacked: KL > {HACK_KL:g} or ppl_ref > {HACK_PPL:g}.",
        "",
        "| method | round | gold | Δ gold | KL (nats) | ppl_ref | distinct-2 | returns round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, v in values.items():
        for t in range(len(v["gold"])):
            change = [a - b for a, b in zip(v["gold"][t], v["gold"][0], strict=True)]
            rounds = "/".join(str(int(r)) for r in v["round"][t])
            lines.append(
                f"| {method} | {t} | {fmt(v['gold'][t])} | {fmt(change) if t else '-'} | "
                f"{fmt(v['kl'][t], 1)} | {fmt(v['ppl_ref'][t], 1)} | "
                f"{np.mean(v['distinct2'][t]):.3f} | {rounds} |"
            )
    lines += ["", "## Verdict (rule in the script's docstring)", ""]
    for method, v in verdict.items():
        m, low, high = v["gold_change_final"]
        lines.append(
            f"- {method}: {v['verdict']}; hacked on {v['hacked_seeds_final']}/{cfg.seeds} seeds "
            f"at round {cfg.rounds} ({v['hacked_seeds_round3']} at round "
            f"{min(3, cfg.rounds)}); gold change {m:+.3f} [{low:+.3f}, {high:+.3f}]"
        )
    lines += ["", f"## Samples of π_{cfg.rounds} (seed 0, test prompts)", ""]
    for anchor in ANCHORS:
        for prompt, text in runs[anchor, 0]["samples_final"]:
            lines.append(f"- {anchor}: {prompt} **{text.strip()}**")
    return "\n".join(lines) + "\n"


def plot(values: dict[str, dict[str, list[list[float]]]], out: Path) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), dpi=80)
    styles = {"plain": "C3-", "anchored": "C0-", "plain+best": "C3--", "anchored+best": "C0--"}
    styles["plain+best(gold)"] = "C1:"
    for method, v in values.items():
        t = np.arange(len(v["gold"]))
        for ax, metric in zip(axes[:3], ("gold", "kl", "ppl_ref"), strict=True):
            mean = [np.mean(x) for x in v[metric]]
            ci = np.array([bootstrap_ci(x) for x in v[metric]])
            ax.plot(t, mean, styles[method], marker="o", ms=3, label=method)
            ax.fill_between(t, ci[:, 0], ci[:, 1], color=styles[method][:2], alpha=0.12)
        kl = [np.mean(x) for x in v["kl"]]
        axes[3].plot(kl, [np.mean(x) for x in v["gold"]], styles[method], marker="o", ms=3)
    titles = ("gold (VADER sentiment)", "KL(π_t‖π_0), nats a sequence", "π_0 perplexity")
    for ax, title in zip(axes[:3], titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("round t")
        ax.set_xticks(range(len(values["plain"]["gold"])))
    for ax in (axes[1], axes[2]):
        ax.set_yscale("symlog" if ax is axes[1] else "log")
    axes[2].axhline(HACK_PPL, color="grey", lw=0.8, ls=":")
    axes[1].axhline(HACK_KL, color="grey", lw=0.8, ls=":")
    axes[1].set_ylim(bottom=-0.5)  # KL ≥ 0; symlog would otherwise mirror the axis below 0
    axes[3].set_xscale("symlog")
    axes[3].set_title("gold vs KL (rounds 0..T)")
    axes[3].set_xlabel("KL (nats)")
    axes[0].legend(fontsize=7)
    return plots.save(fig, out / "iterative_dpo.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 short rounds")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int)
    ns = parser.parse_args()
    cfg = replace(StudyConfig(), **QUICK) if ns.quick else StudyConfig()
    given: dict[str, Any] = {k: getattr(ns, k) for k in ("seeds", "rounds", "out", "threads")}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    seeds = list(range(cfg.seeds))
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    jobs: list[tuple[Anchor, int]] = [(a, s) for s in seeds for a in ANCHORS]
    with tqdm(total=len(jobs) * (cfg.rounds + 1), desc="rounds", dynamic_ncols=True) as bar:
        for anchor, seed in jobs:
            path = out / "runs" / f"{anchor}_seed{seed}.json"
            if path.exists() and json.loads(path.read_text())["config"] == asdict(cfg):
                runs[anchor, seed] = json.loads(path.read_text())
                bar.update(cfg.rounds + 1)
                continue
            run = train_run(cfg, anchor, seed, bar)
            write_json(path, run, newline=False)  # atomic: no half run to resume from
            runs[anchor, seed] = run
    for (a, s), run in runs.items():  # best_policy() holds the round the agent selected
        picked = run["rounds"][run["best_round"]]
        if any(not math.isclose(picked[m], run["selected"][m], rel_tol=1e-5) for m in METRICS):
            raise RuntimeError(f"{a} seed {s}: best_policy() is not round {run['best_round']}")
    values = {m: method_values(runs, m, seeds) for m in METHODS}
    settings = [f"round {t}" for t in range(cfg.rounds + 1)]
    verdict = verdicts(values)
    seconds = time.perf_counter() - start
    write_summary(
        out / "summary.json",
        summary_rows(values, settings),
        study=STUDY,
        config=asdict(cfg),
        methods={
            "plain": "reference='previous' (DPO against π_t each round), returns π_T",
            "anchored": "reference='original' (DPO against π_0 each round), returns π_T",
            "plain+best": f"best round of plain by val reward - {cfg.select_kl_coef}·KL(π_t‖π_0)",
            "anchored+best": f"best round of anchored by val reward - {cfg.select_kl_coef}·KL",
            "plain+best(gold)": "best round of plain by validation reward alone (β_sel = 0)",
        },
        hacked_if={"kl_above": HACK_KL, "ppl_ref_above": HACK_PPL},
        verdict=verdict,
        runtime_s=seconds,
        runs_seconds_total=sum(r["seconds"] for r in runs.values()),
        run_seconds={f"{a}_seed{s}": r["seconds"] for (a, s), r in runs.items()},
        provenance={"git": git_sha(), "versions": versions("numpy"), "describe": describe()},
    )
    md = markdown(cfg, values, verdict, runs, seconds)
    (out / "summary.md").write_text(md)
    plot(values, out)
    print(md)


if __name__ == "__main__":
    main()
