"""DPO family and iterative DPO on the embedded model, with a hidden gold reward (VADER sentiment).

Part 1 (offline DPO): review prompts, K completions sampled per prompt from the embedded model,
best and worst by the gold reward form a pair (margin > 0.1). Every loss of ``DPOConfig.loss``
trains a fresh copy of the model on the same pairs; the table gives held-out implicit-reward
accuracy and margin, log π_θ(y_w)/π_ref(y_w) on the training pairs (DPO lets it fall, DPOP keeps
it >= 0) and the gold reward of sampled completions on other held-out prompts, before and after.

Part 2 (iterative DPO, DNO-Prct): T rounds of sample -> rank by the gold reward -> DPO against
π_t; the gold reward of π_t's samples on validation prompts, round by round.

    python experiments/repro_dpo.py            # both parts, seed 0 (~20 s on an idle 2-core CPU)
    python experiments/repro_dpo.py --quick    # fewer pairs and updates
    python experiments/repro_dpo.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from textgym.agents.dpo import DPO, LOSSES, DPOConfig
from textgym.agents.iterative_dpo import IterativeDPO, IterativeDPOConfig
from textgym.rewards import make

import textgym
from textgym.decoding import generate
from textgym.lm import LanguageModel
from textgym.pair_sampling import sample_pairs
from textgym.tasks import load


@dataclass(frozen=True)
class ReproConfig:
    train_prompts: int = 128
    val_prompts: int = 64
    k: int = 4
    max_new_tokens: int = 16
    updates: int = 30
    lr: float = 3e-4
    batch_size: int = 16
    rounds: int = 3
    updates_per_round: int = 10
    round_lr: float = 1.5e-4


def gold_of_samples(
    lm: LanguageModel, prompts: list[str], gold: Any, n_new: int, seed: int
) -> float:
    out = generate(
        lm,
        prompts,
        max_new_tokens=n_new,
        do_sample=True,
        generator=torch.Generator().manual_seed(1000 + seed),
    )
    return float(np.mean(gold(prompts, out.texts)))


def offline(cfg: ReproConfig, seed: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(seed)
    gold = make("sentiment")
    train, val = load("reviews", "train"), load("reviews", "validation")
    lm0 = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    n = cfg.val_prompts
    tr = sample_pairs(
        lm0,
        list(train.prompts[: cfg.train_prompts]),
        k=cfg.k,
        reward=gold,
        min_margin=0.1,
        max_new_tokens=cfg.max_new_tokens,
        generator=torch.Generator().manual_seed(seed),
    )
    va = sample_pairs(
        lm0,
        list(val.prompts[:n]),
        k=cfg.k,
        reward=gold,
        min_margin=0.1,
        max_new_tokens=cfg.max_new_tokens,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    eval_prompts = list(val.prompts[n : 2 * n])
    before = gold_of_samples(lm0, eval_prompts, gold, cfg.max_new_tokens, seed)
    print(
        f"seed {seed}: {len(tr.pairs)} train / {len(va.pairs)} held-out pairs; "
        f"gold of samples before {before:.3f}",
        file=sys.stderr,
    )
    out: dict[str, dict[str, float]] = {}
    for loss in LOSSES:
        policy = LanguageModel(copy.deepcopy(lm0.model), lm0.tokenizer)
        dcfg = DPOConfig(
            loss=loss,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=seed,
        )
        start = time.perf_counter()
        agent = DPO(
            policy, data=tr.pairs, eval_data=va.pairs, config=dcfg, device="cpu", progress_bar=False
        )
        agent.learn(cfg.updates)
        held, on_train = agent.evaluate(), agent.evaluate(tr.pairs)
        out[loss] = {
            "acc": held["accuracy"],
            "margin": held["margin"],
            "logratio_w": on_train["logratio_chosen"],
            "logratio_w_heldout": held["logratio_chosen"],
            "gold_before": before,
            "gold_after": gold_of_samples(policy, eval_prompts, gold, cfg.max_new_tokens, seed),
            "seconds": time.perf_counter() - start,
        }
        print(f"  {loss}: {out[loss]}", file=sys.stderr)
    return out


def iterative(cfg: ReproConfig, seed: int) -> list[dict[str, float]]:
    torch.manual_seed(seed)
    train, val = load("reviews", "train"), load("reviews", "validation")
    lm = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    icfg = IterativeDPOConfig(
        rounds=cfg.rounds,
        k=cfg.k,
        updates_per_round=cfg.updates_per_round,
        prompts_per_round=64,
        max_new_tokens=cfg.max_new_tokens,
        min_margin=0.05,
        seed=seed,
        dpo=DPOConfig(lr=cfg.round_lr, batch_size=cfg.batch_size, seed=seed),
    )
    agent = IterativeDPO(
        lm,
        list(train.prompts),
        reward=make("sentiment"),
        val_prompts=list(val.prompts[:64]),
        config=icfg,
        device="cpu",
        progress_bar=False,
    )
    return agent.learn()


def ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-iterative", action="store_true")
    ns = parser.parse_args()
    cfg = ReproConfig(train_prompts=64, val_prompts=32, updates=15) if ns.quick else ReproConfig()
    torch.set_num_threads(2)
    runs = [offline(cfg, s) for s in ns.seeds]
    print(
        f"\nOffline DPO family on {textgym.DEFAULT_MODEL.rsplit('/', 2)[-2]}/model, gold = VADER "
        f"(unit scale), {cfg.updates} updates x {cfg.batch_size} pairs, lr {cfg.lr}, beta 0.1; "
        f"seeds {ns.seeds} (mean ± std)"
    )
    cols = ("acc", "margin", "logratio_w", "gold_before", "gold_after")
    print(f"{'loss':<8}| " + " | ".join(f"{c:<15}" for c in cols))
    for loss in LOSSES:
        print(f"{loss:<8}| " + " | ".join(f"{ms([r[loss][c] for r in runs]):<15}" for c in cols))
    print("acc, margin: held-out pairs; logratio_w: mean log π_θ(y_w)/π_ref(y_w) on training pairs")
    if ns.skip_iterative:
        return 0
    rounds = [iterative(cfg, s) for s in ns.seeds]
    print(
        f"\nIterative DPO: {cfg.rounds} rounds, K={cfg.k}, 64 prompts/round, "
        f"{cfg.updates_per_round} updates/round, lr {cfg.round_lr}"
    )
    print(f"{'round':<6}| {'pairs':<14}| {'train sample gold':<18}| {'val gold (π_t+1)':<16}")
    for t in range(len(rounds[0])):

        def col(key: str, t: int = t) -> str:
            vals = [r[t][key] for r in rounds]
            return "-" if any(np.isnan(vals)) else ms(vals)

        print(f"{t:<6}| {col('pairs'):<14}| {col('sample_score'):<18}| {col('val_score'):<16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
