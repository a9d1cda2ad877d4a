"""The imitation study's pieces (issue 16, §4; run by ``experiments/repro_imitation.py``).

Learners imitate the dynamic expert of ``target_sum`` / ``grid_nav`` (:mod:`textgym.dynamic_tasks`)
on an equal budget of expert labels (one label = one state labelled with the expert's next token)
and are scored in closed loop. This module holds what the study needs beside the agents:

* metrics of labelled closed-loop trajectories by horizon bucket (:func:`bucket_metrics`): success,
  expert disagreement, error at clean states and after a mistake; per-position errors;
* label-budgeted data: a larger train pool (:func:`train_pool`), expert demonstrations
  (:func:`expert_demonstrations`), DART's noise-injected expert rollouts (:func:`noisy_rollouts`);
* fits whose checkpoint is chosen on the learner's own validation states
  (:func:`train_with_selection`, :func:`validation_disagreement`);
* the task-signal features of IRL (:func:`puzzle_features`);
* the summary rows over seeds (:func:`summarize`), with 95% bootstrap CIs (:mod:`textgym.stats`).

Top layer of the core (like ``drift.py``): it imports agents only inside functions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textgym.dynamic_tasks import PuzzleReward, expert_disagreement, parse, position_errors
from textgym.envs import to_left_padded
from textgym.features import FunctionFeatures
from textgym.lm import LanguageModel
from textgym.stats import summary_row
from textgym.tasks import Task, load

__all__ = [
    "BUCKETS",
    "METRICS",
    "Trajectories",
    "bucket_metrics",
    "closed_loop",
    "expert_demonstrations",
    "mistake_masks",
    "noisy_rollouts",
    "one_hot_logits",
    "puzzle_features",
    "summarize",
    "train_pool",
    "train_with_selection",
    "validation_disagreement",
    "write_report",
]

BUCKETS: tuple[tuple[int, int], ...] = ((3, 5), (6, 8), (9, 12))
"""Horizon buckets: the prompt's optimal solution length (actions, EOS excluded)."""
METRICS = ("success", "disagreement", "error_clean", "error_after_mistake")
"""The metrics of a (task, method, labels, horizon) cell, in table order."""


# ---------------------------------------------------------------------------- metrics


@dataclass
class Trajectories:
    """A learner's closed-loop episodes, every visited state labelled by the expert."""

    actions: np.ndarray  # (N, T) int64, the learner's tokens, -1 past each episode's end
    labels: np.ndarray  # (N, T) int64, the expert's token at the same states, -1 past the end
    success: np.ndarray  # (N,) float, the task's success reward of the finished text
    horizon: np.ndarray  # (N,) int64, the prompt's optimal solution length


def mistake_masks(actions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(wrong, clean, after), each (N, T) bool: the learner's action differs from the expert's
    label; a state whose prefix holds no earlier mistake; a state after at least one mistake."""
    if actions.shape != labels.shape:
        raise ValueError(f"actions {actions.shape} and labels {labels.shape} differ in shape")
    steps = actions >= 0
    wrong = steps & (actions != labels)
    before = (np.cumsum(wrong, axis=1) - wrong) > 0  # an earlier step was wrong
    return wrong, steps & ~before, steps & before


def _rate(wrong: np.ndarray, where: np.ndarray) -> float:
    n = int(where.sum())
    return float((wrong & where).sum() / n) if n else math.nan


def bucket_metrics(
    traj: Trajectories, buckets: Sequence[tuple[int, int]] = BUCKETS
) -> dict[str, dict[str, float]]:
    """The four metrics per horizon bucket (``"3-5"``, ...) and over all episodes (``"all"``).

    success: mean success; disagreement: mean over episodes of the share of the learner's steps
    whose token differs from the expert's label (the expert-disagreement cost of its own
    trajectory); error_clean / error_after_mistake: the error rate pooled over the states whose
    prefix is clean / already holds a mistake. NaN where a bucket has no such state.
    """
    wrong, clean, after = mistake_masks(traj.actions, traj.labels)
    per_episode = expert_disagreement(traj.actions, traj.labels)  # (N,)
    groups = {f"{lo}-{hi}": (traj.horizon >= lo) & (traj.horizon <= hi) for lo, hi in buckets}
    groups["all"] = np.ones(len(traj.horizon), dtype=bool)
    out = {}
    for name, rows in groups.items():
        d = per_episode[rows]
        out[name] = {
            "success": float(traj.success[rows].mean()) if rows.any() else math.nan,
            "disagreement": float(np.nanmean(d)) if np.isfinite(d).any() else math.nan,
            "error_clean": _rate(wrong[rows], clean[rows]),
            "error_after_mistake": _rate(wrong[rows], after[rows]),
        }
    return out


def padded_position_errors(traj: Trajectories, T: int) -> list[float]:
    """Error rate at each step t < T over the episodes still running (NaN where none is)."""
    err = position_errors(traj.actions, traj.labels)[:T]
    return [float(x) for x in np.concatenate([err, np.full(T - len(err), np.nan)])]


@torch.no_grad()
def closed_loop(lm: LanguageModel, env: Any, task: Task) -> Trajectories:
    """Greedy decoding of every prompt of ``env`` (one sub-env per prompt of ``task``), labelled.

    Args:
        lm: the learner.
        env: ``gym.make_vec("TextGen-v0", num_envs=len(task), task=task, ...)``.
        task: the env's task (its expert and success reward).
    """
    from textgym.agents.dagger import collect_labelled

    n = env.num_envs
    out = collect_labelled(
        lm, env, 0.0, generator=torch.Generator(), options={"prompt_index": np.arange(n)}
    )
    steps = out.data.mask.cpu().numpy() > 0  # (N, T)
    ids = out.data.completion_ids.masked_fill(out.data.mask == 0, lm.pad_token_id)
    prompts = [task.prompts[i] for i in out.prompt_indices]
    success = PuzzleReward(task.name)(prompts, lm.decode(ids)).astype(np.float64)  # (N,)
    return Trajectories(
        actions=np.where(steps, out.data.completion_ids.cpu().numpy(), -1),
        labels=np.where(steps, out.data.labels.cpu().numpy(), -1),
        success=success,
        horizon=np.array([parse(task.name, p).optimal_length() for p in prompts]),
    )


def validation_disagreement(lm: LanguageModel, env: Any, task: Task) -> float:
    """The checkpoint-choice score: mean expert disagreement of the learner's own greedy
    episodes on the validation prompts (lower is better)."""
    t = closed_loop(lm, env, task)
    return float(np.nanmean(expert_disagreement(t.actions, t.labels)))


# ---------------------------------------------------------------------------- data


def train_pool(task: str, extra: int, seed: int = 1) -> Task:
    """The shipped train split plus up to ``extra`` fresh prompts drawn by the data builder with
    another seed (equally many per optimal length), minus any prompt of a shipped split.

    The shipped train split has 600 prompts (about 5 100 expert labels); larger label budgets
    need more distinct prompts. target_sum has only ~5 900 distinct prompts of lengths 3-12.
    """
    from textgym.assets.build_dynamic import DynamicDataConfig, records

    base = load(task, "train")
    if extra <= 0:
        return base
    shipped = set(load(task, None).prompts)
    rows = records(task, DynamicDataConfig(seed=seed, train=extra, validation=0, test=0))
    new = [r for r in rows if r["prompt"] not in shipped]
    prompts = [*base.prompts, *(str(r["prompt"]) for r in new)]
    refs = [*(base.references or ()), *((str(r["references"][0]),) for r in new)]  # type: ignore[index]  # a JSON row's list
    return dataclasses.replace(base, prompts=tuple(prompts), references=tuple(refs))


def expert_demonstrations(lm: LanguageModel, task: Task, budget: int, seed: int) -> Any:
    """Expert demonstrations of ``task``'s prompts in a seeded order, cut to exactly ``budget``
    labels (a demonstration of n actions costs n + 1 labels, EOS included)."""
    from textgym.agents.bc import Demonstrations

    pairs = task.demonstrations()
    order = np.random.default_rng(seed).permutation(len(pairs))
    per = statistics.fmean(len(c.split()) + 1 for _, c in pairs)
    need = min(len(pairs), int(budget / per * 1.3) + 8)  # tokenise only what the budget can use
    demos = Demonstrations.from_pairs(lm, [pairs[i] for i in order[:need]])
    if demos.n_labels < budget:
        raise ValueError(
            f"{task.name}: {len(pairs)} demonstrations hold fewer than {budget} labels"
        )
    return demos.within_budget(budget)


@torch.no_grad()
def noisy_rollouts(
    lm: LanguageModel, env: Any, task: Task, epsilon: float, budget: int, seed: int
) -> Any:
    """DART (Laskey et al. 2017, arXiv:1703.09327) for a discrete action set: the expert acts,
    but at each step with probability ε a uniformly random action word replaces its choice; every
    visited state is labelled with the expert's action there. Rounds of the env until exactly
    ``budget`` labels (the last round's extra states are dropped)."""
    from textgym.agents.bc import Demonstrations

    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    rng, actions = np.random.default_rng(seed), parse(task.name, task.prompts[0]).actions
    # one token each with its space (PuzzleExpert.bind checks it)
    words = np.array([lm.tokenizer(" " + w)["input_ids"][-1] for w in actions])
    parts: list[Any] = []
    spent = 0
    while spent < budget:
        obs, _ = env.reset(seed=seed if not parts else None)
        ids, mask = to_left_padded(
            obs["input_ids"], obs["attention_mask"], lm.pad_token_id, trim=True
        )
        B = ids.shape[0]
        active, cols = np.ones(B, dtype=bool), []
        while active.any():
            label = env.expert_actions()  # (B,) π*(s_t)
            noise = rng.random(B) < epsilon
            action = np.where(noise, rng.choice(words, size=B), label)
            action = np.where(active, action, lm.pad_token_id)
            cols.append((action, label, active.copy()))
            _, _, term, trunc, _ = env.step(action)
            active &= ~np.logical_or(term, trunc)
        executed, labels, alive = (torch.as_tensor(np.stack(c, 1)) for c in zip(*cols, strict=True))
        part = Demonstrations(
            torch.as_tensor(ids), torch.as_tensor(mask), executed, labels, alive.float()
        ).within_budget(budget - spent)
        parts, spent = [*parts, part], spent + part.n_labels
    return Demonstrations.cat(parts, lm.pad_token_id)


def one_hot_logits(labels: torch.Tensor, vocab_size: int, scale: float = 50.0) -> torch.Tensor:
    """A one-hot teacher as logits (B, T, V): ``scale`` at each label, 0 elsewhere (p_T = 1 at the
    label up to e^-scale). Forward KL(p_T ‖ q_θ) against it is the cross-entropy of the label."""
    out = torch.zeros(*labels.shape, vocab_size, device=labels.device)  # (B, T, V)
    return out.scatter_(-1, labels.clamp(min=0)[..., None], scale)


# ---------------------------------------------------------------------------- fitting


@dataclass
class Selection:
    """The chosen checkpoint of a fit: its step (or update), validation score, all scores."""

    step: int
    score: float
    scores: list[tuple[int, float]]


def train_with_selection(
    lm: LanguageModel,
    learn: Callable[[int], Any],
    total: int,
    every: int,
    score: Callable[[LanguageModel], float],
) -> Selection:
    """Run ``learn(every)`` until ``total`` steps, score the learner after each chunk, and load the
    weights of the lowest score (ties: the earlier). The starting weights are not a candidate.

    Args:
        lm: the learner, trained in place by ``learn``.
        learn: runs n more training steps or updates (``BC.learn``, ``GAIL.learn``, ...).
        total: steps in all (ceil(total / every) chunks are run).
        every: steps between checkpoints.
        score: lower is better (:func:`validation_disagreement`).
    """
    if total < 1 or every < 1:
        raise ValueError(f"total and every must be >= 1, got {total}, {every}")
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (math.inf, 0, None)
    done, scores = 0, []
    while done < total:
        learn(every)
        done += every
        s = score(lm)
        scores.append((done, s))
        if s < best[0]:
            best = (s, done, copy.deepcopy(lm.model.state_dict()))
    if best[2] is not None:
        lm.model.load_state_dict(best[2])
    return Selection(best[1], best[0], scores)


# ---------------------------------------------------------------------------- IRL features

FEATURE_NAMES = ("solved", "distance", "actions", "other_words")
"""Φ(x, y) of :func:`puzzle_features`: the final state is the goal; its remaining distance / 12;
the action words written / 12; the other (no-op) words written / 12."""


def puzzle_features(task: str) -> FunctionFeatures:
    """The task's own signals as IRL features (textgym.features.FunctionFeatures)."""

    def signals(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(completions), len(FEATURE_NAMES)))  # (B, K)
        for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            puzzle = parse(task, p)
            d = puzzle.distance(puzzle.state_of(c))
            d = 24 if d is None else min(d, 24)
            n_act = sum(w in puzzle.actions for w in c.split())
            out[b] = (d == 0, d / 12, n_act / 12, (len(c.split()) - n_act) / 12)
        return out

    return FunctionFeatures(signals, list(FEATURE_NAMES))


# ---------------------------------------------------------------------------- summary


def summarize(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """summary.json's rows from finished cells (one per task, method, labels, seed).

    A cell is ``{"task", "method", "labels", "seed", "metrics": {horizon: {metric: value}}}``.
    One row per (task, method, labels, horizon, metric): ``values`` one per seed in seed order
    (None where a seed has no such state), ``mean`` and ``ci95`` over the finite values (None when
    there are none), ``n_seeds``.
    """
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["task"], c["method"], int(c["labels"])), []).append(c)
    rows = []
    for (task, method, labels), cs in groups.items():
        cs = sorted(cs, key=lambda c: c["seed"])
        for horizon in cs[0]["metrics"]:
            for metric in METRICS:
                raw = [c["metrics"][horizon][metric] for c in cs]
                values = [v if v is not None and math.isfinite(v) else None for v in raw]
                finite = [v for v in values if v is not None]
                key = {"task": task, "labels": labels, "horizon": horizon, "n_seeds": len(cs)}
                row = summary_row(method, metric, finite, **key) if finite else {
                    "method": method, "metric": metric, "mean": None, "ci95": None, **key
                }  # fmt: skip
                rows.append({**row, "values": values})
    return rows


# ---------------------------------------------------------------------------- report

ORDER = ("bc", "dart", "dagger", "distill", "gail", "irl")  # table order; others follow, sorted


def _rank(method: str) -> tuple[int, str]:
    return (ORDER.index(method) if method in ORDER else len(ORDER), method)


def _fmt(row: dict[str, Any] | None) -> str:
    if row is None or row["mean"] is None:
        return "-"
    lo, hi = row["ci95"]
    return f"{row['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(rows: Sequence[dict[str, Any]], command: str, header: str) -> str:
    """table.md: per task, success by horizon and the error metrics (mean [95% CI] over seeds),
    the DAgger-vs-BC comparison per horizon, and the IRL recovery checks."""
    cells = [r for r in rows if r["method"] != "irl_recovery"]
    at = {(r["task"], r["method"], r["labels"], r["horizon"], r["metric"]): r for r in cells}
    buckets = ["all", *(f"{lo}-{hi}" for lo, hi in BUCKETS)]
    lines = ["# Imitation with a dynamic expert (issue 16, section 4)", "", "```", command, "```"]
    lines += ["", header, "", "Cells: mean [95% bootstrap CI] over seeds; n = seeds."]
    for task in sorted({r["task"] for r in cells}):
        keys = sorted({(r["labels"], r["method"]) for r in cells if r["task"] == task},
                      key=lambda k: (k[0], _rank(k[1])))  # fmt: skip
        lines += ["", f"## {task}", "", "Success (PuzzleReward) by horizon bucket:", ""]
        lines += ["| labels | method | n | " + " | ".join(buckets) + " |"]
        lines += ["|---|---|---|" + "---|" * len(buckets)]
        for labels, m in keys:
            n = at[(task, m, labels, "all", "success")]["n_seeds"]
            got = [_fmt(at.get((task, m, labels, h, "success"))) for h in buckets]
            lines.append(f"| {labels} | {m} | {n} | " + " | ".join(got) + " |")
        lines += ["", "Errors on the learner's own states (all horizons; error after a mistake "
                  "also by bucket):", ""]  # fmt: skip
        lines += ["| labels | method | disagreement | error_clean | error_after_mistake | "
                  + " | ".join(f"after, {h}" for h in buckets[1:]) + " |"]  # fmt: skip
        lines += ["|---|---|---|---|---|" + "---|" * (len(buckets) - 1)]
        for labels, m in keys:
            got = [_fmt(at.get((task, m, labels, "all", k))) for k in METRICS[1:]]
            got += [_fmt(at.get((task, m, labels, h, "error_after_mistake"))) for h in buckets[1:]]
            lines.append(f"| {labels} | {m} | " + " | ".join(got) + " |")
        lines += ["", "DAgger - BC, success (CIs overlap: no = the difference is significant "
                  "at this level):", "", "| labels | horizon | BC | DAgger | difference | "
                  "CIs overlap |", "|---|---|---|---|---|---|"]  # fmt: skip
        for labels in sorted({k[0] for k in keys}):
            for h in buckets:
                b, d = (
                    at.get((task, "bc", labels, h, "success")),
                    at.get((task, "dagger", labels, h, "success")),
                )
                if not b or not d or b["mean"] is None or d["mean"] is None:
                    continue
                overlap = d["ci95"][0] <= b["ci95"][1] and b["ci95"][0] <= d["ci95"][1]
                verdict = "yes" if overlap else "no"
                if min(b["n_seeds"], d["n_seeds"]) < 2:
                    verdict = "n/a (1 seed)"  # a one-seed "interval" is a point
                lines.append(
                    f"| {labels} | {h} | {_fmt(b)} | {_fmt(d)} | "
                    f"{d['mean'] - b['mean']:+.3f} | {verdict} |"
                )
    recov = [r for r in rows if r["method"] == "irl_recovery"]
    if recov:
        lines += [
            "",
            "## IRL recovery checks (agents.irl.recovery_check, true reward = progress)",
            "",
        ]
        lines += ["| task | labels | seed | spearman | return_ratio | gain_ratio | return start / "
                  "recovered / true |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in recov:
            f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            rets = " / ".join(f(r.get(f"return_{k}")) for k in ("start", "recovered", "true"))
            lines.append(
                f"| {r['task']} | {r['labels']} | {r['seed']} | {f(r['spearman'])} | "
                f"{f(r['return_ratio'])} | {f(r.get('gain_ratio'))} | {rets} |"
            )
    return "\n".join(lines) + "\n"


def plot_positions(cells: Sequence[dict[str, Any]], path: Path) -> None:
    """Error rate by position t on the learner's own states, one panel per (task, labels), one
    line per method (mean over seeds)."""
    from textgym import plots

    panels = sorted({(c["task"], c["labels"]) for c in cells})
    if not panels:
        return
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (task, labels) in zip(axes[0], panels, strict=True):
        here = [c for c in cells if (c["task"], c["labels"]) == (task, labels)]
        for i, m in enumerate(sorted({c["method"] for c in here}, key=_rank)):
            ys = np.array([[np.nan if v is None else v for v in c["position_error"]]
                           for c in here if c["method"] == m], dtype=float)  # fmt: skip
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN positions
                ax.plot(
                    np.arange(ys.shape[1]), np.nanmean(ys, 0), "-o", ms=3, color=f"C{i}", label=m
                )
        ax.set_title(f"{task}, {labels} labels")
        ax.set_xlabel("position t (own greedy trajectory)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("error rate vs the expert's label")
    plots.save(fig, path, dpi=110)


def plot_success(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Success (all horizons) against the label budget, one panel per task, 95% CIs as bars."""
    from textgym import plots

    sel = [r for r in rows if r.get("metric") == "success" and r["horizon"] == "all"]
    tasks = sorted({r["task"] for r in sel})
    if not tasks:
        return
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        here = [r for r in sel if r["task"] == task and r["mean"] is not None]
        for i, m in enumerate(sorted({r["method"] for r in here}, key=_rank)):
            pts = sorted((r["labels"], r["mean"], *r["ci95"]) for r in here if r["method"] == m)
            x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            ax.errorbar(x * (1 + 0.03 * i), y, yerr=[y - lo, hi - y], fmt="-o", ms=4,
                        capsize=3, color=f"C{i}", label=m)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(ticks := sorted({r["labels"] for r in here}), [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_title(task)
        ax.set_xlabel("expert labels")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("success (greedy, test prompts)")
    plots.save(fig, path, dpi=110)


def write_report(records: Sequence[dict[str, Any]], out: Path, command: str, header: str) -> None:
    """summary.json (:func:`summarize` rows, then one row per IRL recovery check), table.md and
    the two plots, from the records of the cells JSONL."""
    cells = [r for r in records if r.get("kind") == "cell"]
    keep = ("task", "method", "labels", "seed", "spearman", "return_ratio", "gain_ratio")
    recov = [
        {k: r.get(k) for k in (*keep, "return_start", "return_recovered", "return_true")}
        for r in records
        if r.get("kind") == "irl_recovery"
    ]
    rows = [*summarize(cells), *recov]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "table.md").write_text(markdown(rows, command, header))
    plot_positions(cells, out / "error_by_position.png")
    plot_success(rows, out / "success_vs_labels.png")
