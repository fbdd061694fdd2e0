"""DPP batches from large pools without an N x N kernel: the dual-form k-DPP sampler of L = F F^T
against enumeration, low-rank greedy MAP against the dense one, the Nystrom factor against the exact
kernel and the exact k-DPP's marginals, and select_batch over 5000 candidates never forming the
dense kernel; chunked acquisition scores equal the unchunked ones."""


import numpy as np
import pytest
import torch

import policy_sampler.preference.batch as batch
from policy_sampler.preference.acquisition import acquisition_scores
from policy_sampler.preference.batch import select_batch
from policy_sampler.preference.dpp import (
    KDPPSampler, default_bandwidth, greedy_map, greedy_map_low_rank, nystrom_factor, quality_similarity_kernel)
from policy_sampler.preference.response import ResponseModel

from .dpp_helpers import empirical_marginals, enumerated_marginals


def _kdpp_marginals(kernel, k):
    """P(i in S) of the k-DPP: sum_j u_j(i)^2 lambda_j e_{k-1}(lambda without j) / e_k(lambda)."""
    values, vectors = np.linalg.eigh(kernel)
    values = np.clip(values, 0.0, None) / values.max()
    e = np.zeros(k + 1)
    e[0] = 1.0
    for lam in values:
        e[1:] = e[1:] + lam * e[:-1]
    weights = np.zeros(values.size)
    for j, lam in enumerate(values):
        without = np.zeros(k)
        without[0] = 1.0
        for l in range(1, k):  # e_l(without j) = e_l - lambda_j e_{l-1}(without j)
            without[l] = e[l] - lam * without[l - 1]
        weights[j] = lam * without[k - 1] / e[k]
    return (vectors**2) @ weights


def test_dual_kdpp_sampler_matches_enumeration():
    factor = np.random.default_rng(0).standard_normal((8, 5)) * np.linspace(0.3, 2.0, 5)
    exact = enumerated_marginals(factor @ factor.T, 3)
    dual = KDPPSampler.from_factor(factor)
    assert dual.n_items == 8 and dual.rank == 5
    assert np.abs(empirical_marginals(dual, 3, 6000, seed=1) - exact).max() < 0.025  # s.e. <= 0.0065
    wrong = KDPPSampler.from_factor(factor)
    wrong.eigenvalues = np.ones_like(wrong.eigenvalues)  # eigenvectors chosen uniformly: wrong law
    assert np.abs(empirical_marginals(wrong, 3, 6000, seed=1) - exact).max() > 0.05


def test_low_rank_greedy_map_equals_the_dense_greedy():
    rng = np.random.default_rng(1)
    for _ in range(5):
        factor = rng.standard_normal((60, 12))
        assert greedy_map_low_rank(factor, 8) == greedy_map(factor @ factor.T, 8)


def test_nystrom_factor_is_exact_with_every_item_a_landmark():
    rng = np.random.default_rng(2)
    psi, quality = rng.standard_normal((50, 4)), rng.uniform(0.1, 1.0, 50)
    factor = nystrom_factor(psi, quality, 1.5, 50, rng)
    assert np.abs(factor @ factor.T - quality_similarity_kernel(psi, quality, 1.5)).max() < 1e-6


def test_nystrom_kdpp_marginals_are_close_to_the_exact_kernels():
    """400 candidates in d = 7 with the default bandwidth, k = 10: the k-DPP marginals of the
    256-landmark Nystrom kernel are within 10% of the exact kernel's largest marginal (measured
    1.3%; 128 landmarks 9.8%); 12 landmarks are far off (measured 94%)."""
    rng = np.random.default_rng(3)
    psi = rng.standard_normal((400, 7))
    quality = rng.uniform(size=400) ** 0.25
    bandwidth = default_bandwidth(psi, 10)
    exact = _kdpp_marginals(quality_similarity_kernel(psi, quality, bandwidth), 10)
    assert exact.sum() == pytest.approx(10.0, rel=1e-6)
    factor = nystrom_factor(psi, quality, bandwidth, 256, np.random.default_rng(0))
    close = _kdpp_marginals(factor @ factor.T, 10)
    assert np.abs(close - exact).max() < 0.1 * exact.max()
    coarse = nystrom_factor(psi, quality, bandwidth, 12, np.random.default_rng(0))
    assert np.abs(_kdpp_marginals(coarse @ coarse.T, 10) - exact).max() > 0.2 * exact.max()


@pytest.mark.parametrize("mode", ["map", "sample"])
def test_large_pool_batch_never_forms_the_dense_kernel(monkeypatch, mode):
    def refuse(psi, quality, bandwidth):
        raise AssertionError(f"dense {len(psi)} x {len(psi)} kernel built")

    monkeypatch.setattr(batch, "quality_similarity_kernel", refuse)
    rng = np.random.default_rng(4)
    psi, scores = rng.standard_normal((5000, 7)), rng.uniform(size=5000)
    chosen = select_batch("dpp", psi, scores, 10, np.random.default_rng(0), preselect=5000, dpp_mode=mode)
    assert len(set(chosen.tolist())) == 10 and chosen.max() < 5000
    with pytest.raises(ValueError, match="dpp_landmarks"):
        select_batch("dpp", psi, scores, 10, np.random.default_rng(0), dpp_landmarks=0)


def test_chunked_acquisition_scores_equal_the_unchunked_ones():
    g = torch.Generator().manual_seed(0)
    w, psi = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(100, 4, generator=g, dtype=torch.float64)
    response = ResponseModel("weak", 2.0)
    for name in ("information_gain", "volume_removal", "max_regret"):
        assert torch.allclose(acquisition_scores(name, response, w, psi, chunk=7), acquisition_scores(name, response, w, psi),
                              rtol=0, atol=1e-13)
