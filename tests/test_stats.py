"""The study summaries: bootstrap CI of the mean, mean ± std, summary rows, provenance."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from textgym import provenance
from textgym.stats import (
    best_of_n_kl,
    best_of_n_weights,
    bootstrap_ci,
    fit_gao,
    gao_curve,
    mean_std,
    paired_change_row,
    study_row,
    summary_row,
    write_summary,
)


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


def test_paired_change_is_per_seed_and_named_change(tmp_path) -> None:  # type: ignore[no-untyped-def]
    before, after = [1.0, 5.0, 9.0], [1.5, 5.4, 9.6]  # big spread across seeds, small steady gain
    row = paired_change_row("s", "PPO", "beta=0", "bleu", after, before)
    assert row["metric"] == "bleu_change"
    assert row["values"] == pytest.approx([0.5, 0.4, 0.6])
    assert row["study"] == "s"
    assert row["setting"] == "beta=0"
    assert row["ci95"][0] > 0  # paired: the gain is clear of the seeds' spread
    unpaired = bootstrap_ci(after)[0] - bootstrap_ci(before)[1]
    assert unpaired < 0  # while comparing the two intervals could not tell
    with pytest.raises(ValueError, match="3 values after, 2 before"):
        paired_change_row("s", "PPO", "", "bleu", after, before[:2])
    rows = [row, study_row("s", "base", "", "bleu", before)]
    path = write_summary(tmp_path / "a" / "summary.json", rows, seeds=3)
    import json

    data = json.loads(path.read_text())
    assert data["seeds"] == 3
    assert data["rows"] == rows


def test_provenance_names_the_revision_and_versions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert provenance.git_sha(tmp_path) == "unknown"  # not a checkout
    v = provenance.versions("no-such-package-xyz")
    assert v["no-such-package-xyz"] == "not installed"
    assert v["torch"] != "not installed"
    assert "git " in provenance.describe()


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_gao_recovers_the_coefficients_and_the_peak(form: str) -> None:
    d = np.linspace(0.0, 6.0, 25)
    gain = gao_curve(d, 0.8, 0.2, form) + np.random.default_rng(0).normal(0, 1e-4, d.size)
    fit = fit_gao(d, gain, form)
    assert fit["alpha"] == pytest.approx(0.8, abs=2e-3)
    assert fit["beta"] == pytest.approx(0.2, abs=2e-3)
    assert fit["r2"] > 0.999
    peak = d[np.argmax(gao_curve(d, 0.8, 0.2, form))]  # by grid: 2.0 (bon), e^3 out of range (rl)
    expected = 0.8 / 0.4 if form == "bon" else float(np.exp(0.8 / 0.2 - 1))
    assert fit["peak_d"] == pytest.approx(expected, rel=0.02)
    if form == "bon":
        assert peak == pytest.approx(2.0, abs=0.25)
    rising = fit_gao(d, 0.5 * d, form)  # no turn: β ≈ 0 (≤ 0 gives an infinite peak)
    assert rising["beta"] == pytest.approx(0.0, abs=1e-9) or rising["peak_d"] == float("inf")
    with pytest.raises(ValueError, match="'bon' or 'rl'"):
        fit_gao(d, gain, "linear")
    with pytest.raises(ValueError, match="d ≥ 0"):
        fit_gao([-1.0, 1.0], [0.0, 0.0], form)


@pytest.mark.parametrize(("n_samples", "n"), [(6, 1), (6, 3), (7, 7), (9, 4)])
def test_best_of_n_weights_equal_the_enumeration_of_subsets(n_samples: int, n: int) -> None:
    values = np.random.default_rng(n).normal(size=n_samples)
    scores = np.random.default_rng(n + 1).normal(size=n_samples)
    picks = [
        values[max(subset, key=lambda i: scores[i])]
        for subset in itertools.combinations(range(n_samples), n)
    ]
    order = np.argsort(scores)
    w = best_of_n_weights(n_samples, n)
    assert w.sum() == pytest.approx(1.0)
    assert w @ values[order] == pytest.approx(np.mean(picks))
    with pytest.raises(ValueError, match="n=8, N=7"):
        best_of_n_weights(7, 8)


def test_best_of_n_kl_is_log_n_minus_n_minus_1_over_n() -> None:
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(256) == pytest.approx(math.log(256) - 255 / 256)
    assert best_of_n_kl(4096) == pytest.approx(7.318, abs=1e-3)
