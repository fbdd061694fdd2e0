"""The modes of a reward posterior, and a proposal that covers all of them.

Contradictory answers make the posterior on the sphere multimodal: with ten answers saying
"A" and "B" equally often about the same pair, the reward weights sit at two antipodal-free
points of equal mass, and a chain that starts in one never reaches the other. This module finds
the modes and builds the independence proposal that :mod:`.posterior` uses to jump between them:

1. :func:`climb`: every start (prior draws) climbs log p(w | D) by projected gradient ascent;
2. :func:`find_modes`: the end points are grouped into distinct optima (an end point belongs to
   an optimum when it lies within ``MERGE_RADIUS`` standard deviations of it under that
   optimum's Laplace approximation), and each optimum gets a Student-t component (``DOF``
   degrees of freedom) centred on it with the Laplace covariance, the inverse of the negative
   Hessian of log p in the chart below (eigenvalues floored, so a flat direction gets a standard
   deviation of at most ``1 / sqrt(floor)``);
3. :class:`ModeMixture`: the mixture of those components, with weights proportional to each
   mode's Laplace mass p(mu_k) sqrt(det Sigma_k), mixed with 10% uniform weight so that a mode
   whose mass the Laplace approximation underestimates is still proposed. It can be sampled and
   its density evaluated exactly, which is all an independence Metropolis-Hastings move needs.

Charts. On the unit sphere S^{d-1} a component centred on mu uses the gnomonic chart
c = B^T w / (w . mu) (B an orthonormal basis of mu's tangent space, so w = normalize(mu + B c),
defined on the hemisphere w . mu > 0). Its area element is dA_chart = dA_sphere / (w . mu)^d
(in d = 2: d tan(theta) = d theta / cos^2 theta), so the density on the sphere is
q(w) = t(c) / (w . mu)^d, and 0 on the other hemisphere. The Hessian in this chart at a critical
point is B^T (grad^2 f) B - (mu . grad f) I. For the ball and the Gaussian prior the chart is
c = w - mu in R^d.

Nothing here has to be exact for the sampler to be right: the proposal only changes how fast the
chains mix, never what they converge to (proof in :func:`policy_sampler.preference.posterior.sample_posterior`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["ModeMixture", "climb", "find_modes", "project"]

LogDensity = Callable[[torch.Tensor], torch.Tensor]

DOF = 4.0
MERGE_RADIUS = 4.0
MAX_MODES = 16
NEGLIGIBLE_LOG_MASS = 15.0  # a mode with e^-15 of the largest mode's Laplace mass is left out
UNIFORM_SHARE = 0.1


def project(w: torch.Tensor, prior: str) -> torch.Tensor:
    """Back onto the prior's support: the sphere, the ball, or unchanged."""
    if prior == "sphere":
        return w / w.norm(dim=-1, keepdim=True)
    if prior == "ball":
        return w / w.norm(dim=-1, keepdim=True).clamp(min=1.0)
    return w


def climb(log_density: LogDensity, w: torch.Tensor, prior: str, iterations: int = 150) -> torch.Tensor:
    """Every row of ``w`` [S, d] climbs ``log_density`` by projected gradient ascent with
    per-row normalized steps (length 0.2, shrinking by 3% a step): the end points [S, d]."""
    x, lr = w.clone(), 0.2
    for _ in range(iterations):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_density(x).sum(), x)
        with torch.no_grad():
            x = project(x + lr * grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12), prior)
        lr *= 0.97
    return x.detach()


@dataclass
class ModeMixture:
    """A mixture of Student-t components, one per mode (module docstring).

    ``centers`` [K, d]; ``bases`` [K, d, p] orthonormal chart bases (p = d - 1 on the sphere,
    else the identity, p = d); ``chol`` [K, p, p] Cholesky factors of the components' scale
    matrices; ``log_weights`` [K] (normalized)."""

    prior: str
    centers: torch.Tensor
    bases: torch.Tensor
    chol: torch.Tensor
    log_weights: torch.Tensor
    dof: float = DOF

    @property
    def n_modes(self) -> int:
        return int(self.centers.shape[0])

    def _to_space(self, k: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        w = self.centers[k] + torch.einsum("ndp,np->nd", self.bases[k], c)
        return project(w, "sphere") if self.prior == "sphere" else w

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws [n, d]."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        p = self.chol.shape[-1]
        g = torch.randn(n, p, generator=generator, dtype=torch.float64)
        chi2 = (torch.randn(n, int(self.dof), generator=generator, dtype=torch.float64) ** 2).sum(-1)
        c = torch.einsum("npq,nq->np", self.chol[k], g) * torch.sqrt(self.dof / chi2)[:, None]
        return self._to_space(k, c)

    def __post_init__(self) -> None:
        # z = L_k^{-1} c_k(w) for every component in one product: rows L_k^{-1} B_k^T, stacked [K p, d]
        k, d, p = self.bases.shape
        whiten = torch.linalg.solve_triangular(self.chol, self.bases.transpose(1, 2), upper=False)  # [K, p, d]
        self._whiten = whiten.reshape(k * p, d)
        self._offset = (whiten @ self.centers[:, :, None])[..., 0]  # [K, p]; used off the sphere
        nu = self.dof
        self._log_norm = (math.lgamma((nu + p) / 2) - math.lgamma(nu / 2) - 0.5 * p * math.log(nu * math.pi)
                          - torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1) + self.log_weights)  # [K]

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """log q(w) for ``w`` [n, d] (w.r.t. the sphere's surface measure on the sphere, else
        Lebesgue); -inf where no component reaches."""
        k, d, p = self.bases.shape
        z = (w @ self._whiten.T).reshape(-1, k, p)
        if self.prior == "sphere":
            cos = w @ self.centers.T  # [n, K]
            safe = cos.clamp(min=1e-300)
            z = z / safe[..., None]
            extra = -d * torch.log(safe)
        else:
            z = z - self._offset[None]
            extra = torch.zeros(z.shape[:2], dtype=w.dtype)
        per = self._log_norm[None] - 0.5 * (self.dof + p) * torch.log1p((z * z).sum(-1) / self.dof) + extra
        if self.prior == "sphere":
            per = torch.where(cos > 0, per, torch.full_like(per, -math.inf))
        return torch.logsumexp(per, dim=1)


def _chart_basis(mu: torch.Tensor, prior: str) -> torch.Tensor:
    d = mu.shape[0]
    if prior != "sphere":
        return torch.eye(d, dtype=mu.dtype)
    # the last d - 1 columns of a QR of [mu, I] span mu's orthogonal complement
    q, _ = torch.linalg.qr(torch.cat([mu[:, None], torch.eye(d, dtype=mu.dtype)], dim=1))
    return q[:, 1:d]


def _laplace(log_density: LogDensity, mu: torch.Tensor, prior: str, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(basis [d, p], Cholesky of the Laplace covariance [p, p]) at ``mu`` in the prior's chart."""
    basis = _chart_basis(mu, prior)
    x = mu.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_density(x[None])[0], x)
    hessian = torch.autograd.functional.hessian(lambda v: log_density(v[None])[0], mu.detach())
    chart_hessian = basis.T @ hessian @ basis
    if prior == "sphere":
        chart_hessian = chart_hessian - float(mu @ grad) * torch.eye(basis.shape[1], dtype=mu.dtype)
    values, vectors = torch.linalg.eigh(-(chart_hessian + chart_hessian.T) / 2)
    values = torch.nan_to_num(values, nan=floor).clamp(min=floor)
    covariance = (vectors / values) @ vectors.T
    return basis, torch.linalg.cholesky((covariance + covariance.T) / 2)


def find_modes(log_density: LogDensity, starts: torch.Tensor, prior: str, floor: float,
               iterations: int = 150) -> ModeMixture:
    """Climb from ``starts`` [S, d], group the end points into distinct optima, and return the
    mixture proposal over them (module docstring); ``floor`` bounds the Laplace precisions below."""
    ends = climb(log_density, starts, prior, iterations)
    values = log_density(ends).detach()
    order = torch.argsort(values, descending=True)
    ends, values = ends[order], values[order]
    if not torch.isfinite(values[0]):
        raise ValueError("the posterior has zero density at every climbed point: are the answers possible under the prior?")
    left = torch.isfinite(values)
    centers, bases, chols, log_masses = [], [], [], []
    while bool(left.any()) and len(centers) < MAX_MODES:
        i = int(torch.nonzero(left)[0])
        mu = ends[i]
        basis, chol = _laplace(log_density, mu, prior, floor)
        log_mass = float(values[i]) + float(torch.log(torch.diagonal(chol)).sum())
        if log_masses and log_mass < max(log_masses) - NEGLIGIBLE_LOG_MASS:
            break  # the rest (sorted by height) are negligible too, or merge into kept ones
        centers.append(mu), bases.append(basis), chols.append(chol), log_masses.append(log_mass)
        if prior == "sphere":
            cos = ends @ mu
            c = (ends @ basis) / cos.clamp(min=1e-300)[:, None]
            near = cos > 0
        else:
            c = (ends - mu) @ basis
            near = torch.ones_like(left)
        z = torch.linalg.solve_triangular(chol, c.T, upper=False).T
        left &= ~(near & (z.norm(dim=-1) < MERGE_RADIUS))
        left[i] = False
    masses = torch.tensor(log_masses, dtype=torch.float64)
    weights = (1 - UNIFORM_SHARE) * torch.softmax(masses, 0) + UNIFORM_SHARE / len(centers)
    return ModeMixture(prior, torch.stack(centers), torch.stack(bases), torch.stack(chols), torch.log(weights))
