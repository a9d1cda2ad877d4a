"""Reward-model over-optimisation (Gao, Schulman & Hilton 2023, arXiv:2210.10760), small scale.

Gao et al. train a policy against a learned proxy reward model r_φ and measure a "gold" reward
that r_φ was fitted to imitate. As the policy moves away from π_ref (measured by
KL(π_θ‖π_ref)), the proxy rises monotonically while the gold reward first rises and then falls
(Goodhart's law); a KL penalty slows the drift but, in their Fig. 9, does not change the gold-vs-KL
frontier much.

Set-up here: gold = VADER sentiment of the completion in [0, 1]
(``textgym.rewards.make("sentiment")``).
Proxy = r_φ, a Bradley-Terry reward model (``textgym.rewards.reward_model``) on the embedded
model's trunk, trained on ``rm_prompts`` x K=4 samples of the embedded model on review train
prompts, labelled by the gold reward (``textgym.pair_sampling.synthetic_preferences``), trained by
``textgym.agents.RewardModelTrainer`` and normalised to mean 0,
std 1 on samples of π_ref (Ziegler et al. 2019 §2.2). PPO then maximises r_φ with β = 0 (no KL
penalty) and with β > 0. Every ``eval_every`` updates, the policy samples one completion for each of
``eval_prompts`` validation prompts (same seed every time) and we record proxy, gold and the
per-sequence KL to π_ref. The figure plots proxy and gold against KL.

    python experiments/repro_overoptimization.py             # ~10 min on 2 CPU cores
    python experiments/repro_overoptimization.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from textgym.agents import PPO, PPOConfig

import textgym
from textgym import plots
from textgym.evaluation import sample_with_kl, task_env
from textgym.lm import LanguageModel
from textgym.training import frozen_copy


@dataclass(frozen=True)
class OveroptConfig:
    model: str = textgym.DEFAULT_MODEL
    rm_prompts: int = 400
    """review train prompts used for the proxy's preference pairs (K = 4 samples each)."""
    rm_epochs: int = 2
    betas: tuple[float, ...] = (0.0, 0.05)
    """KL coefficients β of the PPO runs (0: no KL penalty)."""
    updates: int = 60
    eval_every: int = 6
    num_envs: int = 32
    max_new_tokens: int = 20
    eval_prompts: int = 128
    lr: float = 3e-4
    seeds: int = 1
    out: str = "experiments/results"
    threads: int = 1


def train_proxy(cfg: OveroptConfig) -> Any:
    """r_φ fitted to gold-labelled pairs of π_ref samples, normalised on π_ref samples."""
    from textgym.agents import RewardModelConfig, RewardModelTrainer
    from textgym.rewards import make
    from textgym.rewards.reward_model import RewardModel

    from textgym import tasks
    from textgym.pair_sampling import synthetic_preferences
    from textgym.preference import PreferencePair

    base = LanguageModel.from_pretrained(cfg.model, device="cpu")

    def review_pairs(split: str, n_prompts: int, seed: int) -> list[PreferencePair]:
        """K = 4 samples of π_ref per review prompt, every pair with a gold margin > 0.1."""
        prompts = list(tasks.load("reviews", split=split).prompts[:n_prompts])
        gold = make("sentiment")
        return synthetic_preferences(
            base, prompts, gold, k=4, max_new_tokens=cfg.max_new_tokens, seed=seed
        )

    pairs = review_pairs("train", cfg.rm_prompts, seed=0)
    val = review_pairs("validation", 100, seed=1)
    torch.manual_seed(0)  # the head's init
    rm = RewardModel.from_backbone(base, device="cpu")
    config = RewardModelConfig(epochs=cfg.rm_epochs)
    hist = RewardModelTrainer(rm, pairs, val, config, device="cpu", progress_bar=False).learn()
    rm.eval()
    # Chosen and rejected of the same pairs: both are π_ref samples, so together they are an
    # unbiased sample of π_ref's completions to normalise on.
    head = pairs[:128]
    rm.normalize_(
        [p.prompt for p in head] * 2, [p.chosen for p in head] + [p.rejected for p in head]
    )
    return rm.as_reward(), {"pairs": len(pairs), "val_pairs": len(val), **hist[-1]}


@torch.no_grad()
def measure(
    policy: LanguageModel, ref: LanguageModel, proxy: Any, gold: Any, cfg: OveroptConfig
) -> dict[str, float]:
    out, kl = sample_with_kl(
        policy,
        ref,
        reward=proxy,
        n_prompts=cfg.eval_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=1234,
    )
    return {
        "proxy": float(out.rewards.mean()),
        "gold": float(np.mean(gold(out.prompts, out.texts))),
        "kl": float(kl.mean()),
        "length": float(out.completion_mask.sum(-1).mean()),
    }


def run_beta(cfg: OveroptConfig, proxy: Any, beta: float, seed: int) -> list[dict[str, float]]:
    from textgym.rewards import make

    gold = make("sentiment")
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    env = task_env(
        policy, "reviews", num_envs=cfg.num_envs, max_new_tokens=cfg.max_new_tokens, reward=proxy
    )
    # β = 0 still passes ref=: the KL is then measured but not paid.
    agent = PPO(
        policy, env, config=PPOConfig(lr=cfg.lr, beta=beta, seed=seed), ref=ref, progress_bar=False
    )
    curve = [{"update": 0, **measure(policy, ref, proxy, gold, cfg)}]
    for u in range(cfg.eval_every, cfg.updates + 1, cfg.eval_every):
        agent.learn(cfg.eval_every)
        curve.append({"update": u, **measure(policy, ref, proxy, gold, cfg)})
        print(f"# beta {beta} seed {seed} update {u}: {curve[-1]}", flush=True)
    return curve


def plot(curves: dict[str, list[list[dict[str, float]]]], out: Path) -> Path:
    plt = plots.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3), dpi=80, sharex=True)
    for (name, runs), color in zip(curves.items(), ("C0", "C1", "C2", "C3"), strict=False):
        for i, run in enumerate(runs):
            kl = [r["kl"] for r in run]
            label = name if i == 0 else None
            axes[0].plot(kl, [r["proxy"] for r in run], "o-", color=color, label=label, ms=3)
            axes[1].plot(kl, [r["gold"] for r in run], "o-", color=color, label=label, ms=3)
    axes[0].set_title("proxy r_φ (normalised)")
    axes[1].set_title("gold (VADER sentiment)")
    for ax in axes:
        ax.set_xlabel("KL(π_θ‖π_ref) per sequence (nats)")
        ax.legend(fontsize=7)
    return plots.save(fig, out / "overopt.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--updates", type=int)
    parser.add_argument("--out")
    ns = parser.parse_args()
    cfg = OveroptConfig()
    if ns.quick:
        cfg = replace(cfg, rm_prompts=200, updates=24, eval_every=6, eval_prompts=64, num_envs=16)
    cfg = replace(
        cfg,
        **{
            k: v
            for k, v in {"seeds": ns.seeds, "updates": ns.updates, "out": ns.out}.items()
            if v is not None
        },
    )
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    proxy, rm_stats = train_proxy(cfg)
    print(f"# proxy r_φ: {rm_stats}", flush=True)
    curves: dict[str, list[list[dict[str, float]]]] = {}
    for beta in cfg.betas:
        name = "no KL penalty (β = 0)" if beta == 0 else f"KL penalty β = {beta}"
        curves[name] = [run_beta(cfg, proxy, beta, seed) for seed in range(cfg.seeds)]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overopt.json").write_text(
        json.dumps({"config": asdict(cfg), "rm": rm_stats, "curves": curves}, indent=1)
    )
    plot(curves, out)
    lines = [
        f"# repro_overoptimization: {time.perf_counter() - start:.0f} s; proxy trained on "
        f"{rm_stats['pairs']} pairs, held-out pairwise accuracy {rm_stats.get('val_acc', 0):.3f}",
        "",
        "| run | update | KL | proxy | gold | length |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in curves.items():
        for i in range(len(runs[0])):
            pts = [run[i] for run in runs]

            def m(k: str, pts: list[dict[str, float]] = pts) -> float:
                return statistics.mean(p[k] for p in pts)

            lines.append(
                f"| {name} | {int(pts[0]['update'])} | {m('kl'):.2f} | "
                f"{m('proxy'):.3f} | {m('gold'):.3f} | {m('length'):.1f} |"
            )
    md = "\n".join(lines) + "\n"
    (out / "overopt.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
