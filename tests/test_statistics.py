"""Bootstrap and t intervals, group summaries and the paired comparison, against SciPy and
hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from segkit.statistics import bootstrap_ci, paired_comparison, summarize_group, t_interval


def test_bootstrap_interval_matches_scipys_percentile_bootstrap():
    x = np.random.default_rng(1).uniform(0.5, 1.0, 120)
    lo, hi = bootstrap_ci(x, draws=10_000, seed=3)
    ref = stats.bootstrap((x,), np.mean, n_resamples=10_000, method="percentile",
                          random_state=4).confidence_interval
    assert lo < x.mean() < hi
    assert lo == pytest.approx(ref.low, abs=0.004) and hi == pytest.approx(ref.high, abs=0.004)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)  # seeded: reproducible
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([np.nan])))


def test_t_interval_by_hand():
    x = np.array([0.80, 0.82, 0.84])
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # sample std of the three is 0.02
    assert t_interval(x) == pytest.approx((0.82 - half, 0.82 + half))
    assert all(math.isnan(v) for v in t_interval(np.array([0.8])))
    g = summarize_group(x)
    assert (g["n"], g["min"], g["max"]) == (3.0, 0.80, 0.84)
    assert g["mean"] == pytest.approx(0.82) and g["std"] == pytest.approx(0.02)
    median = summarize_group(np.array([0.9, 0.8, 0.7, 0.75, np.nan]))["median"]
    assert median == pytest.approx(0.775)  # NaN (a failed run) left out


def test_paired_comparison_counts_and_matches_scipys_wilcoxon():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.6, 0.9, 50)
    b = a + rng.normal(0.02, 0.03, 50)
    b[:3] = a[:3]  # three ties
    res = paired_comparison(a, b, seed=1)
    diff = b - a
    assert (res.wins, res.ties, res.losses) == ((diff > 0).sum(), 3, (diff < 0).sum())
    assert res.mean_diff == pytest.approx(diff.mean())
    assert res.p_value == pytest.approx(stats.wilcoxon(diff[3:]).pvalue)
    assert res.ci_low < res.mean_diff < res.ci_high
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(a, b[:10])
    same = paired_comparison(a, a.copy())
    assert math.isnan(same.p_value) and same.ties == 50
