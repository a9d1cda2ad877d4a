"""RL on the review task with the VADER sentiment reward: reward on held-out prompts before/after.

For each seed, each agent starts from the embedded model and trains on the reviews task (train
split) with ``textgym.rewards.make("sentiment")``; the policy is scored on the validation split
before and after, on the same prompts and sampler seed, with the KL to the untrained model:

    REINFORCE (rloo)   textgym.agents.REINFORCE, leave-one-out baseline, K = 4, β > 0
    REINFORCE (none)   the same without a baseline (for the baseline's effect)
    PPO                textgym.agents.PPO, value head on the trunk, fixed β
    SB3 PPO            stable_baselines3.PPO (unmodified) with textgym.agents.sb3.TransformerPolicy

Prints a table of mean ± std over seeds: reward before, after, gain, KL(π_θ‖π_ref) per episode,
and wall-clock seconds. The budgets and hyper-parameters are those of the slow learning tests in
tests/agents/, which run seed 0 of the same setup (held-out scoring: same seed, 64 episodes).

    python experiments/repro_rl_sentiment.py                 # 3 seeds, all agents
    python experiments/repro_rl_sentiment.py --seeds 1 --agents ppo
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from textgym.agents import PPO, REINFORCE, PPOConfig, REINFORCEConfig

import textgym
from textgym.lm import LanguageModel
from textgym.rollout import evaluate_policy
from textgym.training import frozen_copy


@dataclass(frozen=True)
class ReproConfig:
    model: str = textgym.DEFAULT_MODEL
    num_envs: int = 32  # episodes per update
    max_new_tokens: int = 16
    eval_envs: int = 64
    eval_rounds: int = 1
    reinforce_updates: int = 20
    ppo_updates: int = 12
    sb3_timesteps: int = 4096
    threads: int = 1  # one torch thread: on a shared 2-core machine 2-thread ops stall


def make_env(lm: LanguageModel, cfg: ReproConfig, split: str, n: int) -> Any:
    return gym.make_vec(
        "TextGen-v0",
        num_envs=n,
        model=lm,
        task="reviews",
        split=split,
        reward="sentiment",
        max_new_tokens=cfg.max_new_tokens,
    )


def score(lm: LanguageModel, ref: LanguageModel, cfg: ReproConfig, seed: int) -> dict[str, float]:
    env = make_env(lm, cfg, "validation", cfg.eval_envs)
    return evaluate_policy(lm, env, ref=ref, seed=1 + seed, rounds=cfg.eval_rounds)


def train_native(kind: str, cfg: ReproConfig, seed: int) -> tuple[LanguageModel, LanguageModel]:
    lm = LanguageModel.from_pretrained(cfg.model, device="cpu")
    env = make_env(lm, cfg, "train", cfg.num_envs)
    agent: Any
    if kind == "ppo":
        agent = PPO(lm, env, config=PPOConfig(**PPO_KWARGS, seed=seed), progress_bar=False)
        agent.learn(cfg.ppo_updates)
    else:
        baseline = "rloo" if kind == "reinforce_rloo" else "none"
        rcfg = REINFORCEConfig(**REINFORCE_KWARGS, baseline=baseline, seed=seed)
        agent = REINFORCE(lm, env, config=rcfg, progress_bar=False)
        agent.learn(cfg.reinforce_updates)
    return agent.policy, agent.ref


def train_sb3(cfg: ReproConfig, seed: int) -> tuple[LanguageModel, LanguageModel]:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.vec_env import DummyVecEnv
    from textgym.agents.sb3 import TransformerPolicy

    lm = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(lm)

    def make() -> Any:
        return gym.make(
            "TextGen-v0",
            model=lm,
            task="reviews",
            split="train",
            reward="sentiment",
            max_new_tokens=cfg.max_new_tokens,
        )

    venv = DummyVecEnv([make] * 16)  # 16 x 64 steps = 64 episodes of 16 tokens per SB3 rollout
    venv.seed(seed)
    model = SB3PPO(
        TransformerPolicy,
        venv,
        **SB3_KWARGS,
        policy_kwargs={"model": lm},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(cfg.sb3_timesteps)
    return lm, ref  # the policy trains lm.model in place


REINFORCE_KWARGS: dict[str, Any] = {"lr": 3e-4, "beta": 0.02, "rloo_k": 4}
PPO_KWARGS: dict[str, Any] = {"lr": 3e-4, "beta": 0.02, "n_minibatches": 2, "n_epochs": 2}
SB3_KWARGS: dict[str, Any] = {
    "n_steps": 64,
    "batch_size": 256,
    "n_epochs": 1,
    "learning_rate": 3e-4,
    "gamma": 1.0,
}
AGENTS = ("reinforce_rloo", "reinforce_none", "ppo", "sb3")


def run(kind: str, cfg: ReproConfig, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)  # SB3 and model init read the global generator
    base = LanguageModel.from_pretrained(cfg.model, device="cpu")
    before = score(base, base, cfg, seed)
    start = time.perf_counter()
    policy, ref = train_sb3(cfg, seed) if kind == "sb3" else train_native(kind, cfg, seed)
    seconds = time.perf_counter() - start
    after = score(policy, frozen_copy(base) if ref is None else ref, cfg, seed)
    return {
        "before": before["reward"],
        "after": after["reward"],
        "gain": after["reward"] - before["reward"],
        "kl": after["kl"],
        "seconds": seconds,
    }


def fmt(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--model", default=ReproConfig.model)
    ns = parser.parse_args()
    cfg = replace(ReproConfig(), model=ns.model, threads=ns.threads)
    torch.set_num_threads(cfg.threads)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in ns.agents}
    for seed in range(ns.seeds):
        for kind in ns.agents:
            results[kind].append(run(kind, cfg, seed))
            r = results[kind][-1]
            print(
                f"# seed {seed} {kind}: {r['before']:.3f} -> {r['after']:.3f}, kl {r['kl']:.2f}, "
                f"{r['seconds']:.0f}s",
                flush=True,
            )
    print(
        f"\n# repro_rl_sentiment: model {os.path.basename(cfg.model)}, reviews train->validation, "
        f"{cfg.num_envs} episodes/update, <= {cfg.max_new_tokens} new tokens, {ns.seeds} seeds, "
        f"eval {cfg.eval_envs * cfg.eval_rounds} episodes; torch {torch.__version__}"
    )
    print(
        f"# REINFORCE {REINFORCE_KWARGS} x{cfg.reinforce_updates}; PPO {PPO_KWARGS} "
        f"x{cfg.ppo_updates}; SB3 {SB3_KWARGS} x{cfg.sb3_timesteps} steps"
    )
    print(
        f"\n| {'agent':16} | {'reward before':>15} | {'reward after':>15} | {'gain':>15} | "
        f"{'KL / episode':>15} | {'seconds':>10} |"
    )
    print(f"|{'-' * 18}|{'-' * 17}|{'-' * 17}|{'-' * 17}|{'-' * 17}|{'-' * 12}|")
    for kind, rows in results.items():
        cols = [fmt([r[k] for r in rows]) for k in ("before", "after", "gain", "kl")]
        secs = np.mean([r["seconds"] for r in rows])
        print(
            f"| {kind:16} | {cols[0]:>15} | {cols[1]:>15} | {cols[2]:>15} | {cols[3]:>15} | "
            f"{secs:10.0f} |"
        )


if __name__ == "__main__":
    main()
