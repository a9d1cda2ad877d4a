"""Benchmark: agents x tasks x metrics, mean ± std over seeds, with resume.

For each (agent, task, seed) cell the agent starts from the model (`--model`, the embedded one by
default), trains on the task's train split within the budget below, and is evaluated on the first
``test_prompts`` prompts of the test split (one sampled completion each, temperature 1) with every
metric of ``textgym.evaluation``: task reward, BLEU, chrF, ROUGE-L, METEOR, CIDEr-D (tasks
with references), sentiment, toxicity (when ``textgym[toxicity]`` is installed), perplexity under
π_ref, KL(π_θ‖π_ref) per sequence, distinct-1/2, length.

Agents (the reward trained on is always the task's own reward, ``load(task).reward``):

    base            no training: the starting point every other row is compared with
    reinforce       REINFORCE with the RLOO baseline (K = 4), β = 0.02
    ppo             KL-regularised PPO, β = 0.02
    grpo            GRPO (groups of G = 4, group-normalised advantages, β = 0.02 as k3 in the
                    loss, one step a round), with REINFORCE's learning rate
    bc              behaviour cloning on the train split's first reference
    dpo             one round of on-policy DPO: K = 4 samples per prompt ranked by the task reward,
                    best vs worst (``IterativeDPO`` with ``rounds=1``); on ``reverse`` the gold
                    completion is a fifth candidate, since no sample scores above 0 there
    iterative_dpo   three such rounds, each against the previous round's policy
    dagger          DAgger with the task's expert (only tasks with an expert: ``reverse``)
    gail            GAIL: the native PPO on the AIRL reward of a discriminator trained on the
                    train split's first references against the policy's episodes, in the env's
                    fixed-horizon mode (tasks with references)

Each finished cell is written to ``<out>/cells/<agent>__<task>__<seed>.json`` at once; a rerun
skips cells already there, so an interrupted benchmark resumes where it stopped. At the end the
script writes ``<out>/benchmark.md``, ``<out>/benchmark.csv`` (mean and std of every metric per
(agent, task)) and one bar chart per metric, ``<out>/benchmark_<metric>.png``.

    python experiments/benchmark.py --quick                     # ~4 min on 2 CPU cores
    python experiments/benchmark.py                             # full budget, ~1 h
    python experiments/benchmark.py --model gpt2 --device cuda --agents ppo dpo --tasks reviews
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import textgym
from textgym import plots
from textgym.evaluation import ALL_METRICS, evaluate_policy_on_task
from textgym.lm import LanguageModel
from textgym.records import write_json
from textgym.tasks import Task, load

AGENTS = ("base", "reinforce", "ppo", "grpo", "bc", "dpo", "iterative_dpo", "dagger", "gail")
TASKS = ("reviews", "concepts", "reverse")


@dataclass(frozen=True)
class BenchConfig:
    """What a benchmark run does; ``quick()`` is the ~4 minute version."""

    model: str = textgym.DEFAULT_MODEL
    """HF path or hub name of the starting policy (and π_ref)."""
    device: str = "cpu"
    agents: tuple[str, ...] = AGENTS
    tasks: tuple[str, ...] = ("reviews", "concepts", "reverse")
    seeds: int = 3
    out: str = "experiments/results/benchmark"
    num_envs: int = 32
    """episodes per on-policy update."""
    max_new_tokens: int = 24
    rl_updates: int = 40
    """updates of REINFORCE, PPO, GRPO and GAIL."""
    rl_lr: float = 3e-4
    """learning rate of REINFORCE and GRPO (one step per update)."""
    ppo_lr: float = 3e-4
    """learning rate of PPO (n_epochs x n_minibatches = 16 steps per update)."""
    bc_steps: int = 200
    """gradient steps of BC (batch 32)."""
    dpo_updates: int = 60
    """DPO steps per round (batch 8)."""
    dpo_prompts: int = 128
    """prompts sampled per DPO round (K = 4 completions each)."""
    dagger_iterations: int = 4
    test_prompts: int = 128
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            # BC is left out: on reviews/concepts the embedded model was trained on the very
            # references BC imitates, so its cells cost the most and change nothing. Iterative
            # DPO is one-round DPO three times over; both are in the full run.
            agents=("base", "reinforce", "ppo", "dpo", "dagger", "gail"),
            tasks=("reviews", "concepts", "reverse"),
            num_envs=16,
            max_new_tokens=20,
            rl_updates=8,
            bc_steps=40,
            dpo_updates=20,
            dpo_prompts=32,
            dagger_iterations=2,
            test_prompts=48,
            out="experiments/results/benchmark_quick",
        )


# --- what each agent trains on: shared with `textgym train` (textgym/cli.py) ----------------------


@dataclass(frozen=True)
class TrainSetup:
    """What an agent trains on besides its config. The benchmark's cells and ``textgym train``
    build every agent through :data:`BUILD` from one of these, so both wire an agent to a task the
    same way (the train split, the task's reward, GAIL's fixed horizon, DPO's prompts)."""

    task: str | Task
    """A built-in task name (its train split is read) or a :class:`~textgym.tasks.Task`, used as
    given."""
    reward: Any = None
    """A reward spec (``textgym.rewards.make``); None: the task's own."""
    num_envs: int = 32
    """Episodes per on-policy round (the vector env's size)."""
    max_new_tokens: int = 24
    device: str = "cpu"
    """Where agents that take a device (iterative DPO) train."""
    data_limit: int | None = None
    """Keep only the first N demonstrations / prompts of the train split (None: all)."""
    val_prompts: int = 128
    """Iterative DPO validates on the first N of its prompts."""

    def train_task(self) -> Task:
        return self.task if isinstance(self.task, Task) else load(self.task, "train")

    def reward_spec(self) -> Any:
        """``reward``, or the task's own; a task without one is an error naming the fix."""
        if self.reward is not None:
            return self.reward
        task = self.train_task()
        if task.reward is None:
            raise ValueError(f"task {task.name!r} has no reward of its own: give one")
        return task.reward

    def env(self, model: LanguageModel | str, **kwargs: Any) -> Any:
        """``num_envs`` episodes of the task's train split with the reward; kwargs go to the env."""
        return gym.make_vec(
            "TextGen-v0",
            num_envs=self.num_envs,
            model=model,
            task=self.task,
            split="train",
            reward=self.reward_spec(),
            max_new_tokens=self.max_new_tokens,
            **kwargs,
        )

    def demonstrations(self) -> list[tuple[str, str]]:
        """(prompt, first reference) pairs of the train split, the first ``data_limit`` of them."""
        return self.train_task().demonstrations()[: self.data_limit]


def build_on_policy(name: str) -> Callable[..., Any]:
    """REINFORCE, PPO, GRPO, DAgger: the agent on the train split's vector env."""

    def build(lm: LanguageModel, setup: TrainSetup, config: Any, **runtime: Any) -> Any:
        import textgym.agents as agents

        return getattr(agents, name)(lm, setup.env(lm), config=config, **runtime)

    return build


def build_bc(lm: LanguageModel, setup: TrainSetup, config: Any, **runtime: Any) -> Any:
    from textgym.agents import BC

    return BC(lm, setup.demonstrations(), config, **runtime)


def build_gail(lm: LanguageModel, setup: TrainSetup, config: Any, **runtime: Any) -> Any:
    from textgym.agents import GAIL

    # GAIL compares equal-length episodes (absorbing steps after EOS): the fixed-horizon mode.
    env = setup.env(lm, fixed_horizon=True)
    return GAIL(lm, env, setup.demonstrations(), config=config, **runtime)


def build_iterative_dpo(lm: LanguageModel, setup: TrainSetup, config: Any, **runtime: Any) -> Any:
    from textgym.agents import IterativeDPO
    from textgym.rewards import make

    train = setup.train_task()
    # Prompts for all rounds come from the agent's own seeded sampler over these prompts.
    prompts = train.prompts[: setup.data_limit]
    refs = None if train.references is None else list(train.references[: len(prompts)])
    n_val = setup.val_prompts
    return IterativeDPO(
        lm,
        prompts,
        reward=make(setup.reward_spec()),
        references=refs,
        val_prompts=prompts[:n_val],
        val_references=None if refs is None else refs[:n_val],
        config=config,
        device=setup.device,
        **runtime,
    )


BUILD: dict[str, Callable[..., Any]] = {
    "reinforce": build_on_policy("REINFORCE"),
    "ppo": build_on_policy("PPO"),
    "grpo": build_on_policy("GRPO"),
    "dagger": build_on_policy("DAgger"),
    "bc": build_bc,
    "gail": build_gail,
    "iterative_dpo": build_iterative_dpo,
}
"""name -> ``build(lm, setup, config, **runtime) -> agent`` (runtime: ``progress_bar``, ...)."""


# --- the benchmark's cells: each agent with the benchmark's config and budget --------------------


def setup_of(task: str, cfg: BenchConfig, data_limit: int | None = None) -> TrainSetup:
    """A cell's inputs: the task's train split and own reward, the benchmark's env size."""
    return TrainSetup(
        task,
        num_envs=cfg.num_envs,
        max_new_tokens=cfg.max_new_tokens,
        device=cfg.device,
        data_limit=data_limit,
        val_prompts=cfg.dpo_prompts,
    )


def train_base(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    return lm


def train_reinforce(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    from textgym.agents import REINFORCEConfig

    rcfg = REINFORCEConfig(baseline="rloo", rloo_k=4, lr=cfg.rl_lr, beta=0.02, seed=seed)
    agent = BUILD["reinforce"](lm, setup_of(task, cfg), rcfg, progress_bar=False)
    agent.learn(cfg.rl_updates)
    return agent.policy


def train_ppo(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    from textgym.agents import PPOConfig

    pcfg = PPOConfig(lr=cfg.ppo_lr, beta=0.02, n_minibatches=4, n_epochs=4, seed=seed)
    agent = BUILD["ppo"](lm, setup_of(task, cfg), pcfg, progress_bar=False)
    agent.learn(cfg.rl_updates)
    return agent.policy


def train_grpo(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    from textgym.agents import GRPOConfig

    gcfg = GRPOConfig(group_size=4, lr=cfg.rl_lr, beta=0.02, seed=seed)
    agent = BUILD["grpo"](lm, setup_of(task, cfg), gcfg, progress_bar=False)
    agent.learn(cfg.rl_updates)
    return agent.policy


def train_bc(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    from textgym.agents import BCConfig

    # One epoch's worth of demonstrations (plus the 10% held out): tokenising all 3000 reviews
    # cost more than the training itself in --quick.
    setup = setup_of(task, cfg, data_limit=max(256, int(cfg.bc_steps * 32 / 0.9)))
    bcfg = BCConfig(lr=3e-4, batch_size=32, eval_every=max(cfg.bc_steps // 2, 1), seed=seed)
    agent = BUILD["bc"](lm, setup, bcfg, progress_bar=False)
    agent.learn(cfg.bc_steps)
    if hasattr(agent, "restore_best"):
        agent.restore_best()
    return agent.policy


def _iterative_dpo(
    lm: LanguageModel, task: str, cfg: BenchConfig, seed: int, rounds: int
) -> LanguageModel:
    from textgym.agents import DPOConfig, IterativeDPOConfig

    dcfg = DPOConfig(beta=0.1, lr=1e-4, batch_size=8, seed=seed)
    icfg = IterativeDPOConfig(
        rounds=rounds,
        k=4,
        updates_per_round=cfg.dpo_updates,
        prompts_per_round=cfg.dpo_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
        dpo=dcfg,
        include_reference=task in GOLD_CANDIDATE_TASKS,
    )
    setup = setup_of(task, cfg, data_limit=cfg.dpo_prompts * rounds * 4)
    agent = BUILD["iterative_dpo"](lm, setup, icfg, progress_bar=False)
    agent.learn()
    return agent.policy


GOLD_CANDIDATE_TASKS = ("reverse",)
"""Tasks whose exact-match reward is 0 on every sample of the starting model, so that K samples
never form a pair: there the gold completion joins the candidates (DNO-Prct's
``include_reference``)."""


def train_dpo(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    return _iterative_dpo(lm, task, cfg, seed, rounds=1)


def train_iterative_dpo(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    return _iterative_dpo(lm, task, cfg, seed, rounds=3)


def train_dagger(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    from textgym.agents import DAggerConfig

    agent = BUILD["dagger"](lm, setup_of(task, cfg), DAggerConfig(seed=seed), progress_bar=False)
    agent.learn(cfg.dagger_iterations)
    return agent.policy


def train_gail(lm: LanguageModel, task: str, cfg: BenchConfig, seed: int) -> LanguageModel:
    from textgym.agents import GAILConfig

    setup = setup_of(task, cfg, data_limit=cfg.num_envs * cfg.rl_updates)
    gcfg = GAILConfig()
    gcfg = replace(gcfg, ppo=replace(gcfg.ppo, seed=seed))
    BUILD["gail"](lm, setup, gcfg, progress_bar=False).learn(cfg.rl_updates)
    return lm


TRAIN: dict[str, Callable[[LanguageModel, str, BenchConfig, int], LanguageModel]] = {
    "base": train_base,
    "reinforce": train_reinforce,
    "ppo": train_ppo,
    "grpo": train_grpo,
    "bc": train_bc,
    "dpo": train_dpo,
    "iterative_dpo": train_iterative_dpo,
    "dagger": train_dagger,
    "gail": train_gail,
}


def supported(agent: str, task: str) -> str | None:
    """None when ``agent`` can run on ``task``, else why not (the cell is left out and reported)."""
    spec = load(task, "train")
    if agent == "dagger" and spec.expert is None:
        return "needs a task expert"
    if agent in ("bc", "gail") and spec.references is None:
        return "needs references (demonstrations)"
    return None


def cell_path(cfg: BenchConfig, agent: str, task: str, seed: int) -> Path:
    return Path(cfg.out) / "cells" / f"{agent}__{task}__{seed}.json"


def run_cell(cfg: BenchConfig, agent: str, task: str, seed: int) -> dict[str, Any]:
    """Train one agent on one task with one seed, evaluate it, return the cell's record."""
    torch.manual_seed(seed)  # model init of value heads and discriminators reads the global RNG
    ref = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    ref.model.requires_grad_(False)
    lm = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    start = time.perf_counter()
    policy = TRAIN[agent](lm, task, cfg, seed)
    train_s = time.perf_counter() - start
    policy.model.eval()
    metrics = evaluate_policy_on_task(
        policy,
        task,
        ref=ref,
        split="test",
        n_prompts=cfg.test_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=1000 + seed,
    )
    return {
        "agent": agent,
        "task": task,
        "seed": seed,
        "train_seconds": train_s,
        "eval_seconds": time.perf_counter() - start - train_s,
        "metrics": metrics,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("agents", "tasks")},
    }


RESUMABLE = ("agents", "tasks", "seeds", "out", "threads", "extra")
"""Config fields a rerun may change and still reuse finished cells."""


def cell_config(cfg: BenchConfig) -> dict[str, Any]:
    """What a cell's result depends on: the config without the fields in ``RESUMABLE``."""
    return {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}


def check_same_config(rec: dict[str, Any], cfg: BenchConfig, path: Path) -> None:
    """Refuse to mix cells of different budgets in one table: resume only what was started."""
    old = {k: v for k, v in rec.get("config", {}).items() if k not in RESUMABLE}
    new = cell_config(cfg)
    diff = {k: (old.get(k), new.get(k)) for k in new if old.get(k) != new.get(k)}
    if diff:
        raise ValueError(
            f"{path} was run with another config (field: (cell, now)) {diff}; use another --out "
            "or delete the cell"
        )


def run(cfg: BenchConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) every cell; return all finished cells' records."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

    torch.set_num_threads(cfg.threads)
    cells = [(a, t, s) for t in cfg.tasks for a in cfg.agents for s in range(cfg.seeds)]
    skipped = {(a, t): why for a, t, _ in cells if (why := supported(a, t))}
    todo = [c for c in cells if (c[0], c[1]) not in skipped]
    records = []
    bar = tqdm(todo, desc="benchmark", disable=not progress)
    for agent, task, seed in bar:
        path = cell_path(cfg, agent, task, seed)
        bar.set_postfix_str(f"{agent}/{task}/seed {seed}")
        if path.exists():
            rec = json.loads(path.read_text())
            check_same_config(rec, cfg, path)
            records.append(rec)
            continue
        rec = run_cell(cfg, agent, task, seed)
        write_json(path, rec, newline=False)  # atomic: never half a cell behind
        records.append(rec)
    for (a, t), why in skipped.items():
        print(f"# skipped {a} on {t}: {why}")
    return records


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (agent, task): mean and std over seeds of every metric and of the seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["agent"], r["task"]), []).append(r)
    rows = []
    for (agent, task), recs in groups.items():
        row: dict[str, Any] = {"agent": agent, "task": task, "seeds": len(recs)}
        keys = [m for m in ALL_METRICS if m in recs[0]["metrics"]]
        for m in [*keys, "train_seconds"]:
            xs = [r["metrics"][m] if m in r["metrics"] else r[m] for r in recs]
            row[m] = statistics.mean(xs)
            row[m + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        rows.append(row)
    return rows


def fmt(mean: float, std: float) -> str:
    digits = 1 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_tables(rows: list[dict[str, Any]], out: Path) -> str:
    """Write benchmark.csv and benchmark.md; return the Markdown."""
    metrics = [m for m in ALL_METRICS if any(m in r for r in rows)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "benchmark.csv", "w", newline="") as f:
        cols = [
            "task",
            "agent",
            "seeds",
            *[c for m in [*metrics, "train_seconds"] for c in (m, m + "_std")],
        ]
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["task"], AGENTS.index(r["agent"]))):
            w.writerow(r)
    lines = []
    for task in sorted({r["task"] for r in rows}):
        trows = sorted(
            [r for r in rows if r["task"] == task], key=lambda r: AGENTS.index(r["agent"])
        )
        shown = [m for m in metrics if m in trows[0]]
        lines.append(f"\n### {task}\n")
        lines.append("| agent | " + " | ".join([*shown, "train s"]) + " |")
        lines.append("|---" * (len(shown) + 2) + "|")
        for r in trows:
            cells = [fmt(r[m], r[m + "_std"]) for m in shown]
            lines.append(
                f"| {r['agent']} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} |"
            )
    md = "\n".join(lines) + "\n"
    (out / "benchmark.md").write_text(md)
    return md


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One grouped bar chart per metric (tasks on the x axis, one bar per agent, std as error)."""
    plt = plots.pyplot()

    tasks = sorted({r["task"] for r in rows})
    agents = [a for a in AGENTS if any(r["agent"] == a for r in rows)]
    paths = []
    for m in [m for m in ALL_METRICS if any(m in r for r in rows)]:
        fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=80)
        width = 0.8 / len(agents)
        for j, a in enumerate(agents):
            xs, ys, es = [], [], []
            for i, t in enumerate(tasks):
                r = next((r for r in rows if r["agent"] == a and r["task"] == t and m in r), None)
                if r is not None:
                    xs.append(i + (j - (len(agents) - 1) / 2) * width)
                    ys.append(r[m])
                    es.append(r[m + "_std"])
            ax.bar(xs, ys, width, yerr=es, label=a, capsize=2)
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_title(m)
        ax.legend(fontsize=7, ncol=2)
        paths.append(plots.save(fig, out / f"benchmark_{m}.png"))
    return paths


def parse(
    argv: list[str] | None = None,
    *,
    prog: str | None = None,
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> BenchConfig:
    """The run's config from the command line (``textgym bench`` passes its prog and parser)."""
    parser = parser_class(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (~10 min on 2 CPUs)")
    parser.add_argument("--model", help="HF path or hub name (default: the embedded model)")
    parser.add_argument("--device", help="cpu, cuda, ...")
    parser.add_argument("--agents", nargs="+", choices=AGENTS)
    parser.add_argument("--tasks", nargs="+", choices=TASKS)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--out", help="output dir (cells/, tables, plots)")
    parser.add_argument("--rl-updates", type=int)
    parser.add_argument("--test-prompts", type=int)
    parser.add_argument("--threads", type=int)
    ns = parser.parse_args(argv)
    cfg = BenchConfig.quick() if ns.quick else BenchConfig()
    over = {
        "model": ns.model,
        "device": ns.device,
        "seeds": ns.seeds,
        "out": ns.out,
        "rl_updates": ns.rl_updates,
        "test_prompts": ns.test_prompts,
        "threads": ns.threads,
        "agents": tuple(ns.agents) if ns.agents else None,
        "tasks": tuple(ns.tasks) if ns.tasks else None,
    }
    return replace(cfg, **{k: v for k, v in over.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    main_with(parse(argv))


def main_with(cfg: BenchConfig) -> None:
    """Run or resume ``cfg``, then write the tables and plots and print the Markdown table."""
    start = time.perf_counter()
    plots = importlib.util.find_spec("matplotlib") is not None  # known before hours of training
    if not plots:
        print("# matplotlib is not installed: tables only, no plots (pip install matplotlib)")
    run(cfg)
    # The tables cover every finished cell in the output dir, so runs over different agent/task
    # subsets (all with one budget: check_same_config) add up to one benchmark.
    records = [json.loads(p.read_text()) for p in sorted((Path(cfg.out) / "cells").glob("*.json"))]
    rows = summarise(records)
    out = Path(cfg.out)
    md = write_tables(rows, out)
    if plots:
        plot(rows, out)
    name = "embedded" if cfg.model == textgym.DEFAULT_MODEL else cfg.model
    print(
        f"# benchmark: model {name}, device {cfg.device}, {cfg.seeds} seeds, "
        f"{cfg.test_prompts} test prompts, <= {cfg.max_new_tokens} new tokens, torch "
        f"{torch.__version__}, {time.perf_counter() - start:.0f} s"
    )
    print(md)


if __name__ == "__main__":
    main()
