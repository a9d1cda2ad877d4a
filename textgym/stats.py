"""Summaries over seeds: mean, standard deviation and a 95% bootstrap confidence interval.

One tested helper for every study (``experiments/`` and the ``textgym`` command): a study reports
each metric as its per-seed values, their mean and ``ci95`` (percentile bootstrap of the mean). A
change from a starting point is reported paired by seed (``paired_change_row``: the values are
after - before of each seed, so the seed-to-seed spread both share cancels), as its own row whose
metric ends in ``_change``. ``write_summary`` writes the rows as a study's ``summary.json``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgym.records import write_json

__all__ = [
    "best_of_n_kl",
    "best_of_n_weights",
    "bootstrap_ci",
    "fit_gao",
    "gao_curve",
    "mean_std",
    "paired_change_row",
    "study_row",
    "summary_row",
    "write_summary",
]


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"m ± s"`` with the sample standard deviation (0 for a single value)."""
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993, ch. 13).

    With one value the interval is that value (no spread to resample). Seeded, so a summary
    written twice is the same file.

    Raises:
        ValueError: no values, a non-finite value, or ``level`` outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.isfinite(x).all():
        raise ValueError(f"bootstrap_ci needs finite values, got {x.tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def summary_row(method: str, metric: str, values: Sequence[float], **extra: Any) -> dict[str, Any]:
    """One row of a study's ``summary.json``: method, metric, values, mean, ci95, and ``extra``."""
    vals = [float(v) for v in values]
    return {
        "method": method,
        "metric": metric,
        "values": vals,
        "mean": statistics.fmean(vals),
        "ci95": list(bootstrap_ci(vals)),
        **extra,
    }


def study_row(
    study: str, method: str, setting: str, metric: str, values: Sequence[float], **extra: Any
) -> dict[str, Any]:
    """A ``summary_row`` that also names its study and setting (the RLHF studies' row keys)."""
    return summary_row(method, metric, values, study=study, setting=setting, **extra)


def paired_change_row(
    study: str,
    method: str,
    setting: str,
    metric: str,
    after: Sequence[float],
    before: Sequence[float],
    **extra: Any,
) -> dict[str, Any]:
    """The change from a start, paired by seed: values ``after[i] - before[i]``, metric
    ``<metric>_change``; its ``ci95`` excludes 0 when the change is clear of seed noise.

    Raises:
        ValueError: ``after`` and ``before`` differ in length (they must be the same seeds).
    """
    if len(after) != len(before):
        raise ValueError(
            f"paired change of {metric!r} needs one start per seed: {len(after)} values after, "
            f"{len(before)} before"
        )
    diffs = [float(a) - float(b) for a, b in zip(after, before, strict=True)]
    return study_row(study, method, setting, f"{metric}_change", diffs, **extra)


def write_summary(path: str | Path, rows: Sequence[dict[str, Any]], **meta: Any) -> Path:
    """Write ``{"rows": rows, **meta}`` as indented JSON (parents created); returns the path."""
    return write_json(path, {**meta, "rows": list(rows)})


def gao_curve(d: Any, alpha: float, beta: float, form: str) -> np.ndarray:
    """Gao, Schulman & Hilton (2023) gold-reward gain at d = √KL: ``"bon"`` d(α - βd) (best-of-n),
    ``"rl"`` d(α - β log d) (RL); 0 at d = 0."""
    d = np.asarray(d, dtype=np.float64)
    if form == "bon":
        return d * (alpha - beta * d)
    if form == "rl":
        safe = np.where(d > 0, d, 1.0)
        return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)
    raise ValueError(f"form must be 'bon' or 'rl', got {form!r}")


def fit_gao(d: Sequence[float], gain: Sequence[float], form: str) -> dict[str, float]:
    """Least-squares α, β of :func:`gao_curve` (linear in α, β), the fit's R², and the peak d*
    where the fitted gain is largest (bon: α/2β; rl: exp(α/β - 1); inf when β ≤ 0: no turn).

    Args:
        d: √KL of each point (≥ 0).
        gain: gold reward minus the gold reward at d = 0, per point.
        form: ``"bon"`` or ``"rl"``.

    Raises:
        ValueError: fewer than 2 points, lengths differ, a negative or non-finite d, or ``form``.
    """
    x, y = np.asarray(d, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(
            f"fit_gao needs ≥ 2 (d, gain) points of equal length, got {x.size}, {y.size}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x < 0).any():
        raise ValueError("fit_gao needs finite gains and finite d ≥ 0")
    if form == "bon":
        features = np.stack([x, -(x**2)], axis=1)
    elif form == "rl":
        features = np.stack([x, -x * np.log(np.where(x > 0, x, 1.0))], axis=1)
    else:
        raise ValueError(f"form must be 'bon' or 'rl', got {form!r}")
    (alpha, beta), *_ = np.linalg.lstsq(features, y, rcond=None)
    resid = y - features @ np.array([alpha, beta])
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else float("nan")
    if beta <= 0:
        peak = float("inf")
    else:
        peak = float(alpha / (2 * beta)) if form == "bon" else float(np.exp(alpha / beta - 1.0))
    return {"alpha": float(alpha), "beta": float(beta), "r2": r2, "peak_d": peak}


def best_of_n_weights(n_samples: int, n: int) -> np.ndarray:
    """Exact best-of-n from N samples: weight i (0-based, samples sorted by the selecting score,
    ascending) is P(sample i is the best of a uniformly drawn n-subset) = C(i, n-1) / C(N, n).

    ``weights @ sorted_values`` is the expectation, over all C(N, n) subsets, of the value of the
    subset's pick: an unbiased best-of-n estimate for every n ≤ N from one set of N samples.

    Raises:
        ValueError: unless 1 ≤ n ≤ N.
    """
    if not 1 <= n <= n_samples:
        raise ValueError(f"best-of-n needs 1 <= n <= N, got n={n}, N={n_samples}")
    log_total = _log_comb(n_samples, n)
    w = np.zeros(n_samples)
    for i in range(n - 1, n_samples):
        w[i] = math.exp(_log_comb(i, n - 1) - log_total)
    return w


def best_of_n_kl(n: int) -> float:
    """The analytic KL(π_bon‖π) = log n - (n-1)/n of best-of-n sampling (Stiennon et al. 2020)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
