"""Intervals and paired tests over per-image scores (NumPy and SciPy; no TensorFlow).

- :func:`bootstrap_ci`: percentile bootstrap of a mean over images (resampling images with
  replacement, seeded), the interval segkit reports for one run's test mDice and mIoU.
- :func:`t_interval`: Student's t interval of a mean over a few runs (seeds or folds).
- :func:`paired_comparison`: two models scored on the same images: the mean difference
  with a bootstrap interval, the Wilcoxon signed-rank p-value (the paired test of the
  challengeR toolkit), and wins, ties and losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

DRAWS = 10_000
_CHUNK = 1_000  # bootstrap draws per batch: memory stays at _CHUNK x images indices


def bootstrap_ci(values: np.ndarray, draws: int = DRAWS, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (NaN entries dropped).

    Hand-written rather than ``scipy.stats.bootstrap``: that one holds every resample in
    memory at once; this draws in chunks and gives the same percentile interval."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for start in range(0, draws, _CHUNK):
        n = min(_CHUNK, draws - start)
        means[start:start + n] = x[rng.integers(0, x.size, (n, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of a few values (NaN for fewer than two)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float("nan"), float("nan"))
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def summarize_group(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean, std (n-1), median, min, max and the t interval of one metric over a group of
    runs (the median: a bar stated on the median of seeds, e.g. RESULTS.md's, reads it)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    lo, hi = t_interval(x, level)
    return {"n": float(x.size), "mean": float(x.mean()) if x.size else float("nan"),
            "std": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
            "median": float(np.median(x)) if x.size else float("nan"),
            "min": float(x.min()) if x.size else float("nan"),
            "max": float(x.max()) if x.size else float("nan"), "ci_low": lo, "ci_high": hi}


@dataclass(frozen=True)
class Paired:
    """Model B minus model A on the same images."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # Wilcoxon signed-rank, two-sided; NaN when every difference is 0
    wins: int  # images where B beats A
    ties: int
    losses: int


def paired_comparison(a: np.ndarray, b: np.ndarray, draws: int = DRAWS, seed: int = 0,
                      tie: float = 1e-9) -> Paired:
    """Compare per-image scores ``b`` against ``a`` (same images, same order)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same images: {a.shape} vs {b.shape}")
    diff = b - a
    lo, hi = bootstrap_ci(diff, draws, seed)
    nonzero = np.abs(diff) > tie
    p = float(stats.wilcoxon(diff[nonzero]).pvalue) if nonzero.any() else float("nan")
    return Paired(n=int(a.size), mean_a=float(a.mean()), mean_b=float(b.mean()),
                  mean_diff=float(diff.mean()), ci_low=lo, ci_high=hi, p_value=p,
                  wins=int((diff > tie).sum()), ties=int((~nonzero).sum()),
                  losses=int((diff < -tie).sum()))
