"""The study summaries: bootstrap CI of the mean, mean ± std, summary rows, provenance."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from textgym import provenance
from textgym.stats import bootstrap_ci, mean_std, summary_row


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means() -> None:
    values = [0.62, 0.81, 0.37, 0.55]
    rng = np.random.default_rng(0)
    x = np.asarray(values)
    means = x[rng.integers(0, 4, size=(10_000, 4))].mean(1)
    expected = np.quantile(means, [0.025, 0.975])
    assert bootstrap_ci(values) == pytest.approx(tuple(expected))
    low, high = bootstrap_ci(values)
    assert min(values) <= low < statistics.fmean(values) < high <= max(values)
    assert bootstrap_ci(values) == bootstrap_ci(values)  # seeded: same file twice


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match=r"finite.*nan"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"level.*1\.5"):
        bootstrap_ci([1.0, 2.0], level=1.5)


def test_summary_row_and_mean_std() -> None:
    row = summary_row("PPO", "reward", [1, 2, 3], kl=4.0)
    assert row["mean"] == 2.0
    assert row["values"] == [1.0, 2.0, 3.0]
    assert row["ci95"][0] < 2.0 < row["ci95"][1]
    assert row["kl"] == 4.0
    assert mean_std([1.0, 3.0], 2) == "2.00 ± 1.41"
    assert mean_std([1.0]) == "1.000 ± 0.000"


def test_provenance_names_the_revision_and_versions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert provenance.git_sha(tmp_path) == "unknown"  # not a checkout
    v = provenance.versions("no-such-package-xyz")
    assert v["no-such-package-xyz"] == "not installed"
    assert v["torch"] != "not installed"
    assert "git " in provenance.describe()
