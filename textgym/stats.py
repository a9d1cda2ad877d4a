"""Summaries over seeds: mean, standard deviation and a 95% bootstrap confidence interval.

One tested helper for every study (``experiments/`` and the ``textgym`` command): a study reports
each metric as its per-seed values, their mean and ``ci95`` (percentile bootstrap of the mean).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "mean_std", "summary_row"]


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
