"""Completions/s of a GRPO iteration (generate, score, update): textgym GRPO vs TRL GRPOTrainer.

Same model (the embedded one by default; ``--model gpt2-14m`` builds a 14M-parameter GPT-2
locally, see ``textgym.assets.bench_models``), same prompts (the reviews task), the same B
completions per iteration in groups of G, the same new-token budget, the VADER sentiment reward,
β = 0.04 with the k3 KL in the loss against a frozen reference on both sides, one gradient step
per batch (TRL's defaults: num_iterations 1, loss_type "grpo"). Precision: fp32 by default (TRL
at bf16=False: TRL 1.16 defaults to bf16 even on a CPU); ``--precisions fp32 bf16`` times both
sides in both (textgym's ``compute_dtype="bf16"``, TRL's ``bf16=True``) and compares each side at
its faster precision ("TRL at its best CPU settings"). The rows run interleaved, ``repeats``
times, and the medians are compared. Rows, per precision:

    textgym GRPO       ``textgym.agents.GRPO`` with ``GRPOConfig()`` (GRPO's choices, μ = 1)
    textgym Dr. GRPO   ``GRPOConfig.preset("dr_grpo")`` (β = 0: no reference pass)
    TRL GRPOTrainer    ``trl.GRPOTrainer`` (an optional extra: pip install trl)

    python experiments/bench_grpo.py                     # embedded model
    python experiments/bench_grpo.py --model gpt2-14m --precisions fp32 bf16
    python experiments/bench_grpo.py --quick             # about a minute or two
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import textgym.rewards
import torch
from textgym.agents import GRPO, GRPOConfig

import textgym
import textgym.tasks
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.lm import LanguageModel
from textgym.provenance import describe
from textgym.trl_timing import trl_completions_per_s

TARGET = 1.3
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class BenchConfig:
    model: str = textgym.DEFAULT_MODEL
    batch_size: int = 16  # completions per iteration
    group_size: int = 4  # G
    max_new_tokens: int = 16
    beta: float = 0.04
    iterations: int = 6  # timed iterations per repeat
    warmup: int = 1
    repeats: int = 3
    threads: int = 1
    seed: int = 0


def time_textgym(cfg: BenchConfig, preset: str, precision: str) -> float:
    dtype = "bf16" if precision == "bf16" else None
    lm = LanguageModel.from_pretrained(cfg.model, device="cpu", compute_dtype=dtype)
    env = gym.make_vec(
        "TextGen-v0", num_envs=cfg.batch_size, model=lm, task="reviews", reward="sentiment",
        max_new_tokens=cfg.max_new_tokens,
    )  # fmt: skip
    changes: dict[str, Any] = {"group_size": cfg.group_size, "seed": cfg.seed}
    if preset == "grpo":
        changes["beta"] = cfg.beta
    agent = GRPO(lm, env, config=GRPOConfig.preset(preset, **changes), progress_bar=False)
    agent.learn(cfg.warmup)
    start = time.perf_counter()
    agent.learn(cfg.iterations)
    return cfg.batch_size * cfg.iterations / (time.perf_counter() - start)


def time_trl(cfg: BenchConfig, precision: str) -> float | None:
    lm = LanguageModel.from_pretrained(cfg.model, device="cpu")
    sentiment = textgym.rewards.make("sentiment")
    return trl_completions_per_s(
        "grpo", lm.model, lm.tokenizer, textgym.tasks.load("reviews", split="train").prompts,
        lambda prompts, completions: sentiment(prompts, completions).tolist(),
        batch_size=cfg.batch_size, num_generations=cfg.group_size,
        max_new_tokens=cfg.max_new_tokens, beta=cfg.beta, warmup=cfg.warmup,
        steps=cfg.iterations, seed=cfg.seed, loss_type="grpo", bf16=precision == "bf16",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 iterations, 1 repeat")
    parser.add_argument("--check", action="store_true", help="exit 1 when the ratio misses")
    parser.add_argument("--model", default=BenchConfig.model, help=MODEL_HELP)
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=["fp32"],
        help="time both sides in each; the ratio compares each side at its fastest",
    )  # fmt: skip
    ns = parser.parse_args(argv)
    cfg = replace(BenchConfig(), model=bench_model(ns.model))
    if ns.quick:
        cfg = replace(cfg, iterations=3, repeats=1)
    if ns.repeats:
        cfg = replace(cfg, repeats=ns.repeats)
    torch.set_num_threads(cfg.threads)
    load_before = os.getloadavg()[0]
    rows: dict[tuple[str, str], list[float]] = {}
    for r in range(cfg.repeats):  # interleaved: every row sees the same load
        for precision in ns.precisions:
            for preset in ("grpo", "dr_grpo"):
                rows.setdefault((preset, precision), []).append(
                    time_textgym(cfg, preset, precision)
                )
            trl = time_trl(cfg, precision)
            if trl is not None:
                rows.setdefault(("trl", precision), []).append(trl)
        print(
            f"# repeat {r + 1}/{cfg.repeats}: "
            + ", ".join(f"{k} {p} {v[-1]:.1f}/s" for (k, p), v in rows.items())
        )
    load = max(load_before, os.getloadavg()[0])
    print(f"# bench_grpo  {describe('trl')}")
    print(
        f"# model {cfg.model}, reviews prompts, B={cfg.batch_size} completions/iter in groups of "
        f"G={cfg.group_size}, <= {cfg.max_new_tokens} new tokens, beta={cfg.beta}, "
        f"{cfg.iterations} timed iterations x {cfg.repeats} repeats (median); "
        f"load average {load:.2f}"
    )
    if load > 0.5 * (os.cpu_count() or 1):
        print("# WARNING: the machine is busy with other work; numbers are noisy")
    names = {"grpo": "textgym GRPO", "dr_grpo": "textgym Dr. GRPO", "trl": "TRL GRPOTrainer"}
    print(f"\n| {'trainer':18} | precision | completions/s |\n|{'-' * 20}|-----------|{'-' * 15}|")
    for (key, precision), values in rows.items():
        print(f"| {names[key]:18} | {precision:9} | {statistics.median(values):13.1f} |")
    trl_best = [statistics.median(v) for (k, _), v in rows.items() if k == "trl"]
    if not trl_best:
        print("| TRL GRPOTrainer    | -         | not installed |")
        return 0
    ours = max(statistics.median(v) for (k, _), v in rows.items() if k == "grpo")
    ratio = ours / max(trl_best)
    print(f"\nratio: {ratio:.2f} (textgym GRPO / TRL GRPOTrainer, each at its fastest of "
          f"{'/'.join(ns.precisions)}; target >= {TARGET})")  # fmt: skip
    return 1 if ns.check and ratio < TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
