"""DPP kernel, greedy MAP and the exact k-DPP sampler, against enumeration; batch-selection timing."""

import itertools
import time

import numpy as np
import pytest

from policy_sampler.preference.batch import METHODS, select_batch
from policy_sampler.preference.dpp import KDPPSampler, default_bandwidth, greedy_map, quality_similarity_kernel

from .dpp_helpers import empirical_marginals, enumerated_marginals


def _kernel(n, seed, rank=None):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, rank or n)) * np.linspace(0.3, 2.0, rank or n)
    return b @ b.T


def test_kdpp_inclusion_probabilities_match_enumeration():
    kernel = _kernel(6, seed=0)
    exact = enumerated_marginals(kernel, 3)
    sampler = KDPPSampler(kernel)  # one eigendecomposition, 6000 samples
    empirical = empirical_marginals(sampler, 3, 6000, seed=1)
    assert np.abs(empirical - exact).max() < 0.025  # the standard error is <= 0.0065


def test_kdpp_with_wrong_eigenvector_probabilities_fails_the_same_check():
    kernel = _kernel(6, seed=0)
    exact = enumerated_marginals(kernel, 3)
    wrong = KDPPSampler(kernel)
    wrong.eigenvalues = np.ones_like(wrong.eigenvalues)  # picks the 3 eigenvectors uniformly
    assert np.abs(empirical_marginals(wrong, 3, 6000, seed=1) - exact).max() > 0.05


def test_kdpp_low_rank_and_bad_k():
    sampler = KDPPSampler(_kernel(5, seed=2, rank=2))
    assert len(sampler.sample(2, np.random.default_rng(0))) == 2
    with pytest.raises(ValueError, match="rank"):
        sampler.sample(3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k must be"):
        sampler.sample(6, np.random.default_rng(0))


def _brute_force_greedy(kernel, k):
    chosen = []
    for _ in range(k):
        best = max((i for i in range(len(kernel)) if i not in chosen),
                   key=lambda i: np.linalg.det(kernel[np.ix_(chosen + [i], chosen + [i])]))
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_greedy_map_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    psi = rng.standard_normal((12, 3))
    kernel = quality_similarity_kernel(psi, rng.uniform(0.1, 1.0, 12), bandwidth=1.0)
    assert greedy_map(kernel, 5) == _brute_force_greedy(kernel, 5)
    # and it is close to the exhaustive MAP over all 5-subsets (greedy's guarantee is weaker)
    best = max(np.linalg.det(kernel[np.ix_(s, s)]) for s in itertools.combinations(range(12), 5))
    got = np.linalg.det(kernel[np.ix_(greedy_map(kernel, 5), greedy_map(kernel, 5))])
    assert got >= 0.5 * best


def test_greedy_map_stops_at_the_rank():
    kernel = _kernel(8, seed=3, rank=3)
    assert len(greedy_map(kernel, 6)) == 3


def test_quality_and_diversity_trade_off():
    # Two near-duplicate high-quality queries and a distant lower-quality one.
    psi = np.array([[0.0, 0.0], [0.01, 0.0], [3.0, 3.0], [-3.0, 3.0]])
    scores = np.array([1.0, 0.99, 0.5, 0.1])
    rng = np.random.default_rng(0)
    diverse = select_batch("dpp", psi, scores, 2, rng, dpp_gamma=0.25, dpp_bandwidth=1.0)
    assert sorted(diverse.tolist()) == [0, 2]  # not both duplicates
    greedy_like = select_batch("dpp", psi, scores, 2, rng, dpp_gamma=50.0, dpp_bandwidth=1.0)
    assert sorted(greedy_like.tolist()) == [0, 1]  # quality dominates: the top 2 scores
    assert sorted(select_batch("greedy", psi, scores, 2, rng).tolist()) == [0, 1]
    assert sorted(select_batch("successive_elimination", psi, scores, 3, rng).tolist()) == [0, 2, 3]


def test_default_bandwidth_formula():
    psi = np.array([[0.0, 0.0], [2.0, 8.0]])
    assert default_bandwidth(psi, 4) == pytest.approx((2.0 * 8.0 / 8) ** 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_distinct_candidates(method):
    rng = np.random.default_rng(0)
    psi, scores = rng.standard_normal((300, 4)), rng.uniform(size=300)
    chosen = select_batch(method, psi, scores, 10, np.random.default_rng(1))
    assert len(chosen) == 10 and len(set(chosen.tolist())) == 10 and chosen.max() < 300
    few = select_batch(method, psi[:4], scores[:4], 10, np.random.default_rng(1))
    assert sorted(few.tolist()) == [0, 1, 2, 3]


def test_dpp_sample_mode_is_seeded():
    rng = np.random.default_rng(0)
    psi, scores = rng.standard_normal((200, 4)), rng.uniform(size=200)
    a = select_batch("dpp", psi, scores, 10, np.random.default_rng(5), dpp_mode="sample")
    b = select_batch("dpp", psi, scores, 10, np.random.default_rng(5), dpp_mode="sample")
    assert np.array_equal(a, b) and len(set(a.tolist())) == 10


def test_dpp_batch_of_10_from_1000_candidates_takes_milliseconds():
    rng = np.random.default_rng(0)
    psi, scores = rng.standard_normal((1000, 7)), rng.uniform(size=1000)
    timings = {}
    for label, preselect in (("preselect 200", None), ("all 1000", 1000)):
        select_batch("dpp", psi, scores, 10, rng, preselect=preselect)
        start = time.perf_counter()
        for _ in range(5):
            select_batch("dpp", psi, scores, 10, rng, preselect=preselect)
        timings[label] = (time.perf_counter() - start) / 5
    print({k: f"{1000 * v:.1f} ms" for k, v in timings.items()})
    assert max(timings.values()) < 0.2


def _degenerate_pool(seed):
    """Pools the DPP kernel sees as low-rank: near-duplicates (jitter 1e-5), nearly 1-D, exact
    duplicates, a single repeated point, or wildly different feature scales."""
    rng = np.random.default_rng(seed)
    size, d = int(rng.integers(5, 120)), int(rng.integers(1, 8))
    kind = seed % 5
    if kind == 0:
        base = rng.standard_normal((int(rng.integers(1, 12)), d))
        psi = base[rng.integers(0, len(base), size)] + 1e-5 * rng.standard_normal((size, d))
    elif kind == 1:
        psi = np.outer(rng.standard_normal(size), rng.standard_normal(d)) + 1e-5 * rng.standard_normal((size, d))
    elif kind == 2:
        psi = np.repeat(rng.standard_normal((1, d)), size, axis=0)
    elif kind == 3:
        psi = rng.standard_normal((3, d))[rng.integers(0, 3, size)]
    else:
        psi = rng.standard_normal((size, d)) * np.logspace(0, -6, d)
    scores = rng.uniform(size=size) * (rng.uniform() > 0.1)  # sometimes all zero
    return psi, scores


@pytest.mark.parametrize("mode", ["sample", "map"])
def test_dpp_never_fails_on_a_degenerate_pool(mode):
    """Fuzz: 450 degenerate pools (before the shared rank rule, sample mode raised "the kernel has
    rank < k" on many of them). Every call returns min(b, P) distinct candidates."""
    import warnings

    from policy_sampler.preference.batch import DegeneratePoolWarning

    warned = 0
    for seed in range(150):
        psi, scores = _degenerate_pool(seed)
        for b in (3, 10, 25):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                chosen = select_batch("dpp", psi, scores, b, np.random.default_rng(seed), dpp_mode=mode)
            assert len(chosen) == min(b, len(scores)) and len(set(chosen.tolist())) == len(chosen)
            warned += any(issubclass(w.category, DegeneratePoolWarning) for w in caught)
    assert warned > 50  # the degenerate cases are said so


def test_degenerate_pool_is_filled_by_the_documented_rule():
    """Three distinct queries, each repeated: the DPP takes one of each (rank 3), the other two
    are the best-scoring remaining candidates, and a DegeneratePoolWarning says so."""
    from policy_sampler.preference.batch import DegeneratePoolWarning

    base = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    psi = base[[0, 0, 1, 1, 2, 2, 0]]
    scores = np.array([0.9, 0.8, 0.5, 0.95, 0.3, 0.2, 0.85])
    for mode in ("sample", "map"):
        with pytest.warns(DegeneratePoolWarning, match="only 3 of 5"):
            chosen = select_batch("dpp", psi, scores, 5, np.random.default_rng(0), dpp_mode=mode, dpp_bandwidth=1e-3)
        assert sorted({tuple(psi[c]) for c in chosen}) == sorted(map(tuple, base))  # one of each
        order = np.argsort(-scores, kind="stable")
        dpp_part, filled = set(chosen[:3].tolist()), chosen[3:].tolist()
        assert filled == [c for c in order if c not in dpp_part][:2]


def test_kdpp_rank_is_the_one_rule():
    """The sampler's rank (what select_batch asks for) is exactly the count of eigenvalues it keeps."""
    rng = np.random.default_rng(0)
    psi = np.repeat(rng.standard_normal((4, 3)), 5, axis=0) + 1e-5 * rng.standard_normal((20, 3))
    kernel = quality_similarity_kernel(psi, np.ones(20), bandwidth=1.0)
    sampler = KDPPSampler(kernel)
    assert sampler.rank == int((sampler.eigenvalues > 0).sum())
    assert len(sampler.sample(sampler.rank, rng)) == sampler.rank
    with pytest.raises(ValueError, match="numerical rank"):
        sampler.sample(sampler.rank + 1, rng)
