"""Reference k-DPP inclusion probabilities shared by the DPP tests: exact by enumeration, and the
empirical frequencies of a sampler."""

import itertools

import numpy as np


def enumerated_marginals(kernel, k):
    """P(i in S) of the k-DPP with L-ensemble ``kernel``, by summing det(L_S) over every k-subset."""
    n = kernel.shape[0]
    marg, total = np.zeros(n), 0.0
    for subset in itertools.combinations(range(n), k):
        p = np.linalg.det(kernel[np.ix_(subset, subset)])
        total += p
        marg[list(subset)] += p
    return marg / total


def empirical_marginals(sampler, k, n_samples, seed):
    """How often each item is in ``n_samples`` draws of ``sampler.sample(k, rng)`` (each draw checked to
    hold k distinct items)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(sampler.n_items)
    for _ in range(n_samples):
        items = sampler.sample(k, rng)
        assert len(set(items)) == k
        counts[items] += 1
    return counts / n_samples
