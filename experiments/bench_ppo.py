"""Completions/s of an RL iteration (generate, score, update): textgym PPO vs TRL RLOOTrainer.

Same model (the embedded one by default), same prompts (the reviews task), same batch of B
completions per iteration, the same new-token budget, the VADER sentiment reward, a frozen
reference model with β > 0 on both sides, fp32 on this machine's CPU
(``--compute-dtype bf16``: bf16 mixed precision on both sides). Rows:

    textgym PPO (1 epoch)     ``textgym.agents.PPO`` with n_epochs=1, n_minibatches=1: like TRL,
                              one gradient step per batch; plus the value head and GAE
    textgym PPO (4x4)         PPO's defaults: 4 epochs x 4 minibatches (16 gradient steps)
    textgym REINFORCE (rloo)  K = num_generations samples per prompt: TRL RLOO's own estimator
    TRL RLOOTrainer           ``trl.RLOOTrainer`` (num_generations K, beta > 0, one step a batch)

textgym's time is split into rollout (generation through the vector env, with the policy's KV
cache beside it, minus the reward), reward (the env's batched reward calls) and update (reference
and value passes are in the rollout; the losses and optimizer steps in the update). TRL's time is
measured between step ends after warm-up, all of it together. The ratio that the target is about
is textgym PPO (1 epoch) / TRL RLOO; medians over interleaved repeats even out the machine's load.
TRL is an optional extra (``pip install trl``); without it the bench says "TRL not installed".

    python experiments/bench_ppo.py            # full run
    python experiments/bench_ppo.py --quick    # about a minute
    python experiments/bench_ppo.py --check    # exit 1 when the ratio misses its target
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import textgym.rewards
import torch
from textgym.agents import PPO, REINFORCE, PPOConfig, REINFORCEConfig

import textgym
import textgym.tasks
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.lm import LanguageModel
from textgym.provenance import git_sha, versions
from textgym.trl_timing import trl_completions_per_s

TARGET = 1.0


@dataclass(frozen=True)
class BenchConfig:
    model: str = textgym.DEFAULT_MODEL
    batch_size: int = 16  # completions per iteration
    num_generations: int = 4  # K samples per prompt (TRL RLOO, textgym REINFORCE rloo)
    max_new_tokens: int = 16
    iterations: int = 6  # timed iterations per repeat
    warmup: int = 1
    repeats: int = 3
    beta: float = 0.05
    threads: int = 1  # one torch thread: on a shared 2-core machine 2-thread ops stall
    seed: int = 0
    compute_dtype: str | None = None
    """None: float32 on both sides; "bf16": textgym's compute_dtype and TRL's bf16=True."""


class TimedReward:
    """Wraps the sentiment reward and adds up the seconds spent in it."""

    name, token_level, needs_references = "sentiment", False, False

    def __init__(self) -> None:
        self.inner = textgym.rewards.make("sentiment")
        self.seconds = 0.0

    def __call__(self, prompts: Any, completions: Any, references: Any = None) -> np.ndarray:
        start = time.perf_counter()
        out = self.inner(prompts, completions)
        self.seconds += time.perf_counter() - start
        return out


@dataclass
class Timing:
    per_s: float  # completions per second
    rollout: float  # seconds per iteration (generation, ref and value passes, env; no reward)
    reward: float
    update: float


def time_textgym(cfg: BenchConfig, kind: str) -> Timing:
    lm = LanguageModel.from_pretrained(cfg.model, device="cpu", compute_dtype=cfg.compute_dtype)
    reward = TimedReward()
    env = gym.make_vec(
        "TextGen-v0",
        num_envs=cfg.batch_size,
        model=lm,
        task="reviews",
        reward=reward,
        max_new_tokens=cfg.max_new_tokens,
    )
    agent: Any
    if kind == "ppo1":
        agent = PPO(
            lm,
            env,
            config=PPOConfig(n_epochs=1, n_minibatches=1, beta=cfg.beta, seed=cfg.seed),
            progress_bar=False,
        )
    elif kind == "ppo":
        agent = PPO(lm, env, config=PPOConfig(beta=cfg.beta, seed=cfg.seed), progress_bar=False)
    else:
        rcfg = REINFORCEConfig(
            baseline="rloo", rloo_k=cfg.num_generations, beta=cfg.beta, seed=cfg.seed
        )
        agent = REINFORCE(lm, env, config=rcfg, progress_bar=False)
    agent.learn(cfg.warmup)
    reward.seconds = 0.0
    start = time.perf_counter()
    rows = agent.learn(cfg.iterations)
    total = time.perf_counter() - start
    n = cfg.iterations
    rollout = sum(r["time_rollout"] for r in rows) / n
    return Timing(
        cfg.batch_size * n / total,
        rollout - reward.seconds / n,
        reward.seconds / n,
        sum(r["time_update"] for r in rows) / n,
    )


def time_trl(cfg: BenchConfig) -> float | None:
    """Completions/s of RLOOTrainer.train between step ends after warm-up; None without TRL."""
    lm = LanguageModel.from_pretrained(cfg.model, device="cpu")
    sentiment = textgym.rewards.make("sentiment")
    return trl_completions_per_s(
        "rloo",
        lm.model,
        lm.tokenizer,
        textgym.tasks.load("reviews", split="train").prompts,
        lambda prompts, completions: sentiment(prompts, completions).tolist(),
        batch_size=cfg.batch_size,
        num_generations=cfg.num_generations,
        max_new_tokens=cfg.max_new_tokens,
        beta=cfg.beta,
        warmup=cfg.warmup,
        steps=cfg.iterations,
        seed=cfg.seed,
        bf16=cfg.compute_dtype == "bf16",  # TRL 1.16 defaults to bf16=True, also on a CPU
    )


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer iterations and repeats (~1 min)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the ratio misses the target"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--model",
        default=BenchConfig.model,
        help=MODEL_HELP,
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--compute-dtype", choices=["bf16"], help="mixed precision on both sides (default fp32)"
    )
    ns = parser.parse_args()
    cfg = replace(
        BenchConfig(),
        model=bench_model(ns.model),
        threads=ns.threads,
        compute_dtype=ns.compute_dtype,
    )
    if ns.quick:
        cfg = replace(cfg, iterations=3, repeats=1)
    if ns.repeats is not None:
        cfg = replace(cfg, repeats=ns.repeats)
    torch.set_num_threads(cfg.threads)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[Timing]] = {"ppo1": [], "ppo": [], "rloo": []}
    trl_runs: list[float] = []
    for r in range(cfg.repeats):  # interleaved, so that every row sees the same load
        for kind in ["ppo1", "rloo"] if ns.quick else ["ppo1", "ppo", "rloo"]:
            runs[kind].append(time_textgym(cfg, kind))
        t = time_trl(cfg)
        if t is not None:
            trl_runs.append(t)
        print(
            f"# repeat {r + 1}/{cfg.repeats}: PPO {runs['ppo1'][-1].per_s:.1f}/s"
            + (f", TRL {trl_runs[-1]:.1f}/s" if trl_runs else "")
        )
    load_after = os.getloadavg()[0]
    print(
        f"# bench_ppo  git {git_sha()}  {platform.machine()}, {os.cpu_count()} cores, "
        f"{cfg.threads} torch threads; " + ", ".join(f"{k} {v}" for k, v in versions("trl").items())
    )
    print(
        f"# model {Path(cfg.model).name}, reviews prompts, B={cfg.batch_size} completions/iter, "
        f"<= {cfg.max_new_tokens} new tokens, K={cfg.num_generations}, beta={cfg.beta}, "
        f"seed {cfg.seed}, {cfg.compute_dtype or 'fp32'}, "
        f"{cfg.iterations} timed iterations x {cfg.repeats} repeats (median)"
    )
    print(f"# load average {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print("# WARNING: the machine is busy with other work; numbers are noisy")
    print()
    print(
        f"| {'agent':26} | {'completions/s':>13} | {'rollout s':>9} | {'reward s':>8} "
        f"| {'update s':>8} |"
    )
    print(f"|{'-' * 28}|{'-' * 15}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    names = {
        "ppo1": "textgym PPO (1 epoch)",
        "ppo": "textgym PPO (4x4)",
        "rloo": "textgym REINFORCE (rloo)",
    }
    for kind, rows in runs.items():
        if rows:
            print(
                f"| {names[kind]:26} | {med([x.per_s for x in rows]):13.1f} | "
                f"{med([x.rollout for x in rows]):9.3f} | {med([x.reward for x in rows]):8.3f} | "
                f"{med([x.update for x in rows]):8.3f} |"
            )
    if not trl_runs:
        print(f"| {'TRL RLOOTrainer':26} | {'TRL not installed':>13} |")
        print("\nTRL not installed: pip install trl to compare")
        return 0
    trl = med(trl_runs)
    print(f"| {'TRL RLOOTrainer':26} | {trl:13.1f} | {'(all in one)':>9} | {'':8} | {'':8} |")
    ratio = med([x.per_s for x in runs["ppo1"]]) / trl
    print(f"\nREINFORCE(rloo)/TRL RLOO: {med([x.per_s for x in runs['rloo']]) / trl:.2f}")
    print(f"ratio: {ratio:.2f} (target >= {TARGET})")
    return 1 if ns.check and ratio < TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
