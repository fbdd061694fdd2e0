"""The mode mixture behind init="modes": its density is normalized on the sphere S^2 (the gnomonic
chart's Jacobian) and in R^d, its draws follow its density, and find_modes finds both optima that
contradictory answers create and a single one otherwise."""

import math

import torch

from policy_sampler.preference.modes import ModeMixture, _chart_basis, find_modes
from policy_sampler.preference.response import ResponseModel


def _mixture(prior, centers, scales, weights):
    centers = torch.tensor(centers, dtype=torch.float64)
    centers = centers / centers.norm(dim=1, keepdim=True) if prior == "sphere" else centers
    bases = torch.stack([_chart_basis(c, prior) for c in centers])
    p = bases.shape[-1]
    chol = torch.stack([s * torch.eye(p, dtype=torch.float64) for s in scales])
    return ModeMixture(prior, centers, bases, chol, torch.log(torch.tensor(weights, dtype=torch.float64)))


def _sphere_grid(n_theta=800, n_phi=1600):
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) * math.pi / n_theta
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.5) * 2 * math.pi / n_phi
    t, f = torch.meshgrid(theta, phi, indexing="ij")
    w = torch.stack([t.sin() * f.cos(), t.sin() * f.sin(), t.cos()], -1).reshape(-1, 3)
    area = (t.sin() * (math.pi / n_theta) * (2 * math.pi / n_phi)).reshape(-1)
    return w, area


def test_mixture_density_is_normalized_on_the_sphere_and_matches_its_draws():
    mixture = _mixture("sphere", [[0, 0, 1], [1, 1, -0.5]], [0.4, 0.15], [0.35, 0.65])
    w, area = _sphere_grid()
    density = mixture.log_prob(w).exp()
    assert abs(float((density * area).sum()) - 1) < 2e-3
    draws = mixture.sample(100_000, torch.Generator().manual_seed(0))
    assert torch.allclose(draws.norm(dim=1), torch.ones(100_000, dtype=torch.float64))
    cap = w[:, 2] > 0.5  # P(z > 0.5): the density's integral against the draws' frequency (s.e. 0.0015)
    assert abs(float((density * area)[cap].sum()) - float((draws[:, 2] > 0.5).double().mean())) < 0.006
    wrong_jacobian = density * (w @ mixture.centers.T).clamp(min=0).max(1).values  # cos^2 instead of cos^3
    assert abs(float((wrong_jacobian * area).sum()) - 1) > 0.05


def test_mixture_density_is_normalized_in_r2():
    mixture = _mixture("gaussian", [[0.0, 1.0], [2.0, -1.0]], [0.5, 0.3], [0.5, 0.5])
    axis = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    w = torch.cartesian_prod(axis, axis)
    assert abs(float(mixture.log_prob(w).exp().sum()) * (24 / 1200) ** 2 - 1) < 2e-3  # t tails beyond 12: ~1e-3


def test_find_modes_separates_contradictory_optima():
    response = ResponseModel("bradley_terry", 5.0)
    psi = torch.tensor([[2.0, 0.0]] * 10, dtype=torch.float64)
    choices = torch.tensor([1, -1] * 5)
    starts = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    starts = starts / starts.norm(dim=1, keepdim=True)
    mixture = find_modes(lambda w: response.log_likelihood(w, psi, choices), starts, "sphere", 1.0)
    assert mixture.n_modes == 2
    assert sorted(round(float(c[1])) for c in mixture.centers) == [-1, 1]  # (0, -1) and (0, 1)
    assert torch.allclose(mixture.log_weights.exp(), torch.full((2,), 0.5, dtype=torch.float64), atol=1e-3)
    one_way = torch.tensor([1] * 10)
    single = find_modes(lambda w: response.log_likelihood(w, psi, one_way), starts, "sphere", 1.0)
    assert single.n_modes == 1 and float(single.centers[0, 0]) > 0.99
