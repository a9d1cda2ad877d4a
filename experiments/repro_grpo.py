"""GRPO vs Dr. GRPO vs DAPO vs RLOO vs PPO on verifiable arithmetic, from one supervised start.

The claims (``docs/agents.md``, GRPO family): group-relative estimators (GRPO, Shao et al. 2024)
raise the accuracy of a supervised model on a task with a verifiable reward; GRPO's per-sequence
length normalisation biases it towards long wrong answers, which Dr. GRPO removes (Liu et al. 2025,
arXiv:2503.20783, Sec. 3.1); DAPO's clip-higher, token mean and dynamic sampling (Yu et al. 2025)
and the older RLOO and PPO are the baselines.

Protocol (fixed before any RL result of this script was seen):

- Task: the arithmetic word problems of ``textgym.verifiable`` with small numbers
  (``VerifiableDataConfig(train=20_000, max_start=20, max_operand=9, max_value=99)``): train and
  validation 1-3 steps, test 4-5 steps (longer chains than any seen in training). The built-in
  numbers (up to 999) are beyond the embedded 1M-parameter model: a pilot reached 4% accuracy after
  250 supervised steps there, 13% here after 500.
- Reward: ``math`` (1 when the final answer equals the reference's, else 0; no partial credit).
- Supervised start π_sft: behaviour cloning of the embedded model on the worked solutions
  (``sft_steps`` steps of 32, lr 2e-3, seed 0), one start for every method and seed, cached in
  ``<out>/sft``. The SFT budget was chosen on the pilot's validation accuracy alone.
- RL: from π_sft, each method with the same budget of sampled completions: ``updates`` rounds of
  8 prompts x 8 samples (64 completions, at most 48 new tokens, temperature 1). Every method keeps
  its paper's / library's defaults except the shared lr 1e-4 (PPO: its default 3e-5 with 4 epochs
  x 4 minibatches) and group size 8:
      grpo      GRPOConfig.preset("grpo"): group std, token ratios, sequence mean, β = 0.04 (k3),
                2 minibatches a batch (so that the clip acts)
      dr_grpo   preset("dr_grpo"): no std, constant normaliser, β = 0, 2 minibatches
      dapo      preset("dapo"): clip (0.2, 0.28), token mean, dynamic sampling, β = 0,
                2 minibatches
      rloo      REINFORCEConfig(baseline="rloo", rloo_k=8), β = 0, one step a batch
      ppo       PPOConfig(lr=3e-5) with its value head and defaults (β = 0.05 in the reward)
- Measurement every ``eval_every`` updates and at update 0 (π_sft) on the 200 validation problems,
  one sample each at temperature 1, the sampler seeded by the seed (common random numbers across
  updates and methods): accuracy, mean response length in tokens (all, correct, wrong), KL(π‖π_sft)
  per sequence (k1 on the samples). After the last update also: greedy validation accuracy and the
  300 test problems (4-5 steps), sampled.
- Seeds: 3 (full; RL seeds 0-2 on the same π_sft); quick: 2 seeds, 10 updates, 100 validation and
  100 test problems.
- Statistics: mean and 95% percentile-bootstrap CI over seeds (``textgym.stats``); changes from
  π_sft paired by seed (``_change`` rows); method differences paired by seed.
- Verdicts: a method "raises accuracy" when its validation-accuracy change has a CI above 0. The
  length bias "reproduces" when GRPO's change in wrong-answer length minus Dr. GRPO's (paired by
  seed) has a CI above 0, "does not" when the CI is below or straddles 0.

    python experiments/repro_grpo.py          # full
    python experiments/repro_grpo.py --quick  # 10 min from scratch, 6 of them the (cached) SFT

Outputs in ``--out`` (experiments/results/grpo; quick: .../grpo/quick): summary.json (rows: study,
method, setting = "update u" or "final", metric, values per seed, mean, ci95), summary.md,
grpo.png and runs/<method>_seed<k>.json (a rerun with the same config reuses them); π_sft is
cached in experiments/results/grpo/runs/sft (``--sft-dir``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from textgym.agents import (
    BC,
    GRPO,
    PPO,
    REINFORCE,
    BCConfig,
    GRPOConfig,
    PPOConfig,
    REINFORCEConfig,
)
from tqdm import tqdm

import textgym
from textgym import plots
from textgym.lm import LanguageModel
from textgym.provenance import describe, git_sha, versions
from textgym.records import write_json
from textgym.rollout import Sampling, collect
from textgym.stats import bootstrap_ci, paired_change_row, study_row, write_summary
from textgym.tasks import Task
from textgym.training import frozen_copy
from textgym.verifiable import VerifiableDataConfig, arithmetic_records

STUDY = "grpo"
METHODS = ("grpo", "dr_grpo", "dapo", "rloo", "ppo")
CURVE_METRICS = ("accuracy", "length", "length_correct", "length_wrong", "kl")
SAMPLED = Sampling()
"""Temperature 1: the policy's own distribution."""
FINAL_METRICS = ("accuracy", "greedy_accuracy", "test_accuracy", "length_wrong", "kl")


@dataclass(frozen=True)
class StudyConfig:
    seeds: int = 3
    n_train: int = 20_000
    max_start: int = 20
    max_operand: int = 9
    max_value: int = 99
    sft_steps: int = 1000
    sft_batch: int = 32
    sft_lr: float = 2e-3
    updates: int = 40
    prompts_per_update: int = 8
    group_size: int = 8
    lr: float = 1e-4
    ppo_lr: float = 3e-5
    max_new_tokens: int = 48
    test_max_new_tokens: int = 64
    eval_every: int = 10
    n_val: int = 200
    n_test: int = 300
    threads: int = 1
    out: str = "experiments/results/grpo"
    sft_dir: str = "experiments/results/grpo/runs/sft"
    """Where π_sft is cached (quick and full mode share it)."""


QUICK: dict[str, Any] = {
    "seeds": 2,
    "updates": 10,
    "eval_every": 5,
    "n_val": 100,
    "n_test": 100,
    "out": "experiments/results/grpo/quick",
}


def splits(cfg: StudyConfig) -> dict[str, Task]:
    rows = arithmetic_records(
        VerifiableDataConfig(
            train=cfg.n_train,
            max_start=cfg.max_start,
            max_operand=cfg.max_operand,
            max_value=cfg.max_value,
        )
    )
    return {
        s: Task.from_records(rows, name="arithmetic", split=s)
        for s in ("train", "validation", "test")
    }


def sft_start(cfg: StudyConfig, data: dict[str, Task]) -> Path:
    """π_sft: BC of the embedded model on the worked solutions (cached in ``cfg.sft_dir``)."""
    folder = Path(cfg.sft_dir)
    key = {k: getattr(cfg, k) for k in ("n_train", "max_start", "max_operand", "max_value")}
    key |= {k: getattr(cfg, k) for k in ("sft_steps", "sft_batch", "sft_lr")}
    marker = folder / "study_sft.json"
    if marker.exists() and json.loads(marker.read_text())["key"] == key:
        return folder
    start = time.perf_counter()
    torch.manual_seed(0)
    lm = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    bc_cfg = BCConfig(
        lr=cfg.sft_lr, batch_size=cfg.sft_batch, eval_every=10**9, patience=None, val_fraction=0.02
    )
    bc = BC(lm, data["train"], bc_cfg, progress_bar=True)
    for _ in range(0, cfg.sft_steps, 250):  # in chunks, as the pilot that chose the budget ran
        bc.learn(min(250, cfg.sft_steps - bc.step))
    lm.save_pretrained(folder)
    write_json(marker, {"key": key, "seconds": time.perf_counter() - start})
    return folder


def env_for(policy: LanguageModel, task: Task, n: int, max_new_tokens: int) -> Any:
    return gym.make_vec(
        "TextGen-v0",
        num_envs=n,
        model=policy,
        task=task,
        reward="math",
        max_new_tokens=max_new_tokens,
    )


@torch.no_grad()
def measure(
    policy: LanguageModel,
    ref: LanguageModel,
    task: Task,
    n: int,
    max_new_tokens: int,
    seed: int,
    sampling: Sampling = SAMPLED,
) -> dict[str, float]:
    """Accuracy, lengths and KL(π‖ref) of one completion for each of the first ``n`` problems."""
    generator = torch.Generator().manual_seed(seed)
    correct, lengths, kls = [], [], []
    for start in range(0, n, 100):
        idx = np.arange(start, min(start + 100, n))
        env = env_for(policy, task, len(idx), max_new_tokens)
        out = collect(
            policy,
            env,
            sampling=sampling,
            generator=generator,
            ref=ref,
            seed=seed,
            options={"prompt_index": idx},
        )
        env.close()
        correct.append(out.rewards.float() > 0.5)
        lengths.append(out.completion_mask.sum(-1).float())
        kls.append(out.sequence_kl())
    ok, length = torch.cat(correct), torch.cat(lengths)
    return {
        "accuracy": float(ok.float().mean()),
        "length": float(length.mean()),
        "length_correct": float(length[ok].mean()) if ok.any() else float("nan"),
        "length_wrong": float(length[~ok].mean()) if (~ok).any() else float("nan"),
        "kl": float(torch.cat(kls).mean()),
    }


def make_agent(method: str, policy: LanguageModel, env: Any, cfg: StudyConfig, seed: int) -> Any:
    g = cfg.group_size
    if method in ("grpo", "dr_grpo", "dapo"):
        config = GRPOConfig.preset(method, group_size=g, lr=cfg.lr, n_minibatches=2, seed=seed)
        return GRPO(policy, env, config=config, progress_bar=False)
    if method == "rloo":
        config = REINFORCEConfig(baseline="rloo", rloo_k=g, lr=cfg.lr, seed=seed)
        return REINFORCE(policy, env, config=config, progress_bar=False)
    if method == "ppo":
        return PPO(policy, env, config=PPOConfig(lr=cfg.ppo_lr, seed=seed), progress_bar=False)
    raise ValueError(f"unknown method {method!r}: choose one of {METHODS}")


def train_run(
    cfg: StudyConfig, method: str, seed: int, sft: Path, data: dict[str, Task], bar: Any
) -> dict[str, Any]:
    """One RL run from π_sft: the validation curve, the final measurements, the history."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    policy = LanguageModel.from_pretrained(sft, device="cpu")
    ref = frozen_copy(policy)
    val, test = data["validation"], data["test"]

    def on_val() -> dict[str, float]:
        return measure(policy, ref, val, cfg.n_val, cfg.max_new_tokens, 10_000 + seed)

    env = env_for(
        policy, data["train"], cfg.prompts_per_update * cfg.group_size, cfg.max_new_tokens
    )
    agent = make_agent(method, policy, env, cfg, seed)
    curve = [{"update": 0, **on_val()}]
    history: list[dict[str, float]] = []
    for done in range(cfg.eval_every, cfg.updates + 1, cfg.eval_every):
        history += agent.learn(cfg.eval_every)
        curve.append({"update": done, **on_val()})
        bar.update(cfg.eval_every)
        c = curve[-1]
        bar.write(
            f"{method} seed {seed} update {done}: accuracy {c['accuracy']:.3f} "
            f"length {c['length']:.1f} (wrong {c['length_wrong']:.1f}) kl {c['kl']:.2f}"
        )
    greedy = Sampling(top_k=1)
    final = {
        **curve[-1],
        "greedy_accuracy": measure(
            policy, ref, val, cfg.n_val, cfg.max_new_tokens, 10_000 + seed, greedy
        )["accuracy"],
        "test_accuracy": measure(
            policy, ref, test, cfg.n_test, cfg.test_max_new_tokens, 20_000 + seed
        )["accuracy"],
    }
    env.close()
    return {
        "method": method,
        "seed": seed,
        "config": asdict(cfg),
        "curve": curve,
        "final": final,
        "history": history,
        "seconds": time.perf_counter() - start,
    }


def start_values(cfg: StudyConfig, sft: Path, data: dict[str, Task], seed: int) -> dict[str, Any]:
    """π_sft's final-metric values for ``seed`` (the same samplers as the runs' final ones)."""
    policy = LanguageModel.from_pretrained(sft, device="cpu")
    ref = frozen_copy(policy)
    val, test = data["validation"], data["test"]
    m = measure(policy, ref, val, cfg.n_val, cfg.max_new_tokens, 10_000 + seed)
    m["greedy_accuracy"] = measure(
        policy, ref, val, cfg.n_val, cfg.max_new_tokens, 10_000 + seed, Sampling(top_k=1)
    )["accuracy"]
    m["test_accuracy"] = measure(
        policy, ref, test, cfg.n_test, cfg.test_max_new_tokens, 20_000 + seed
    )["accuracy"]
    return m


def fmt(values: Sequence[float], digits: int = 3) -> str:
    lo, hi = bootstrap_ci(values)
    return f"{np.mean(values):.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary_rows(
    runs: dict[tuple[str, int], dict[str, Any]],
    starts: dict[int, dict[str, Any]],
    seeds: Sequence[int],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for method in METHODS:
        curves = [runs[method, s]["curve"] for s in seeds]
        for i, point in enumerate(curves[0]):
            setting = f"update {point['update']}"
            for metric in CURVE_METRICS:
                values = [c[i][metric] for c in curves]
                if not np.isfinite(values).all():  # e.g. no correct answer: no such length
                    continue
                rows.append(study_row(STUDY, method, setting, metric, values))
                before = [c[0][metric] for c in curves]
                if i and np.isfinite(before).all():
                    rows.append(paired_change_row(STUDY, method, setting, metric, values, before))
        for metric in FINAL_METRICS:
            after = [runs[method, s]["final"][metric] for s in seeds]
            rows.append(study_row(STUDY, method, "final", metric, after))
            before = [starts[s][metric] for s in seeds]
            rows.append(paired_change_row(STUDY, method, "final", metric, after, before))
    return rows


def verdicts(
    runs: dict[tuple[str, int], dict[str, Any]],
    starts: dict[int, dict[str, Any]],
    seeds: Sequence[int],
) -> dict[str, Any]:
    def change(method: str, metric: str) -> list[float]:
        return [runs[method, s]["final"][metric] - starts[s][metric] for s in seeds]

    out: dict[str, Any] = {}
    for method in METHODS:
        d = change(method, "accuracy")
        lo, hi = bootstrap_ci(d)
        out[f"{method} raises accuracy"] = {
            "accuracy_change": [float(np.mean(d)), lo, hi],
            "verdict": "yes" if lo > 0 else "no",
        }
    bias = [
        a - b
        for a, b in zip(
            change("grpo", "length_wrong"), change("dr_grpo", "length_wrong"), strict=True
        )
    ]
    lo, hi = bootstrap_ci(bias)
    out["length bias (GRPO - Dr. GRPO, wrong-answer length change)"] = {
        "difference": [float(np.mean(bias)), lo, hi],
        "verdict": "reproduced" if lo > 0 else "not reproduced",
    }
    for method in METHODS[1:]:
        d = [
            runs[method, s]["final"]["accuracy"] - runs["grpo", s]["final"]["accuracy"]
            for s in seeds
        ]
        lo, hi = bootstrap_ci(d)
        out[f"{method} - grpo, final accuracy"] = [float(np.mean(d)), lo, hi]
    return out


def markdown(
    cfg: StudyConfig,
    runs: dict[tuple[str, int], dict[str, Any]],
    starts: dict[int, dict[str, Any]],
    seeds: Sequence[int],
    verdict: dict[str, Any],
    seconds: float,
) -> str:
    run_seconds = sum(r["seconds"] for r in runs.values())
    lines = [
        "# GRPO family on verifiable arithmetic (experiments/repro_grpo.py)",
        "",
        f"{len(seeds)} seeds, {cfg.updates} updates of {cfg.prompts_per_update} prompts x "
        f"{cfg.group_size} samples from one supervised start ({cfg.sft_steps} BC steps); "
        f"mean [95% bootstrap CI] over seeds; the runs took {run_seconds / 60:.0f} min in all "
        f"(this summary {seconds / 60:.1f} min); {describe('numpy')}.",
        "",
        "| method | val accuracy | change from start | greedy val | test (4-5 steps) | "
        "wrong-answer length (change) | KL(π‖π_sft) |",
        "|---|---|---|---|---|---|---|",
    ]
    start_acc = [starts[s]["accuracy"] for s in seeds]
    lines.append(
        f"| π_sft | {fmt(start_acc)} | | {fmt([starts[s]['greedy_accuracy'] for s in seeds])} "
        f"| {fmt([starts[s]['test_accuracy'] for s in seeds])} "
        f"| {fmt([starts[s]['length_wrong'] for s in seeds], 1)} | 0 |"
    )
    for method in METHODS:
        f = [runs[method, s]["final"] for s in seeds]
        acc = [x["accuracy"] for x in f]
        wrong = [
            x["length_wrong"] - starts[s]["length_wrong"] for x, s in zip(f, seeds, strict=True)
        ]
        gain = [a - b for a, b in zip(acc, start_acc, strict=True)]
        lines.append(
            f"| {method} | {fmt(acc)} | {fmt(gain)} "
            f"| {fmt([x['greedy_accuracy'] for x in f])} | {fmt([x['test_accuracy'] for x in f])} "
            f"| {fmt(wrong, 1)} | {fmt([x['kl'] for x in f], 2)} |"
        )
    lines += ["", "Verdicts (mean [95% CI] over seeds, paired by seed):", ""]
    for key, v in verdict.items():
        if isinstance(v, dict):
            (name, (m, lo, hi)), word = next(iter(v.items())), v["verdict"]
            lines.append(f"- {key}: {name} {m:+.3f} [{lo:+.3f}, {hi:+.3f}]: {word}")
        else:
            lines.append(f"- {key}: {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]")
    return "\n".join(lines) + "\n"


def plot(runs: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int], out: Path) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), dpi=80)
    titles = {
        "accuracy": "validation accuracy (sampled)",
        "length": "response length (tokens)",
        "length_wrong": "length of wrong answers",
        "kl": "KL(π‖π_sft), nats a sequence",
    }
    for k, method in enumerate(METHODS):
        curves = [runs[method, s]["curve"] for s in seeds]
        u = [p["update"] for p in curves[0]]
        for ax, metric in zip(axes, titles, strict=True):
            v = [[c[i][metric] for c in curves] for i in range(len(u))]
            ci = np.array([bootstrap_ci(x) for x in v])
            ax.plot(u, [np.mean(x) for x in v], f"C{k}-", marker="o", ms=3, label=method)
            ax.fill_between(u, ci[:, 0], ci[:, 1], color=f"C{k}", alpha=0.12)
    for ax, title in zip(axes, titles.values(), strict=True):
        ax.set_title(title)
        ax.set_xlabel("update")
    axes[0].legend(fontsize=7)
    return plots.save(fig, out / "grpo.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 10 updates")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--updates", type=int)
    parser.add_argument("--sft-steps", type=int, dest="sft_steps")
    parser.add_argument("--eval-every", type=int, dest="eval_every")
    parser.add_argument("--n-val", type=int, dest="n_val")
    parser.add_argument("--n-test", type=int, dest="n_test")
    parser.add_argument("--sft-dir", dest="sft_dir")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--only-seeds", nargs="+", type=int, dest="only_seeds",
        help="train these seeds' runs only (to split the work over processes); no summary",
    )  # fmt: skip
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int)
    ns = parser.parse_args()
    cfg = replace(StudyConfig(), **QUICK) if ns.quick else StudyConfig()
    names = ("seeds", "updates", "sft_steps", "eval_every", "n_val", "n_test", "sft_dir", "out")
    given = {k: getattr(ns, k) for k in (*names, "threads")}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    data = splits(cfg)
    sft = sft_start(cfg, data)
    seeds = list(range(cfg.seeds))
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    jobs = [(m, s) for s in (ns.only_seeds or seeds) for m in ns.methods]
    with tqdm(total=len(jobs) * cfg.updates, desc="updates", dynamic_ncols=True) as bar:
        for method, seed in jobs:
            path = out / "runs" / f"{method}_seed{seed}.json"
            if path.exists() and json.loads(path.read_text())["config"] == asdict(cfg):
                runs[method, seed] = json.loads(path.read_text())
                bar.update(cfg.updates)
                continue
            run = train_run(cfg, method, seed, sft, data, bar)
            write_json(path, run, newline=False)  # atomic: no half run to resume from
            runs[method, seed] = run
    if set(ns.methods) != set(METHODS) or ns.only_seeds:
        print("a subset of the runs: no summary written (rerun without --methods/--only-seeds)")
        return
    starts = {s: start_values(cfg, sft, data, s) for s in seeds}
    for s in seeds:  # the runs' update-0 point is π_sft measured with the same sampler
        if runs[METHODS[0], s]["curve"][0]["accuracy"] != starts[s]["accuracy"]:
            raise RuntimeError(f"seed {s}: π_sft's accuracy differs between runs and the start")
    verdict = verdicts(runs, starts, seeds)
    seconds = time.perf_counter() - start
    write_summary(
        out / "summary.json",
        summary_rows(runs, starts, seeds),
        study=STUDY,
        config=asdict(cfg),
        start=starts,
        verdict=verdict,
        runtime_s=seconds,
        runs_seconds_total=sum(r["seconds"] for r in runs.values()),
        sft_seconds=json.loads((sft / "study_sft.json").read_text())["seconds"],
        provenance={"git": git_sha(), "versions": versions("numpy"), "describe": describe()},
    )
    md = markdown(cfg, runs, starts, seeds, verdict, seconds)
    (out / "summary.md").write_text(md)
    plot(runs, seeds, out)
    print(md)


if __name__ == "__main__":
    main()
