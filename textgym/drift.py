"""Drift of imitation learners: the pieces the drift studies share.

Compounding error ("drift") is measured by decoding a learner in closed loop and comparing each
token with the expert's label for that state, beside the teacher-forced error on the expert's own
prefixes (BC's training distribution). The studies in ``experiments/repro_*drift.py`` run their
learners on equal expert-label budgets with :func:`dagger_on_budget`, and report per-position
error tables (:func:`position_table`) and plots (:func:`plot`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgym import plots
from textgym.lm import LanguageModel
from textgym.stats import mean_std

__all__ = ["dagger_on_budget", "plot", "position_table"]


def dagger_on_budget(
    lm: LanguageModel,
    env: Any,
    budget: int,
    labels_per_episode: float,
    iterations: int,
    steps: int,
    bc: Any,
    seed: int,
    val: Any,
) -> int:
    """DAgger, β_i = 0.5^i, spending exactly ``budget`` expert labels over about ``iterations``
    equal rounds (episodes per round from ``labels_per_episode``); returns the labels spent.

    ``bc`` is the learner's ``BCConfig``; ``val`` its validation demonstrations.
    """
    from textgym.agents import DAgger, DAggerConfig  # the core imports agents only when asked

    dcfg = DAggerConfig(
        beta_schedule="exponential",
        beta0=1.0,
        beta_decay=0.5,
        episodes_per_iteration=max(1, round(budget / iterations / labels_per_episode)),
        steps_per_iteration=steps,
        label_budget=budget,
        bc=bc,
        seed=seed,
    )
    agent = DAgger(lm, env, dcfg, val_data=val, progress_bar=False)
    agent.learn(iterations)
    if agent.n_labels < budget:  # spend the rest: one more iteration, labels capped
        agent.learn(1)
    return agent.n_labels


def position_table(
    scores: Mapping[str, Sequence[Any]], key: str, positions: list[int]
) -> list[str]:
    """A Markdown table, one row per method: ``mean ± std`` over seeds of ``score.key[t]``."""
    lines = [
        "| method | " + " | ".join(f"t={t}" for t in positions) + " |",
        "|---|" + "---|" * len(positions),
    ]
    for method, ss in scores.items():
        cells = [mean_std([float(getattr(s, key)[t]) for s in ss], 2) for t in positions]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def plot(
    results: Mapping[int, Mapping[str, Sequence[Any]]],
    positions: list[int],
    path: Path,
    keys: tuple[str, str] = ("closed", "forced"),
    error: Callable[[np.ndarray], np.ndarray] = lambda ys: ys,
    title: str = "{budget} expert labels: greedy (solid) vs teacher-forced (dotted)",
    xlabel: str = "answer position t (each answer's last token is EOS)",
    ylabel: str = "error rate vs the expert's label",
) -> None:
    """Error by position, one panel per budget: closed loop (solid, ± std band) vs teacher-forced.

    ``keys`` name each Score's closed-loop and teacher-forced per-position arrays; ``error`` maps
    their (seeds, T) stack to error rates (identity for error rates; ``1 - x`` for agreement rates).
    """
    plt = plots.pyplot()

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False, sharey=True)
    x = np.array(positions)
    for ax, (budget, scores) in zip(axes[0], results.items(), strict=True):
        for i, (method, ss) in enumerate(scores.items()):
            for key, style in zip(keys, ("-", ":"), strict=True):
                ys = error(np.stack([getattr(s, key)[positions] for s in ss]))  # (seeds, T)
                m, sd = ys.mean(0), ys.std(0)
                closed = key == keys[0]
                ax.plot(
                    x,
                    m,
                    style,
                    color=f"C{i}",
                    marker="o" if closed else None,
                    label=method if closed else None,
                )
                if closed and len(ss) > 1:
                    ax.fill_between(x, m - sd, m + sd, color=f"C{i}", alpha=0.15)
        ax.set_title(title.format(budget=budget))
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 1)
        ax.legend()
    axes[0][0].set_ylabel(ylabel)
    plots.save(fig, path, dpi=120)
