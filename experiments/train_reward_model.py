"""Train a Bradley-Terry reward model r_φ on synthetic review preferences labelled by VADER.

The DPO paper's IMDb set-up on the built-in review task: K completions per prompt sampled from
the embedded model, ranked by a hidden gold reward (VADER sentiment), pairs kept above a margin.
r_φ (the embedded model's trunk + a scalar head) is trained on the train split's pairs and
evaluated on pairs of validation prompts it never saw. Prints validation pairwise accuracy per
epoch, how well r_φ tracks the gold reward on held-out completions, and saves the model
(``RewardModel.load(out)``, or ``textgym.rewards.make("reward_model", model=out)``).

    python experiments/train_reward_model.py --quick          # ~1-2 min on 2 CPU cores
    python experiments/train_reward_model.py --save-data      # also write train/val JSONL
    python experiments/train_reward_model.py --data DIR       # train on JSONL written before
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from textgym.agents import RewardModelConfig, RewardModelTrainer
from textgym.rewards import make
from textgym.rewards.reward_model import RewardModel

import textgym
from textgym import tasks
from textgym.pair_sampling import synthetic_preferences
from textgym.preference import PreferencePair, load_jsonl
from textgym.provenance import git_sha


@dataclass(frozen=True)
class Args:
    """What to run (``--help`` lists the flags)."""

    train_prompts: int | None = 1500
    """Train-split prompts to sample from (None: all 3000)."""
    val_prompts: int = 300
    """Validation-split prompts (held out)."""
    k: int = 4
    """K, completions per prompt."""
    min_margin: float = 0.1
    """Keep a pair when VADER(y_w) - VADER(y_l) exceeds this (VADER in [0, 1])."""
    max_new_tokens: int = 32
    """Longest sampled completion."""
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    """torch threads (the machine has 2 cores; use 1 when something else runs)."""
    out: str = "experiments/results/reward_model"
    """Where the model (and, with --save-data, the pairs) go."""
    save_data: bool = False
    """Write train.jsonl / val.jsonl of the pairs to ``out``."""
    data: str | None = None
    """Read train.jsonl / val.jsonl from this folder instead of sampling."""


QUICK = {"train_prompts": 300, "val_prompts": 100}


def write_jsonl(path: Path, pairs: list[PreferencePair]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            row = {
                "prompt": p.prompt,
                "chosen": p.chosen,
                "rejected": p.rejected,
                "margin": p.margin,
            }
            f.write(json.dumps(row) + "\n")


def review_preferences(
    lm: textgym.LanguageModel, args: Args, split: str, n_prompts: int | None, seed: int
) -> list[PreferencePair]:
    """The DPO paper's IMDb set-up on the built-in review task: the first ``n_prompts`` prompts of
    ``split``, K samples of ``lm`` each, paired by the hidden gold reward (VADER sentiment)."""
    prompts = list(tasks.load("reviews", split=split).prompts[:n_prompts])
    kw = {"k": args.k, "min_margin": args.min_margin, "max_new_tokens": args.max_new_tokens}
    return synthetic_preferences(lm, prompts, make("sentiment"), seed=seed, **kw)


def build_data(args: Args, lm: textgym.LanguageModel) -> tuple[list[PreferencePair], ...]:
    if args.data is not None:
        return load_jsonl(Path(args.data) / "train.jsonl"), load_jsonl(
            Path(args.data) / "val.jsonl"
        )
    train = review_preferences(lm, args, "train", args.train_prompts, args.seed)
    # Another seed for the held-out prompts, so no sample stream is shared with training.
    val = review_preferences(lm, args, "validation", args.val_prompts, args.seed + 1)
    return train, val


def gold_agreement(rm: RewardModel, pairs: list[PreferencePair]) -> float:
    """Pearson correlation of r_φ and the gold reward over the held-out completions."""
    unique = list(dict.fromkeys((p.prompt, y) for p in pairs for y in (p.chosen, p.rejected)))
    prompts, texts = [x for x, _ in unique], [y for _, y in unique]
    gold = make("sentiment")(prompts, texts)
    return float(np.corrcoef(rm.score(prompts, texts, batch_size=128), gold)[0, 1])


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    print(
        f"textgym {textgym.__version__} | git {git_sha()} | torch {torch.__version__} | "
        f"transformers {transformers.__version__} | {platform.processor() or platform.machine()} "
        f"| {torch.get_num_threads()} threads | seed {args.seed}"
    )
    lm = textgym.LanguageModel.from_pretrained(device="cpu")
    start = time.perf_counter()
    train, val = build_data(args, lm)
    data_s = time.perf_counter() - start
    print(f"pairs: {len(train)} train, {len(val)} validation ({data_s:.1f} s to build)")
    out = Path(args.out)
    if args.save_data:
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "val.jsonl", val)
        print(f"wrote {out / 'train.jsonl'} and {out / 'val.jsonl'}")

    torch.manual_seed(args.seed)  # the head's initialisation
    rm = RewardModel.from_backbone(lm, device="cpu")
    cfg = RewardModelConfig(
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    history = RewardModelTrainer(rm, train, val, cfg, device="cpu").learn()
    train_s = history[-1]["seconds"]

    print(
        f"\n{'epoch':>5} | {'train_loss':>10} | {'train_acc':>9} | {'val_loss':>8} | {'val_acc':>7}"
    )
    for row in history:
        tl = f"{row['train_loss']:.4f}" if "train_loss" in row else "-"
        ta = f"{row['train_acc']:.3f}" if "train_acc" in row else "-"
        vl, va = row["val_loss"], row["val_acc"]
        print(f"{int(row['epoch']):>5} | {tl:>10} | {ta:>9} | {vl:>8.4f} | {va:>7.3f}")
    corr = gold_agreement(rm, val)
    rm.save(out)
    print(
        f"\nheld-out pairwise accuracy {history[-1]['val_acc']:.3f} (untrained "
        f"{history[0]['val_acc']:.3f}); corr(r_φ, VADER) on held-out completions {corr:.3f}"
    )
    print(f"data {data_s:.0f} s, training {train_s:.0f} s; saved to {out}")


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action="store_true")
        elif f.type in ("int | None",):
            parser.add_argument(flag, type=int, default=f.default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default)
    parser.add_argument("--quick", action="store_true", help=f"smaller data: {QUICK}")
    ns = vars(parser.parse_args())
    quick = ns.pop("quick")
    defaults = {f.name: f.default for f in dataclasses.fields(Args)}
    for name, value in QUICK.items() if quick else ():
        if ns[name] == defaults[name]:  # an explicit flag wins over --quick
            ns[name] = value
    return Args(**ns)


if __name__ == "__main__":
    main(parse())
