"""Parallel-in-time ULA (Picard sweeps over blocks of steps, arXiv 2401.09016): it follows the
sequential ULA path for the same noise, its samples match the 2-D grid posterior and a long MALA run
in 6-D, and too few sweeps (one per block: an Euler step of the whole block) fail the same checks."""

import numpy as np
import pytest
import torch

from policy_sampler.preference.parallel_langevin import PicardOptions, picard_ula_path, ula_path
from policy_sampler.preference.posterior import sample_posterior, value_and_grad
from policy_sampler.preference.response import ResponseModel

from tests.preference.test_posterior import CHOICES, PSI, _error, _sample

RESPONSE = ResponseModel("bradley_terry", beta=2.0)


def _grad(x):
    def log_density(w):
        return -0.5 * (w * w).sum(-1) + RESPONSE.log_likelihood(w, PSI, CHOICES)

    return value_and_grad(log_density, x)[1]


def test_picard_follows_the_sequential_ula_path():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(200, 8, 2, generator=g, dtype=torch.float64)
    sequential = ula_path(_grad, x0, 0.01, noise)
    exact = picard_ula_path(_grad, x0, 0.01, noise, PicardOptions(block=16, iterations=16))
    assert float((exact.states - sequential.states).abs().max()) < 1e-12  # M sweeps: exactly ULA
    converged = picard_ula_path(_grad, x0, 0.01, noise, PicardOptions(block=16, tolerance=1e-9))
    assert float((converged.states - sequential.states).abs().max()) < 1e-7
    assert sequential.rounds == 200 and converged.rounds < 0.7 * 200  # measured 128 sweeps for 200 steps
    one_sweep = picard_ula_path(_grad, x0, 0.01, noise, PicardOptions(block=16, iterations=1))
    assert float((one_sweep.states - sequential.states).abs().max()) > 0.05


def test_picard_ula_matches_the_grid_posterior_and_one_sweep_does_not():
    right = _sample(RESPONSE, "gaussian", "picard_ula", step=0.1, thin=30)
    assert right.acceptance == 1.0 and _error(right.samples, RESPONSE, "gaussian") < 0.1  # measured 0.014-0.037
    wrong = _sample(RESPONSE, "gaussian", "picard_ula", step=0.1, thin=30, picard={"block": 32, "iterations": 1})
    assert _error(wrong.samples, RESPONSE, "gaussian") > 0.2  # measured 0.36-0.41
    assert wrong.rounds < right.rounds


def test_picard_ula_matches_a_long_mala_run_in_6d():
    rng = np.random.default_rng(0)
    psi = torch.tensor(rng.standard_normal((40, 6)))
    w_true = torch.tensor(rng.standard_normal(6))
    response = ResponseModel("bradley_terry", 1.5)
    choices = response.sample(w_true / w_true.norm(), psi, torch.Generator().manual_seed(0))
    common = dict(prior="gaussian", n_chains=50, burn_in=200)
    reference = sample_posterior(response, psi, choices, generator=torch.Generator().manual_seed(0), sampler="mala",
                                 n_samples=20000, thin=5, step=0.2, **common).samples

    def error(samples):
        return max(float((samples.mean(0) - reference.mean(0)).abs().max()),
                   float((torch.cov(samples.T) - torch.cov(reference.T)).abs().max()))

    def run(**options):
        return sample_posterior(response, psi, choices, generator=torch.Generator().manual_seed(1), sampler="picard_ula",
                                n_samples=1000, thin=20, step=0.1, **common, **options)

    right = run()
    assert error(right.samples) < 0.06  # posterior s.d. about 0.3; measured 0.019-0.032 (seeds 0-3)
    wrong = run(picard={"block": 32, "iterations": 2})
    assert error(wrong.samples) > 0.5  # measured 2.3-2.7


def test_bad_picard_options_raise():
    with pytest.raises(ValueError, match="picard block"):
        PicardOptions(block=0)
    with pytest.raises(ValueError, match="unknown picard option"):
        _sample(RESPONSE, "gaussian", "picard_ula", picard={"blocks": 4})
    with pytest.raises(ValueError, match="needs prior='gaussian'"):
        _sample(RESPONSE, "sphere", "picard_ula")
    with pytest.raises(ValueError, match="noise must be"):
        ula_path(_grad, torch.zeros(3, 2, dtype=torch.float64), 0.1, torch.zeros(5, 2, 2, dtype=torch.float64))
