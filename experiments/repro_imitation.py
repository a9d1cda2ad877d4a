"""Imitation with a dynamic expert: does DAgger beat BC, and does the gap grow with the horizon?

Issue 16, section 4. Protocol, fixed before any result was looked at:

Tasks: target_sum and grid_nav (textgym.dynamic_tasks), horizon = max_new_tokens = HORIZON (24).
Student: the embedded model (textgym.DEFAULT_MODEL, ~1M parameters), reloaded for every cell.
Train prompts: the shipped train split plus `pool_extra` fresh prompts drawn by the data builder
with seed 1, minus every shipped prompt (textgym.imitation_study.train_pool). Validation: the
first `n_val` validation prompts; test: the first `n_test` test prompts (500 = all of them).

Label budget L: one label = one state labelled with the expert's next token; every method spends
exactly L (validation labels for checkpoint choice are outside the budget, the same for all).
Matched training: every final fit starts from the embedded model's weights with a fresh AdamW
(lr 1e-3, batch 32 trajectories, gradient clip 1) and runs `steps` gradient steps; the learner is
decoded greedily on the validation prompts every `select_every` steps and the checkpoint with the
lowest validation disagreement (the expert-disagreement cost of its OWN greedy trajectories, each
state labelled by the expert) is kept; the starting weights are never a candidate. Methods:

  bc       BC on expert demonstrations of train prompts in a seeded order, cut to L labels.
  dart     DART (Laskey et al. 2017): the expert rolls out on train prompts, and at each step with
           probability ε = 0.25 a uniformly random action word replaces its action (0.25: the
           teacher-forced error of a BC learner in the first probe, docs/dynamic_tasks.md); every
           visited state is labelled with the expert's action; then BC's fit on those L labels.
  dagger   DAgger (Ross et al. 2011): 4 iterations, β_i = 0.5^i (iteration 0 = expert rollouts),
           greedy learner, about L/4 labels each (the last iteration spends what is left);
           intermediate fits from scratch with `dagger_fit_steps` steps; then BC's final fit on
           the aggregated L labels.
  distill  on-policy distillation (GKD, Agarwal et al. 2024) with the expert itself as a one-hot
           teacher p_T = 1[a = π*(s)], which the dynamic expert gives exactly at any prefix; every
           teacher query is an expert label, so the budget counts it. (A BC teacher trained on a
           larger budget would hand this method more expert information than the others.) With a
           one-hot p_T the forward KL is the cross-entropy of the label (GKD's forward_kl =
           bc_loss, tested). Half of L are expert demonstrations (GKD's D_off); the other half
           are states of the student's own samples (temperature 1, rounds of `distill_envs`
           prompts), spent evenly between 10% and 80% of the `steps`; one model trains
           throughout (no restarts), on minibatches drawn from all labelled states so far.
  gail     GAIL (AIRL reward, PPO generator, fixed-horizon env; GAILConfig defaults) on the same
           L demonstrations as bc, starting from bc's selected checkpoint (same seed and L):
           `gail_updates` updates of `gail_envs` episodes; checkpoints every `gail_every` updates.
  irl      apprenticeship IRL (projection step; inner REINFORCE, lr 3e-4, β 0.02) with features
           of the task's own signals (solved, remaining distance, action words, other words;
           textgym.imitation_study.puzzle_features), from bc's checkpoint, `irl_outer` outer
           iterations of `irl_rl_updates` updates; a checkpoint after every outer iteration.
           For the first seed of each (task, L): agents.irl.recovery_check against the task's
           progress max(0, 1 - d(final)/d(start)) (d: actions left to the goal) on the validation
           prompts (the bc start's samples plus the expert's texts), `recovery_updates`
           REINFORCE updates each way.
  gail and irl add RL compute beyond `steps` (stated, not matched); their labels are bc's L.

Evaluation: greedy decoding of the test prompts; every visited state labelled by the expert.
Per (task, method, L, horizon bucket = the prompt's optimal length in 3-5, 6-8, 9-12, and all):
  success              PuzzleReward (the final state is the goal)
  disagreement         mean over episodes of the share of steps whose token differs from the label
  error_clean          error rate over states whose prefix holds no earlier mistake
  error_after_mistake  error rate over states after at least one mistake
and the error rate at each position t. Mean and 95% percentile-bootstrap CI over seeds
(textgym.stats). Claim checked per task: DAgger's success exceeds BC's with non-overlapping CIs,
and the difference grows from the 3-5 to the 9-12 bucket.

Default run = the issue's protocol (5 seeds, budgets 2k, 8k, 32k). Each finished cell is appended
to <out>/cells.jsonl at once and skipped on a rerun (a cell of another configuration is refused);
the outputs (summary.json, table.md, error_by_position.png, success_vs_labels.png) are rebuilt
from the JSONL at the end, or alone with --report.

    python experiments/repro_imitation.py --quick      # < 10 min, into results/imitation/quick
    python experiments/repro_imitation.py --seeds 0 1 2 --budgets 2000 8000
    python experiments/repro_imitation.py --methods bc dagger --budgets 16000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from textgym.agents import (
    BC,
    GAIL,
    IRL,
    BCConfig,
    DAgger,
    DAggerConfig,
    Demonstrations,
    GAILConfig,
    IRLConfig,
    REINFORCEConfig,
)
from textgym.agents.dagger import collect_labelled
from textgym.agents.irl import recovery_check
from textgym.rewards import batched, make

import textgym
from textgym import imitation_study as study
from textgym.dynamic_tasks import HORIZON, parse
from textgym.lm import LanguageModel
from textgym.provenance import describe
from textgym.rollout import collect
from textgym.tasks import Task, load
from textgym.training import progress

RESULTS = Path(__file__).resolve().parent / "results" / "imitation"
METHODS = ("bc", "dart", "dagger", "distill", "gail", "irl")


@dataclass(frozen=True)
class StudyConfig:
    tasks: tuple[str, ...] = ("target_sum", "grid_nav")
    methods: tuple[str, ...] = METHODS
    budgets: tuple[int, ...] = (2000, 8000, 32000)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    quick: bool = False
    n_test: int = 500
    n_val: int = 100
    pool_extra: int = 4000  # fresh train prompts (target_sum has ~5900 distinct in all)
    steps: int = 400  # gradient steps of every final fit (batch 32)
    batch: int = 32
    lr: float = 1e-3
    select_every: int = 100
    dart_epsilon: float = 0.25
    dagger_iterations: int = 4
    dagger_fit_steps: int = 150
    rollout_envs: int = 32  # episodes per round of DART's and DAgger's rollouts
    distill_envs: int = 16
    distill_share: float = 0.5  # of L spent on the student's own samples
    gail_updates: int = 20
    gail_every: int = 5
    gail_envs: int = 16
    irl_outer: int = 4
    irl_rl_updates: int = 5
    irl_envs: int = 16
    recovery_updates: int = 10
    threads: int = 1


QUICK = StudyConfig(
    budgets=(1000,), seeds=(0,), quick=True, n_test=100, n_val=50, pool_extra=0, steps=60,
    select_every=30, dagger_iterations=3, dagger_fit_steps=30, gail_updates=2, gail_every=1,
    irl_outer=2, irl_rl_updates=2, recovery_updates=2,
)  # fmt: skip
RUN_ONLY = ("tasks", "methods", "budgets", "seeds", "threads")  # fields a cell does not depend on


def cell_fields(cfg: StudyConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY}


def fingerprint(cfg: StudyConfig) -> str:
    return hashlib.sha1(json.dumps(cell_fields(cfg), sort_keys=True).encode()).hexdigest()[:10]


def clean(x: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    return x


# ---------------------------------------------------------------------------- per-task context


class Context:
    """One task's prompts and envs; the cache of bc's fits (where gail and irl start)."""

    def __init__(self, cfg: StudyConfig, task: str) -> None:
        self.cfg, self.name = cfg, task
        self.pool = study.train_pool(task, cfg.pool_extra)
        self.val, self.test = (
            first(load(task, "validation"), cfg.n_val),
            first(load(task, "test"), cfg.n_test),
        )
        self.val_env = self.env(textgym.DEFAULT_MODEL, len(self.val), self.val)
        self.test_env = self.env(textgym.DEFAULT_MODEL, len(self.test), self.test)
        self.cache = Path(tempfile.gettempdir()) / f"textgym_imitation_{fingerprint(cfg)}"
        self.last_irl: Any = None  # the last irl agent, for its recovery check

    def env(self, model: Any, n: int, task: Task | None = None, **kwargs: Any) -> Any:
        return gym.make_vec(
            "TextGen-v0", num_envs=n, model=model, task=task or self.pool,
            max_new_tokens=HORIZON, **kwargs,
        )  # fmt: skip

    def score(self, lm: LanguageModel) -> float:
        return study.validation_disagreement(lm, self.val_env, self.val)

    def bc_fit(self, lm: LanguageModel, data: Demonstrations, seed: int) -> study.Selection:
        """The matched final fit: BC from lm's current (initial) weights, `steps` steps."""
        c = self.cfg
        bcfg = BCConfig(
            lr=c.lr, batch_size=c.batch, eval_every=c.select_every, patience=None,
            val_fraction=0.0, seed=seed,
        )  # fmt: skip
        bc = BC(lm, data, bcfg, progress_bar=False)
        return study.train_with_selection(lm, bc.learn, c.steps, c.select_every, self.score)

    def bc_start(self, lm: LanguageModel, budget: int, seed: int) -> Demonstrations:
        """bc's demonstrations, and its selected weights loaded into lm (fitted if not cached)."""
        demos = study.expert_demonstrations(lm, self.pool, budget, seed)
        path = self.cache / f"bc_{self.name}_{budget}_{seed}"
        if (path / "model.safetensors").exists():
            lm.model.load_state_dict(
                LanguageModel.from_pretrained(path, device="cpu").model.state_dict()
            )
        else:
            self.bc_fit(lm, demos, seed)
            lm.save_pretrained(path)
        return demos


def first(task: Task, n: int) -> Task:
    refs = None if task.references is None else task.references[:n]
    return dataclasses.replace(task, prompts=task.prompts[:n], references=refs)


# ---------------------------------------------------------------------------- the methods
# Each trains lm in place and returns (labels spent, the selected checkpoint).


def run_bc(ctx: Context, lm: LanguageModel, budget: int, seed: int) -> tuple[int, Any]:
    demos = study.expert_demonstrations(lm, ctx.pool, budget, seed)
    sel = ctx.bc_fit(lm, demos, seed)
    lm.save_pretrained(ctx.cache / f"bc_{ctx.name}_{budget}_{seed}")
    return demos.n_labels, sel


def run_dart(ctx: Context, lm: LanguageModel, budget: int, seed: int) -> tuple[int, Any]:
    env = ctx.env(lm, ctx.cfg.rollout_envs)
    data = study.noisy_rollouts(lm, env, ctx.pool, ctx.cfg.dart_epsilon, budget, seed)
    return data.n_labels, ctx.bc_fit(lm, data, seed)


def run_dagger(ctx: Context, lm: LanguageModel, budget: int, seed: int) -> tuple[int, Any]:
    c, env = ctx.cfg, ctx.env(lm, ctx.cfg.rollout_envs)
    per_episode = statistics.fmean(len(y.split()) + 1 for _, y in ctx.pool.demonstrations())
    bcfg = BCConfig(lr=c.lr, batch_size=c.batch, patience=None, val_fraction=0.0, seed=seed)
    dcfg = DAggerConfig(
        beta_schedule="exponential", beta0=1.0, beta_decay=0.5,
        episodes_per_iteration=max(1, round(budget / c.dagger_iterations / per_episode)),
        steps_per_iteration=c.dagger_fit_steps, label_budget=budget, bc=bcfg, seed=seed,
    )  # fmt: skip
    agent = DAgger(lm, env, dcfg, progress_bar=False)
    agent.learn(c.dagger_iterations - 1)
    # The last iteration only collects (with the last intermediate learner) what is left of L.
    agent.config = replace(dcfg, episodes_per_iteration=10**9, steps_per_iteration=0)
    agent.learn(1)
    assert agent.data is not None
    lm.model.load_state_dict(agent.init_weights)
    return agent.n_labels, ctx.bc_fit(lm, agent.data, seed)


def run_distill(ctx: Context, lm: LanguageModel, budget: int, seed: int) -> tuple[int, Any]:
    c = ctx.cfg
    off = study.expert_demonstrations(lm, ctx.pool, budget - round(budget * c.distill_share), seed)
    on_budget, env = budget - off.n_labels, ctx.env(lm, c.distill_envs)
    bcfg = BCConfig(lr=c.lr, batch_size=c.batch, patience=None, val_fraction=0.0, seed=seed)
    bc = BC(lm, off, bcfg, progress_bar=False)
    g = torch.Generator().manual_seed(seed)
    state = {"data": off, "spent": 0, "done": 0, "rounds": 0}
    chunk = max(1, c.steps // 40)

    def due(done: int) -> float:  # on-policy labels to have spent after `done` steps
        return on_budget * min(1.0, max(0.0, (done / c.steps - 0.1) / 0.7))

    def learn(n: int) -> None:
        for _ in range(0, n, chunk):
            new = []
            while state["spent"] < min(on_budget, due(state["done"] + chunk)):
                out = collect_labelled(
                    lm, env, 0.0, generator=g, greedy=False,
                    seed=seed if state["rounds"] == 0 else None,
                )  # fmt: skip
                part = out.data.within_budget(on_budget - state["spent"])
                state["spent"] += part.n_labels
                state["rounds"] += 1
                new.append(part)
            if new:
                state["data"] = Demonstrations.cat([state["data"], *new], lm.pad_token_id)
                bc.set_data(state["data"])
            bc.learn(chunk)
            state["done"] += chunk

    sel = study.train_with_selection(lm, learn, c.steps, c.select_every, ctx.score)
    return state["data"].n_labels, sel


def run_gail(ctx: Context, lm: LanguageModel, budget: int, seed: int) -> tuple[int, Any]:
    demos = ctx.bc_start(lm, budget, seed)
    env = ctx.env(lm, ctx.cfg.gail_envs, fixed_horizon=True)
    gcfg = GAILConfig()
    gcfg = replace(gcfg, ppo=replace(gcfg.ppo, seed=seed))
    agent = GAIL(lm, env, demos, config=gcfg, progress_bar=False)
    c = ctx.cfg
    return demos.n_labels, study.train_with_selection(
        lm, agent.learn, c.gail_updates, c.gail_every, ctx.score
    )


def run_irl(ctx: Context, lm: LanguageModel, budget: int, seed: int) -> tuple[int, Any]:
    c, demos = ctx.cfg, ctx.bc_start(lm, budget, seed)
    env = ctx.env(lm, c.irl_envs)
    icfg = IRLConfig(
        weight_step="projection", n_rl_updates=c.irl_rl_updates, n_eval_rounds=1,
        reinforce=REINFORCEConfig(lr=3e-4, beta=0.02, seed=seed),
    )  # fmt: skip
    agent = IRL(lm, env, demos, study.puzzle_features(ctx.name), config=icfg, progress_bar=False)
    sel = study.train_with_selection(lm, agent.learn, c.irl_outer, 1, ctx.score)
    ctx.last_irl = agent
    return demos.n_labels, sel


RUNNERS = {
    "bc": run_bc, "dart": run_dart, "dagger": run_dagger,
    "distill": run_distill, "gail": run_gail, "irl": run_irl,
}  # fmt: skip


def progress_reward(task: str) -> Any:
    """The recovery check's true reward: progress max(0, 1 - d(final) / d(start)) in [0, 1], 1 at
    the goal (d: the fewest actions left). Non-negative, so that return ratios mean something."""

    @batched
    def progress(prompts: list[str], completions: list[str]) -> np.ndarray:
        out = []
        for p, c in zip(prompts, completions, strict=True):
            puzzle = parse(task, p)
            d = puzzle.distance(puzzle.state_of(c))
            out.append(max(0.0, 1 - (24 if d is None else d) / puzzle.optimal_length()))
        return np.array(out, dtype=np.float32)

    return make(progress, name=f"{task}_progress")


def irl_recovery(ctx: Context, budget: int, seed: int) -> dict[str, Any]:
    """agents.irl.recovery_check of the last irl run's reward against the task's progress."""
    start = LanguageModel.from_pretrained(device="cpu")
    ctx.bc_start(start, budget, seed)
    env = ctx.env(start, len(ctx.val), ctx.val)
    pin = {"prompt_index": np.arange(len(ctx.val))}
    out = collect(start, env, generator=torch.Generator().manual_seed(seed), seed=seed, options=pin)
    held = list(zip(out.prompts, out.texts, strict=True)) + ctx.val.demonstrations()
    kwargs = {"task": ctx.name, "max_new_tokens": HORIZON, "split": "train"}
    true = progress_reward(ctx.name)
    rc = recovery_check(
        ctx.last_irl.reward(), true, start, held, env_kwargs=kwargs,
        n_updates=ctx.cfg.recovery_updates, num_envs=ctx.cfg.irl_envs,
        rl_config=REINFORCEConfig(lr=3e-4, beta=0.02, seed=seed),
    )  # fmt: skip
    return {"task": ctx.name, "method": "irl_recovery", "labels": budget, "seed": seed, **rc}


# ---------------------------------------------------------------------------- the run


def cell_key(r: dict[str, Any]) -> tuple[str, str, int, int]:
    return r["task"], r["method"], int(r["labels"]), int(r["seed"])


def read_records(path: Path, fp: str | None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    other = {r["fingerprint"] for r in records} - {fp} if fp else set()
    if other:
        raise SystemExit(
            f"{path} holds cells of another configuration ({sorted(other)}; this one is {fp}): "
            "pass --out elsewhere, or delete the file to start over"
        )
    return records


def run(cfg: StudyConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path, fp = out / "cells.jsonl", fingerprint(cfg)
    done = {cell_key(r) for r in read_records(path, fp)}
    todo = [
        (t, b, s, m) for t in cfg.tasks for b in cfg.budgets for s in cfg.seeds for m in cfg.methods
    ]
    contexts: dict[str, Context] = {}
    bar = progress(todo, "cells")  # type: ignore[arg-type]  # tqdm takes any iterable
    for task, budget, seed, method in bar:
        recovery = method == "irl" and seed == cfg.seeds[0]
        need_recovery = recovery and (task, "irl_recovery", budget, seed) not in done
        if (task, method, budget, seed) in done and not need_recovery:
            continue
        ctx = contexts.get(task) or contexts.setdefault(task, Context(cfg, task))
        records = []
        if (task, method, budget, seed) not in done or need_recovery:
            lm = LanguageModel.from_pretrained(device="cpu")
            start = time.perf_counter()
            labels, sel = RUNNERS[method](ctx, lm, budget, seed)
            seconds = time.perf_counter() - start
            traj = study.closed_loop(lm, ctx.test_env, ctx.test)
            metrics = study.bucket_metrics(traj)
            records.append({
                "kind": "cell", "task": task, "method": method, "labels": budget,
                "labels_spent": labels, "seed": seed, "metrics": metrics,
                "position_error": study.padded_position_errors(traj, HORIZON),
                "chosen_step": sel.step, "val_scores": sel.scores, "seconds": seconds,
            })  # fmt: skip
            a = metrics["all"]
            bar.write(
                f"{task} L={budget} seed {seed} {method:8s} labels {labels} success "
                f"{a['success']:.3f} disagreement {a['disagreement']:.3f} clean "
                f"{a['error_clean']:.3f} after {a['error_after_mistake']:.3f} "
                f"(checkpoint {sel.step}) {seconds:.0f}s"
            )
        if need_recovery:
            records.append({"kind": "irl_recovery", **irl_recovery(ctx, budget, seed)})
            bar.write(f"{task} L={budget} irl recovery: {records[-1]}")
        with path.open("a") as f:
            for r in records:
                if cell_key(r) not in done:
                    f.write(json.dumps(clean({**r, "quick": cfg.quick, "fingerprint": fp})) + "\n")
                    done.add(cell_key(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the < 10 min smoke version")
    parser.add_argument("--tasks", nargs="+", choices=("target_sum", "grid_nav"))
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--budgets", type=int, nargs="+", help="expert labels per method")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--out", type=Path, help="default: results/imitation[/quick]")
    parser.add_argument("--report", action="store_true", help="only rebuild the outputs")
    args = parser.parse_args()
    cfg = QUICK if args.quick else StudyConfig()
    for name in ("tasks", "methods", "budgets", "seeds"):
        if getattr(args, name):
            cfg = replace(cfg, **{name: tuple(getattr(args, name))})
    out = args.out or (RESULTS / "quick" if cfg.quick else RESULTS)
    torch.set_num_threads(cfg.threads)
    gym.register_envs(textgym)
    start = time.perf_counter()
    if not args.report:
        run(cfg, out)
    command = "python experiments/repro_imitation.py " + " ".join(sys.argv[1:])
    study.write_report(
        read_records(out / "cells.jsonl", None), out, command.strip(),
        header=f"{'**QUICK run: a smoke test, not a result.** ' if cfg.quick else ''}Cell "
        f"configuration {fingerprint(cfg)}: {json.dumps(cell_fields(cfg))}. "
        f"{describe('torch', 'transformers')}. "
        + ("Report rebuilt from cells.jsonl." if args.report else
           f"This invocation took {time.perf_counter() - start:.0f} s."),
    )  # fmt: skip
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
