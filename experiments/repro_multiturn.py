"""Multi-turn RL at the token level: does RL raise the calculator task's accuracy over a BC start?

The calculator (``textgym.multiturn``, docs/multiturn.md) is a conversation: the policy writes a
call ``CALC: 7*8`` and EOS, the environment answers `` = 56`` (environment tokens, fed to the
policy's KV cache, never actions), the policy writes ``The answer is 56.``; the reward is 1 when
that answer is right. The embedded model cannot use the tool at all, so every run starts from
behaviour cloning on the planner's dialogues (the policy's turns labelled, the environment's
attended), stopped early on purpose, where the policy calls the tool but often miscopies a number.

Protocol (fixed before any result of this script was seen):

- Task: the calculator with one operation on 2..9 (``CalculatorConfig(steps=(1,), max_factor=9,
  max_term=9)``): 120 train expressions, 40 held out (validation + test); the registered task's
  two operations and larger numbers need a longer BC run than this study affords.
- Start: BC from the embedded model, 120 steps of 16 dialogues, lr 3e-3 (the slow test's start).
- Methods, each from the same BC start of a seed, ``updates`` rounds each (full: 60; quick: 20):
      reinforce   REINFORCE, b = 0 (the 0/1 reward reinforces the right transcripts), lr 1e-3,
                  32 episodes a round, no KL
      ppo         PPO, β = 0, lr 1e-4, 32 episodes a round, 2 epochs of 2 minibatches, γ = 1,
                  λ = 0.95, GAE over the policy's tokens only
      bc_more     BC continued for as many steps (16 expert dialogues each) as the RL methods
                  have rounds: what the same number of updates does with demonstrations instead
                  of rewards (context, not a competitor: it sees the expert's answers)
- Measurement every 10 rounds (and at the start) on the 40 held-out expressions: 256 episodes
  sampled at temperature 1, env and sampler seeded per seed (common random numbers across
  methods and rounds): accuracy (mean reward), policy tokens, environment tokens and tool calls
  per episode.
- Seeds: 5 (full), 3 (quick).
- Statistics: mean and 95% percentile-bootstrap CI over seeds (``textgym.stats``); the change from
  the BC start paired by seed (rows whose metric ends in ``_change``).
- Verdict rule: a method "raises accuracy over the start" (reproduced) when its paired accuracy
  change after the last round has a CI above 0; "partly" when the mean change is > 0 but the CI
  reaches 0; "not reproduced" otherwise. The issue's claim (RL raises the calculator's accuracy)
  is reproduced when reinforce or ppo is.

    python experiments/repro_multiturn.py           # ~25 min on a shared 2-core CPU
    python experiments/repro_multiturn.py --quick   # ~6 min

Outputs in ``--out`` (experiments/results/multiturn, quick: .../multiturn/quick): summary.json
(rows: study, method, setting = "round t", metric, values per seed, mean, ci95), summary.md,
multiturn.png, and runs/seed<k>.json (one per seed, all methods; a rerun with the same config
reuses them).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from textgym.agents import BC, PPO, REINFORCE, BCConfig, PPOConfig, REINFORCEConfig
from tqdm import tqdm

from textgym import plots
from textgym.envs import TextGenVectorEnv
from textgym.lm import LanguageModel
from textgym.multiturn import CalculatorConfig, MultiTurnTask, calculator_task
from textgym.provenance import describe, git_sha, versions
from textgym.records import write_json
from textgym.rollout import collect
from textgym.stats import bootstrap_ci, paired_change_row, study_row, write_summary

STUDY = "multiturn"
METHODS = ("reinforce", "ppo", "bc_more")
METRICS = ("accuracy", "policy_tokens", "env_tokens", "calls")


@dataclass(frozen=True)
class StudyConfig:
    seeds: int = 5
    updates: int = 60
    """Rounds of each RL method (steps of bc_more)."""
    eval_every: int = 10
    bc_steps: int = 120
    bc_lr: float = 3e-3
    bc_batch: int = 16
    reinforce_lr: float = 1e-3
    ppo_lr: float = 1e-4
    episodes: int = 32
    """Episodes a round (num_envs of the training env)."""
    eval_episodes: int = 256
    max_new_tokens: int = 32
    threads: int = 1
    out: str = "experiments/results/multiturn"


QUICK: dict[str, Any] = {
    "seeds": 3,
    "updates": 20,
    "eval_episodes": 128,
    "out": "experiments/results/multiturn/quick",
}

TASK = CalculatorConfig(train=120, validation=20, test=20, steps=(1,), max_factor=9, max_term=9)


def held_out() -> MultiTurnTask:
    """The validation and test expressions as one task."""
    val, test = calculator_task("validation", TASK), calculator_task("test", TASK)
    refs = (val.references or ()) + (test.references or ())
    return MultiTurnTask.from_task(
        val, prompts=val.prompts + test.prompts, references=refs, split=None
    )


@torch.no_grad()
def measure(policy: LanguageModel, env: TextGenVectorEnv, seed: int) -> dict[str, float]:
    """One round of the held-out env (seeded env and sampler: the same draws for every policy)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    out = collect(policy, env, generator=gen, seed=10_000 + seed)
    env_tokens = out.env_mask.sum(-1) if out.env_mask is not None else torch.zeros(len(out))
    calls = [float(t.count("CALC:")) for t in out.texts]
    return {
        "accuracy": float(out.rewards.mean()),
        "policy_tokens": float(out.completion_mask.sum(-1).mean()),
        "env_tokens": float(env_tokens.mean()),
        "calls": float(np.mean(calls)),
    }


def train_seed(cfg: StudyConfig, seed: int, bar: Any) -> dict[str, Any]:
    """The BC start of one seed, then every method from it; the measured curves."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    train = calculator_task("train", TASK)
    policy = LanguageModel.from_pretrained(device="cpu")
    bc_cfg = BCConfig(
        lr=cfg.bc_lr,
        batch_size=cfg.bc_batch,
        eval_every=10**9,
        patience=None,
        val_fraction=0.0,
        seed=seed,
    )
    bc = BC(policy, train, bc_cfg, progress_bar=False)
    bc.learn(cfg.bc_steps)
    bc_state = copy.deepcopy(policy.model.state_dict())
    bc_optimizer = copy.deepcopy(bc.optimizer.state_dict())
    evaluation = TextGenVectorEnv(
        cfg.eval_episodes, model=policy, task=held_out(), max_new_tokens=cfg.max_new_tokens
    )
    start_metrics = measure(policy, evaluation, seed)
    bar.write(f"seed {seed}: BC start accuracy {start_metrics['accuracy']:.3f}")
    curves: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for method in METHODS:
        t0 = time.perf_counter()
        policy.model.load_state_dict(bc_state)
        step = _stepper(cfg, method, policy, train, seed, bc, bc_optimizer)
        curve = [start_metrics]
        for _ in range(cfg.updates // cfg.eval_every):
            step(cfg.eval_every)
            curve.append(measure(policy, evaluation, seed))
            bar.update(1)
        curves[method] = curve
        seconds[method] = time.perf_counter() - t0
        bar.write(
            f"seed {seed} {method}: accuracy {start_metrics['accuracy']:.3f} -> "
            f"{curve[-1]['accuracy']:.3f} ({seconds[method]:.0f} s)"
        )
    return {
        "seed": seed,
        "config": asdict(cfg),
        "curves": curves,
        "method_seconds": seconds,
        "seconds": time.perf_counter() - start,
    }


def _stepper(
    cfg: StudyConfig,
    method: str,
    policy: LanguageModel,
    train: MultiTurnTask,
    seed: int,
    bc: BC,
    bc_optimizer: dict[str, Any],
) -> Any:
    """A function running ``n`` more rounds (steps) of ``method`` on ``policy``."""
    if method == "bc_more":
        bc.optimizer.load_state_dict(bc_optimizer)
        return bc.learn
    env = TextGenVectorEnv(
        cfg.episodes, model=policy, task=train, max_new_tokens=cfg.max_new_tokens
    )
    if method == "reinforce":
        rcfg = REINFORCEConfig(baseline="none", lr=cfg.reinforce_lr, seed=seed)
        return REINFORCE(policy, env, config=rcfg, progress_bar=False).learn
    pcfg = PPOConfig(lr=cfg.ppo_lr, beta=0.0, n_epochs=2, n_minibatches=2, seed=seed)
    return PPO(policy, env, config=pcfg, progress_bar=False).learn


def method_values(runs: Sequence[dict[str, Any]], method: str) -> dict[str, list[list[float]]]:
    """metric -> [measurement k -> values per seed]."""
    n = len(runs[0]["curves"][method])
    return {m: [[run["curves"][method][k][m] for run in runs] for k in range(n)] for m in METRICS}


def verdicts(values: dict[str, dict[str, list[list[float]]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for method, v in values.items():
        change = [a - b for a, b in zip(v["accuracy"][-1], v["accuracy"][0], strict=True)]
        low, high = bootstrap_ci(change)
        mean = float(np.mean(change))
        word = "reproduced" if low > 0 else "partly" if mean > 0 else "not reproduced"
        out[method] = {"accuracy_change": [mean, low, high], "verdict": word}
    rl = [out[m]["verdict"] for m in ("reinforce", "ppo")]
    out["claim"] = {
        "verdict": "reproduced"
        if "reproduced" in rl
        else "partly"
        if "partly" in rl
        else "not reproduced"
    }
    return out


def summary_rows(
    values: dict[str, dict[str, list[list[float]]]], settings: Sequence[str]
) -> list[dict[str, Any]]:
    rows = []
    for method, v in values.items():
        for k, setting in enumerate(settings):
            for m in METRICS:
                rows.append(study_row(STUDY, method, setting, m, v[m][k]))
            if k > 0:
                rows.append(
                    paired_change_row(
                        STUDY, method, setting, "accuracy", v["accuracy"][k], v["accuracy"][0]
                    )
                )
    return rows


def fmt(values: Sequence[float], digits: int = 3) -> str:
    low, high = bootstrap_ci(values)
    return f"{np.mean(values):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(
    cfg: StudyConfig,
    values: dict[str, dict[str, list[list[float]]]],
    verdict: dict[str, dict[str, Any]],
    runs: Sequence[dict[str, Any]],
    settings: Sequence[str],
    seconds: float,
) -> str:
    train = sum(r["seconds"] for r in runs)
    lines = [
        f"# Multi-turn RL on the calculator ({cfg.seeds} seeds, {cfg.updates} rounds)",
        "",
        f"The {len(runs)} seeds (BC start, three methods, measurements) took {train / 60:.1f} min "
        f"in all; this report {seconds / 60:.1f} min (seeds reused from runs/ are not re-timed); "
        f"{describe('numpy')}.",
        "",
        f"Calculator, one operation on 2..9; BC start: {cfg.bc_steps} steps of {cfg.bc_batch} "
        f"dialogues; {cfg.episodes} episodes a round; accuracy on the 40 held-out expressions, "
        f"{cfg.eval_episodes} episodes at temperature 1. Mean [95% bootstrap CI] over seeds; "
        "Δ: paired change from the BC start.",
        "",
        "| method | round | accuracy | Δ accuracy | policy tokens | env tokens | calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, v in values.items():
        for k, setting in enumerate(settings):
            change = [a - b for a, b in zip(v["accuracy"][k], v["accuracy"][0], strict=True)]
            lines.append(
                f"| {method} | {setting.split()[-1]} | {fmt(v['accuracy'][k])} | "
                f"{fmt(change) if k else '-'} | {np.mean(v['policy_tokens'][k]):.1f} | "
                f"{np.mean(v['env_tokens'][k]):.1f} | {np.mean(v['calls'][k]):.2f} |"
            )
    lines += ["", "## Verdict (rule in the script's docstring)", ""]
    for method in METHODS:
        m, low, high = verdict[method]["accuracy_change"]
        lines.append(
            f"- {method}: {verdict[method]['verdict']}; accuracy change after {cfg.updates} "
            f"rounds {m:+.3f} [{low:+.3f}, {high:+.3f}]"
        )
    lines.append(f"- claim (RL raises the calculator's accuracy): {verdict['claim']['verdict']}")
    return "\n".join(lines) + "\n"


def plot(values: dict[str, dict[str, list[list[float]]]], cfg: StudyConfig, out: Path) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=80)
    styles = {"reinforce": "C3-", "ppo": "C0-", "bc_more": "C7--"}
    for method, v in values.items():
        x = np.arange(len(v["accuracy"])) * cfg.eval_every
        start = v["accuracy"][0]
        change = [[a - b for a, b in zip(acc, start, strict=True)] for acc in v["accuracy"]]
        for ax, series in zip(axes, (change, v["accuracy"]), strict=True):
            mean = [np.mean(a) for a in series]
            ci = np.array([bootstrap_ci(a) for a in series])
            ax.plot(x, mean, styles[method], marker="o", ms=3, label=method)
            ax.fill_between(x, ci[:, 0], ci[:, 1], color=styles[method][:2], alpha=0.12)
    axes[0].axhline(0, color="grey", lw=0.8, ls=":")
    axes[0].set_title("held-out accuracy change from the BC start (paired)")
    axes[1].set_title("held-out accuracy (temperature 1)")
    for ax in axes:
        ax.set_xlabel("rounds (bc_more: BC steps) after the BC start")
    axes[0].legend(fontsize=7)
    return plots.save(fig, out / "multiturn.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 20 rounds")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--updates", type=int)
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int)
    ns = parser.parse_args()
    cfg = replace(StudyConfig(), **QUICK) if ns.quick else StudyConfig()
    given: dict[str, Any] = {k: getattr(ns, k) for k in ("seeds", "updates", "out", "threads")}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    total = cfg.seeds * len(METHODS) * (cfg.updates // cfg.eval_every)
    with tqdm(total=total, desc="measurements", dynamic_ncols=True) as bar:
        for seed in range(cfg.seeds):
            path = out / "runs" / f"seed{seed}.json"
            if path.exists() and json.loads(path.read_text())["config"] == asdict(cfg):
                runs.append(json.loads(path.read_text()))
                bar.update(len(METHODS) * (cfg.updates // cfg.eval_every))
                continue
            run = train_seed(cfg, seed, bar)
            write_json(path, run, newline=False)  # atomic: no half run to resume from
            runs.append(run)
    values = {m: method_values(runs, m) for m in METHODS}
    settings = [f"round {k * cfg.eval_every}" for k in range(len(values["reinforce"]["accuracy"]))]
    verdict = verdicts(values)
    seconds = time.perf_counter() - start
    write_summary(
        out / "summary.json",
        summary_rows(values, settings),
        study=STUDY,
        config=asdict(cfg),
        task=asdict(TASK),
        methods={
            "reinforce": f"REINFORCE b=0, lr {cfg.reinforce_lr}, {cfg.episodes} episodes a round",
            "ppo": f"PPO beta=0, lr {cfg.ppo_lr}, 2 epochs x 2 minibatches",
            "bc_more": "BC continued on the planner's dialogues (one step per round)",
        },
        verdict=verdict,
        runtime_s=seconds,
        runs_seconds_total=sum(r["seconds"] for r in runs),
        provenance={"git": git_sha(), "versions": versions("numpy"), "describe": describe()},
    )
    md = markdown(cfg, values, verdict, runs, settings, seconds)
    (out / "summary.md").write_text(md)
    plot(values, cfg, out)
    print(md)


if __name__ == "__main__":
    main()
