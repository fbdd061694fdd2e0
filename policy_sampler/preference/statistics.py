"""Statistics for comparing batch methods over seeds: Student-t intervals of means and of paired
differences, and bootstrap intervals of the queries needed to reach an alignment threshold.

Alignment curves are arrays [seeds, points], point j measured after ``j * batch_size`` answers.
Seeds are the unit of replication: the same seed gives every method the same hidden w_true and the
same candidate pairs, so differences between methods are paired by seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["mean_interval", "queries_to_reach", "bootstrap_queries_to_reach", "bootstrap_mean_interval"]


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of ``values`` (for paired differences,
    pass the per-seed differences). One value gives an interval of zero width."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def bootstrap_mean_interval(values: np.ndarray, rng: np.random.Generator, n_boot: int = 4000,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of the mean of ``values`` (seeds resampled)."""
    x = np.asarray(values, dtype=np.float64)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    return float(np.quantile(means, 0.5 - level / 2)), float(np.quantile(means, 0.5 + level / 2))


def queries_to_reach(curve: np.ndarray, batch_size: int, target: float) -> float:
    """Answers after which ``curve`` first reaches ``target``; ``inf`` if it never does."""
    hit = np.flatnonzero(np.asarray(curve) >= target)
    return float(hit[0] * batch_size) if hit.size else math.inf


def bootstrap_queries_to_reach(curves: np.ndarray, batch_size: int, target: float, rng: np.random.Generator,
                               n_boot: int = 4000, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) for the queries at which the seed-mean curve reaches ``target``: the
    point from all seeds, the percentile interval from seed resamples (``inf``: not reached within
    the run; interval ends are order statistics, so a censored end stays ``inf``)."""
    curves = np.asarray(curves, dtype=np.float64)
    point = queries_to_reach(curves.mean(0), batch_size, target)
    index = rng.integers(0, curves.shape[0], size=(n_boot, curves.shape[0]))
    means = curves[index].mean(1)  # [n_boot, points]
    reached = means >= target
    first = np.where(reached.any(1), reached.argmax(1) * batch_size, math.inf)
    low = float(np.quantile(first, 0.5 - level / 2, method="lower"))
    high = float(np.quantile(first, 0.5 + level / 2, method="higher"))
    return point, low, high
