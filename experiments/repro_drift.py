"""Compounding errors ("drift") of imitation learners on the reverse task, at equal label budgets.

For each budget (300, 1000 and 3000 by default), each method starts from the embedded model and may
spend the same number of expert labels (one label = one state labelled with the expert's next
token; a demonstration of n tokens + EOS costs n + 1):

    untrained   the embedded model as shipped (0 labels)
    BC          textgym.agents.BC on `budget` labels of train-split demonstrations
    DAgger      textgym.agents.DAgger, β_i = 0.5^i (iteration 0 = expert rollouts), `budget` labels,
                each iteration's fit from the initial weights with BC's settings (warm_start=False)
    GAIL        textgym.agents.GAIL (PPO generator, fixed horizon) on BC's demonstrations

BC and DAgger stop early on the validation loss of 100 validation-split demonstrations (the same
for both, not counted in the budget). Every learner is then decoded greedily on held-out test
prompts, and each of its tokens is compared with the expert's label for that position:

    closed-loop error at t   the greedy text's token t differs from the expert's (or the text
                             already ended), over the prompts whose expert answer has a token t
    teacher-forced error     the same, with the expert's own prefix as the state (BC's training
                             distribution: the gap to the closed-loop error is the drift)
    err | clean / after      closed-loop error at states whose prefix is still all correct /
                             contains an earlier mistake (states BC never trained on)
    exact match              the whole greedy text equals the expert's

Writes experiments/results/drift.{md,csv,png}; the exact command is at the top of the .md.

    python experiments/repro_drift.py                    # 3 seeds, budgets 300 and 3000 (~20 min)
    python experiments/repro_drift.py --quick            # 1 seed, budget 1000, smaller runs
    python experiments/repro_drift.py --budgets 1000 --methods BC DAgger
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from textgym.agents import BC, GAIL, BCConfig, Demonstrations, GAILConfig
from textgym.agents.dagger import collect_labelled

import textgym
from textgym.drift import dagger_on_budget, plot, position_table
from textgym.lm import LanguageModel
from textgym.stats import mean_std
from textgym.tasks import load

RESULTS = Path(__file__).resolve().parent / "results"
SUMMARY = ("exact", "token_error", "forced_error", "clean", "after", "labels", "seconds")


@dataclass(frozen=True)
class DriftConfig:
    budgets: tuple[int, ...] = (300, 3000)  # labels per method (BC: ~55 / 550 demos)
    budget: int = 0  # the budget of the current run (set from budgets)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_test: int = 300  # held-out test prompts (all of the test split)
    n_val: int = 100  # validation demonstrations for early stopping (outside the budget)
    horizon: int = 8  # max_new_tokens: the longest answer is 6 tokens + EOS
    bc_steps: int = 800
    dagger_iterations: int = 5
    dagger_steps: int = 800  # per iteration, from scratch: the last fit is BC's on D
    dagger_envs: int = 32
    gail_updates: int = 80
    gail_envs: int = 32
    threads: int = 1  # a second busy process makes 2-thread runs 3-6x slower (DESIGN.md)
    methods: tuple[str, ...] = ("untrained", "BC", "DAgger", "GAIL")


QUICK = DriftConfig(seeds=(0,), budgets=(1000,), bc_steps=400, dagger_steps=400, gail_updates=20)


def make_env(
    lm: LanguageModel, cfg: DriftConfig, num_envs: int, split: str = "train", **kwargs: bool
) -> gym.vector.VectorEnv:
    return gym.make_vec(
        "textgym/Reverse-v0",
        num_envs=num_envs,
        model=lm,
        split=split,
        max_new_tokens=cfg.horizon,
        **kwargs,
    )


@dataclass
class Score:
    closed: np.ndarray  # (T,) closed-loop error per position (NaN where no prompt has one)
    forced: np.ndarray  # (T,) teacher-forced error per position
    exact: float
    token_error: float  # closed-loop error over all expert positions
    forced_error: float
    clean: float  # closed-loop error at states with an all-correct prefix
    after: float  # ... at states after an earlier mistake
    labels: int
    seconds: float


def evaluate(lm: LanguageModel, cfg: DriftConfig) -> Score:
    """Greedy decoding on the test prompts, each position compared with the expert's label."""
    n, T = cfg.n_test, cfg.horizon
    env = make_env(lm, cfg, n, split="test")
    pin = {"prompt_index": np.arange(n)}
    g = torch.Generator().manual_seed(0)  # unused by greedy decoding; required by the API
    closed = collect_labelled(lm, env, 0.0, generator=g, greedy=True, options=pin)
    forced = collect_labelled(lm, env, 1.0, generator=g, greedy=True, options=pin)
    expert_len = forced.data.mask.sum(1).long().numpy()  # (n,) answer tokens + EOS
    labels = _pad(forced.data.labels.numpy(), T)  # (n, T) position-based expert labels
    own = _pad(closed.learner_actions.numpy(), T, fill=-1)
    ran = _pad(closed.data.mask.numpy(), T) > 0  # the greedy text was still running at t
    pos = np.arange(T)[None, :]
    scored = pos < expert_len[:, None]  # (n, T) positions the expert's answer has
    wrong = ~(ran & (own == labels))  # (n, T)
    earlier = np.cumsum(wrong, 1) - wrong > 0  # an earlier position was wrong
    f_wrong = _pad((forced.learner_actions != forced.data.labels).numpy(), T)
    with np.errstate(invalid="ignore"):
        closed_t = np.where(scored, wrong, 0).sum(0) / scored.sum(0)
        forced_t = np.where(scored, f_wrong, 0).sum(0) / scored.sum(0)
    live = scored & ran
    return Score(
        closed=closed_t,
        forced=forced_t,
        exact=float((~(wrong & scored)).all(1).mean()),
        token_error=float(wrong[scored].mean()),
        forced_error=float(f_wrong[scored].mean()),
        clean=float(wrong[live & ~earlier].mean()),
        after=float(wrong[live & earlier].mean()),
        labels=0,
        seconds=0.0,
    )


def _pad(x: np.ndarray, T: int, fill: int = 0) -> np.ndarray:
    out = np.full((x.shape[0], T), fill, dtype=x.dtype)
    out[:, : min(T, x.shape[1])] = x[:, :T]
    return out


# ---------------------------------------------------------------------------- the methods


def demonstrations(lm: LanguageModel, cfg: DriftConfig, seed: int) -> Demonstrations:
    """Train-split demonstrations in a seeded order, cut to exactly ``budget`` labels."""
    pairs = load("reverse", split="train").demonstrations()
    order = np.random.default_rng(seed).permutation(len(pairs))
    return Demonstrations.from_pairs(lm, [pairs[i] for i in order]).within_budget(cfg.budget)


def bc_config(seed: int) -> BCConfig:
    # Frequent evaluations: with ~50 trajectories an epoch is 2 steps, and DAgger's first
    # iterations have fewer; evaluating every 25 steps let them overfit before the first check.
    return BCConfig(lr=1e-3, batch_size=32, eval_every=5, patience=8, seed=seed)


def run_untrained(lm: LanguageModel, cfg: DriftConfig, seed: int, val: list) -> int:
    return 0


def run_bc(lm: LanguageModel, cfg: DriftConfig, seed: int, val: list) -> int:
    demos = demonstrations(lm, cfg, seed)
    bc = BC(lm, demos, bc_config(seed), val_data=val, progress_bar=False)
    bc.learn(cfg.bc_steps)
    bc.restore_best()
    return demos.n_labels


def run_dagger(lm: LanguageModel, cfg: DriftConfig, seed: int, val: list) -> int:
    pairs = load("reverse", split="train").demonstrations()
    per_episode = statistics.fmean(len(c.split()) + 1 for _, c in pairs)  # one token a word, EOS
    env = make_env(lm, cfg, cfg.dagger_envs)
    return dagger_on_budget(
        lm, env, cfg.budget, per_episode, cfg.dagger_iterations, cfg.dagger_steps,
        bc_config(seed), seed, val,
    )  # fmt: skip


def run_gail(lm: LanguageModel, cfg: DriftConfig, seed: int, val: list) -> int:
    demos = demonstrations(lm, cfg, seed)
    env = make_env(lm, cfg, cfg.gail_envs, fixed_horizon=True)
    gcfg = GAILConfig()
    gcfg = replace(gcfg, ppo=replace(gcfg.ppo, seed=seed))
    GAIL(lm, env, demos, config=gcfg, progress_bar=False).learn(cfg.gail_updates)
    return demos.n_labels


METHODS: dict[str, Callable[[LanguageModel, DriftConfig, int, list], int]] = {
    "untrained": run_untrained,
    "BC": run_bc,
    "DAgger": run_dagger,
    "GAIL": run_gail,
}


# ---------------------------------------------------------------------------- reporting

Results = dict[int, dict[str, list[Score]]]  # budget -> method -> one Score per seed


def write_results(results: Results, cfg: DriftConfig, command: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    every = [s for scores in results.values() for ss in scores.values() for s in ss]
    positions = [t for t in range(cfg.horizon) if any(np.isfinite(s.closed[t]) for s in every)]
    with (out / "drift.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["budget", "method", "seed", "metric", "position", "value"])
        for budget, scores in results.items():
            for method, ss in scores.items():
                for seed, s in zip(cfg.seeds, ss, strict=True):
                    for key in SUMMARY:
                        w.writerow([budget, method, seed, key, "", getattr(s, key)])
                    for t in positions:
                        w.writerow([budget, method, seed, "closed_loop_error", t, s.closed[t]])
                        w.writerow([budget, method, seed, "teacher_forced_error", t, s.forced[t]])
    lines = [
        "# Drift: BC vs DAgger vs GAIL on the reverse task",
        "",
        "```",
        command,
        "```",
        "",
        f"Seeds {list(cfg.seeds)}; {cfg.n_test} test prompts, greedy decoding, horizon "
        f"{cfg.horizon}; mean ± std over seeds; every method of a section spends the same number "
        "of expert labels. The columns are defined in `experiments/repro_drift.py`'s docstring; "
        "the plot is drift.png, the per-seed numbers drift.csv.",
    ]
    for budget, scores in results.items():
        lines += [
            "",
            f"## Budget: {budget} expert labels",
            "",
            "| method | labels | exact match | closed-loop token error | teacher-forced error | "
            "err, clean prefix | err, after a mistake | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, ss in scores.items():
            cells = [mean_std([float(s.labels) for s in ss], 0)]
            cells += [mean_std([getattr(s, k) for s in ss]) for k in SUMMARY[:5]]
            cells += [mean_std([s.seconds for s in ss], 0)]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Closed-loop error rate by answer position t (t = 0 is the first token; "
            "each answer's last token is EOS):",
            "",
        ]
        lines += position_table(scores, "closed", positions)
        lines += [
            "",
            "Teacher-forced error rate by position (the expert's prefix as the state):",
            "",
        ]
        lines += position_table(scores, "forced", positions)
    (out / "drift.md").write_text("\n".join(lines) + "\n")
    plot(results, positions, out / "drift.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, smaller runs (~2-3 min)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument("--budgets", type=int, nargs="+", help="expert labels per method")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods to run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for drift.{md,csv,png}")
    args = parser.parse_args()
    cfg = QUICK if args.quick else DriftConfig()
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    if args.budgets:
        cfg = replace(cfg, budgets=tuple(args.budgets))
    if args.methods:
        cfg = replace(cfg, methods=tuple(args.methods))
    torch.set_num_threads(cfg.threads)
    gym.register_envs(textgym)
    val = load("reverse", split="validation").demonstrations()[: cfg.n_val]
    results: Results = {b: {m: [] for m in cfg.methods} for b in cfg.budgets}
    untrained: dict[int, Score] = {}  # the same model at every budget: scored once per seed
    for budget in cfg.budgets:
        for seed in cfg.seeds:
            for method in cfg.methods:
                if method == "untrained" and seed in untrained:
                    results[budget][method].append(untrained[seed])
                    continue
                lm = LanguageModel.from_pretrained(device="cpu")
                start = time.perf_counter()
                labels = METHODS[method](lm, replace(cfg, budget=budget), seed, val)
                seconds = time.perf_counter() - start
                s = evaluate(lm, cfg)
                s.labels, s.seconds = labels, seconds
                results[budget][method].append(s)
                if method == "untrained":
                    untrained[seed] = s
                print(
                    f"budget {budget} seed {seed} {method:9s} labels {labels:5d} "
                    f"exact {s.exact:.3f} err {s.token_error:.3f} (forced {s.forced_error:.3f}, "
                    f"clean {s.clean:.3f}, after {s.after:.3f}) {seconds:.0f}s",
                    flush=True,
                )
    command = "python experiments/repro_drift.py " + " ".join(sys.argv[1:])
    write_results(results, cfg, command.strip(), args.out)
    print((args.out / "drift.md").read_text())


if __name__ == "__main__":
    main()
