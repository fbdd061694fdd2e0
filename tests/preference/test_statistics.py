"""The experiment's statistics: t intervals against scipy's textbook case, bootstrap intervals of
queries-to-threshold (censoring, coverage of a known crossing)."""

import math

import numpy as np
import pytest

from policy_sampler.preference.statistics import (
    bootstrap_mean_interval, bootstrap_queries_to_reach, mean_interval, queries_to_reach)


def test_mean_interval_is_the_student_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, low, high = mean_interval(x)
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t_{0.975, 3}
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    assert mean_interval(np.array([0.3])) == (0.3, 0.3, 0.3)


def test_t_interval_covers_the_true_mean_at_its_level():
    rng = np.random.default_rng(0)
    covered = sum(low <= 0.0 <= high for _, low, high in (mean_interval(rng.standard_normal(24)) for _ in range(2000)))
    assert 0.93 < covered / 2000 < 0.97


def test_queries_to_reach_and_censoring():
    assert queries_to_reach(np.array([0.1, 0.95, 0.5]), 10, 0.9) == 10
    assert queries_to_reach(np.array([0.1, 0.5]), 10, 0.9) == math.inf
    curves = np.array([[0.0, 0.5, 0.95, 0.99]] * 5)
    assert bootstrap_queries_to_reach(curves, 10, 0.9, np.random.default_rng(0)) == (20, 20, 20)
    never = np.array([[0.0, 0.5, 0.6]] * 5)
    assert bootstrap_queries_to_reach(never, 10, 0.9, np.random.default_rng(0)) == (math.inf, math.inf, math.inf)


def test_bootstrap_interval_of_queries_widens_with_seed_spread():
    """Half the seeds cross 0.8 at 10 answers, half at 30: the seed-mean curve crosses at 30, and
    resamples with more fast seeds cross at 20 or 10 (P(at least 16 of 24 fast) = 0.076 > 2.5%),
    so the bootstrap interval is [10, 30], not one point."""
    fast, slow = [0.0, 0.95, 0.95, 0.95, 0.95], [0.0, 0.5, 0.6, 0.8, 0.95]
    curves = np.array([fast] * 12 + [slow] * 12)
    point, low, high = bootstrap_queries_to_reach(curves, 10, 0.8, np.random.default_rng(0))
    assert (point, low, high) == (30, 10, 30)
    low_m, high_m = bootstrap_mean_interval(curves[:, 2], np.random.default_rng(0))
    assert low_m < curves[:, 2].mean() < high_m
