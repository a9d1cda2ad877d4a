"""DPO vs PPO: the reward-vs-KL frontier on review sentiment (Rafailov et al. 2023, Fig. 2 left).

Rafailov et al. (arXiv:2305.18290, §6.1) generate positive IMDb reviews: the gold reward is a
sentiment classifier, PPO optimises it directly, DPO learns from preference pairs of SFT samples
labelled by it. Plotting the gold reward against KL(π_θ‖π_ref) for several β and checkpoints, DPO's
frontier dominates PPO's: more reward at the same KL.

Here, at small scale, on the built-in ``reviews`` task with VADER sentiment as the gold reward:

- DPO (``textgym.agents.DPO``): pairs from ``textgym.pair_sampling.synthetic_preferences`` (K = 4
  samples of the embedded model per train prompt, every pair with a gold margin > 0.1), several β;
- PPO (``textgym.agents.PPO``): the gold reward itself with a KL penalty, several β.

Every few updates, each policy samples one completion for each of ``eval_prompts`` validation
prompts (same seed every time); a point is (mean per-sequence KL to π_ref, mean gold reward).

    python experiments/repro_dpo_vs_ppo.py                # ~10 min on 2 CPU cores
    python experiments/repro_dpo_vs_ppo.py --quick
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from textgym.agents import DPO, PPO, DPOConfig, PPOConfig

import textgym
from textgym import plots
from textgym.evaluation import sample_with_kl, task_env
from textgym.lm import LanguageModel
from textgym.training import frozen_copy


@dataclass(frozen=True)
class FrontierConfig:
    model: str = textgym.DEFAULT_MODEL
    pair_prompts: int = 400
    dpo_betas: tuple[float, ...] = (0.1, 0.5)
    dpo_updates: int = 120
    ppo_runs: tuple[tuple[float, float], ...] = ((0.02, 3e-4), (0.1, 3e-4), (0.02, 3e-5))
    """(β, learning rate) of each PPO run; the small learning rate fills the low-KL region."""
    ppo_updates: int = 30
    num_envs: int = 32
    points: int = 4
    """evaluations per run (after every updates/points updates), plus one at the start."""
    max_new_tokens: int = 20
    eval_prompts: int = 128
    seed: int = 0
    out: str = "experiments/results"
    threads: int = 1


def measure(policy: LanguageModel, ref: LanguageModel, cfg: FrontierConfig) -> dict[str, float]:
    out, kl = sample_with_kl(
        policy,
        ref,
        reward="sentiment",
        n_prompts=cfg.eval_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=4321,
    )
    return {"reward": float(out.rewards.mean()), "kl": float(kl.mean())}


def run_dpo(cfg: FrontierConfig, pairs: list[Any], beta: float) -> list[dict[str, float]]:
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    agent = DPO(
        policy,
        data=pairs,
        ref=ref,
        config=DPOConfig(beta=beta, lr=1e-4, batch_size=8, seed=cfg.seed),
        device="cpu",
        progress_bar=False,
    )
    every = cfg.dpo_updates // cfg.points
    curve = [{"update": 0, **measure(policy, ref, cfg)}]
    for u in range(every, cfg.dpo_updates + 1, every):
        agent.learn(every)
        curve.append({"update": u, **measure(agent.policy, ref, cfg)})
        print(f"# dpo beta {beta} update {u}: {curve[-1]}", flush=True)
    return curve


def run_ppo(cfg: FrontierConfig, beta: float, lr: float) -> list[dict[str, float]]:
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    env = task_env(
        policy,
        "reviews",
        num_envs=cfg.num_envs,
        max_new_tokens=cfg.max_new_tokens,
        reward="sentiment",
    )
    agent = PPO(
        policy,
        env,
        config=PPOConfig(lr=lr, beta=beta, seed=cfg.seed),
        ref=ref,
        progress_bar=False,
    )
    every = cfg.ppo_updates // cfg.points
    curve = [{"update": 0, **measure(policy, ref, cfg)}]
    for u in range(every, cfg.ppo_updates + 1, every):
        agent.learn(every)
        curve.append({"update": u, **measure(agent.policy, ref, cfg)})
        print(f"# ppo beta {beta} lr {lr} update {u}: {curve[-1]}", flush=True)
    return curve


def plot(curves: dict[str, list[dict[str, float]]], out: Path) -> Path:
    plt = plots.pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=80)
    for name, curve in curves.items():
        style = "o-" if name.startswith("DPO") else "s--"
        ax.plot([p["kl"] for p in curve], [p["reward"] for p in curve], style, label=name, ms=4)
    ax.set_xlabel("KL(π_θ‖π_ref) per sequence (nats)")
    ax.set_ylabel("gold reward (VADER sentiment)")
    ax.set_title("reviews: reward vs KL, validation prompts")
    ax.legend(fontsize=7)
    return plots.save(fig, out / "dpo_vs_ppo.png")


def main() -> None:
    from textgym.rewards import make

    from textgym import tasks
    from textgym.pair_sampling import synthetic_preferences

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    ns = parser.parse_args()
    cfg = FrontierConfig()
    if ns.quick:
        cfg = replace(
            cfg, pair_prompts=200, dpo_updates=60, ppo_updates=16, num_envs=16, eval_prompts=64
        )
    if ns.out:
        cfg = replace(cfg, out=ns.out)
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    base = LanguageModel.from_pretrained(cfg.model, device="cpu")
    prompts = list(tasks.load("reviews", split="train").prompts[: cfg.pair_prompts])
    gold = make("sentiment")
    pairs = synthetic_preferences(
        base, prompts, gold, k=4, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )
    print(f"# {len(pairs)} preference pairs from {cfg.pair_prompts} prompts", flush=True)
    curves: dict[str, list[dict[str, float]]] = {}
    for beta in cfg.dpo_betas:
        curves[f"DPO β={beta}"] = run_dpo(cfg, pairs, beta)
    for beta, lr in cfg.ppo_runs:
        curves[f"PPO β={beta}, lr={lr:g}"] = run_ppo(cfg, beta, lr)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dpo_vs_ppo.json").write_text(
        json.dumps({"config": asdict(cfg), "pairs": len(pairs), "curves": curves}, indent=1)
    )
    plot(curves, out)
    lines = [
        f"# repro_dpo_vs_ppo: {len(pairs)} pairs, {cfg.eval_prompts} validation prompts, "
        f"seed {cfg.seed}, {time.perf_counter() - start:.0f} s",
        "",
        "| run | update | KL | reward |",
        "|---|---|---|---|",
    ]
    for name, curve in curves.items():
        lines += [f"| {name} | {p['update']} | {p['kl']:.2f} | {p['reward']:.3f} |" for p in curve]
    md = "\n".join(lines) + "\n"
    (out / "dpo_vs_ppo.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
