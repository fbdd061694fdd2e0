"""Posterior samples of the reward weights w given the answers so far, as many parallel chains.

p(w | D) is proportional to prior(w) * prod_i P(s_i | w, psi_i) (:class:`ResponseModel`). Priors:

- ``"sphere"``: w uniform on the unit sphere (APReL's belief: Gaussian step, renormalized);
- ``"ball"``: w uniform in the unit ball (the CoRL 2018 sampler, arXiv 1810.04303, Sec. IV);
- ``"gaussian"``: w ~ N(0, prior_scale^2 I). With the Bradley-Terry, strict or weak models the
  log-posterior is then concave, the setting in which Langevin samplers mix fast
  (arXiv 2401.09016).

Samplers (every chain runs ``burn_in + thin * ceil(n_samples / n_chains)`` steps, vectorized
over chains and answers; the step size adapts per chain during burn-in only, so the kept states
come from a fixed Markov kernel). With many answers the posterior is narrow and chains started from
the prior can spend the whole burn-in far from it; ``init="map"`` (the default) lets every prior draw
climb the log-posterior by projected gradient ascent and starts every chain near the highest end
point (the MAP); ``init="prior"`` starts them at the prior draws:

- ``"mh"``: random-walk Metropolis-Hastings (any prior). On the sphere the proposal
  normalize(w + step * xi) is symmetric (it depends only on the angle), so the plain ratio holds.
- ``"mala"``: Metropolis-adjusted Langevin (``"gaussian"`` prior);
- ``"ula"``: unadjusted Langevin (``"gaussian"`` prior; biased by O(step)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from policy_sampler.preference.response import ResponseModel

__all__ = ["PRIORS", "SAMPLERS", "PosteriorSamples", "sample_posterior", "log_prior"]

PRIORS: tuple[str, ...] = ("sphere", "ball", "gaussian")
SAMPLERS: tuple[str, ...] = ("mh", "mala", "ula")
INITS: tuple[str, ...] = ("map", "prior")
_TARGET_ACCEPT = {"mh": 0.3, "mala": 0.57}
_ADAPT_EVERY = 10


@dataclass
class PosteriorSamples:
    """``samples`` [n_samples, d] and the mean acceptance rate over chains after burn-in
    (1.0 for ULA, which accepts every step)."""

    samples: torch.Tensor
    acceptance: float


def log_prior(w: torch.Tensor, prior: str, prior_scale: float = 1.0) -> torch.Tensor:
    """log prior(w) up to a constant for ``w`` [C, d]: -inf outside the ball for ``"ball"``;
    0 for ``"sphere"`` (the chains stay on it)."""
    if prior == "ball":
        inside = (w * w).sum(-1) <= 1.0
        return torch.where(inside, torch.zeros_like(w[:, 0]), torch.full_like(w[:, 0], -math.inf))
    if prior == "gaussian":
        return -0.5 * (w * w).sum(-1) / prior_scale**2
    return torch.zeros_like(w[:, 0])


def _initial(prior: str, n_chains: int, d: int, prior_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Chain starts drawn from the prior."""
    z = torch.randn(n_chains, d, generator=generator, dtype=torch.float64)
    if prior == "gaussian":
        return prior_scale * z
    z = z / z.norm(dim=-1, keepdim=True)
    if prior == "ball":
        r = torch.rand(n_chains, 1, generator=generator, dtype=torch.float64) ** (1.0 / d)
        return z * r
    return z


def _project(w: torch.Tensor, prior: str) -> torch.Tensor:
    if prior == "sphere":
        return w / w.norm(dim=-1, keepdim=True)
    if prior == "ball":
        return w / w.norm(dim=-1, keepdim=True).clamp(min=1.0)
    return w


def _near_map(log_density: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, prior: str, step: float,
              generator: torch.Generator, iterations: int = 150) -> torch.Tensor:
    """Chain starts around the MAP: every prior draw climbs the log-posterior by projected gradient
    ascent (per-chain normalized steps, shrinking), the highest end point is taken as the MAP (a
    chain stuck on a lower local maximum of the sphere would never leave it), and each chain starts
    there plus ``step``-sized noise, projected back."""
    x, lr = w.clone(), 0.2
    for _ in range(iterations):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_density(x).sum(), x)
        with torch.no_grad():
            x = _project(x + lr * grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12), prior)
        lr *= 0.97
    x = x.detach()
    best = x[log_density(x).argmax()]
    return _project(best + step * torch.randn(w.shape, generator=generator, dtype=torch.float64), prior)


def _adapt(step: torch.Tensor, accepted: torch.Tensor, target: float) -> torch.Tensor:
    """Robbins-Monro-style per-chain step update from the last window's acceptance rate."""
    return step * torch.exp(accepted / _ADAPT_EVERY - target)


def sample_posterior(
    response: ResponseModel,
    psi: torch.Tensor,
    choices: torch.Tensor,
    *,
    generator: torch.Generator,
    prior: str = "sphere",
    sampler: str = "mh",
    n_samples: int = 200,
    n_chains: int = 20,
    burn_in: int = 200,
    thin: int = 10,
    step: float = 0.05,
    prior_scale: float = 1.0,
    init: str = "map",
) -> PosteriorSamples:
    """Samples of p(w | answers) for answered queries ``psi`` [n, d] with ``choices`` [n]."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler != "mh" and prior != "gaussian":
        raise ValueError(f"sampler {sampler!r} needs prior='gaussian' (a smooth log-density on R^d), got {prior!r}")
    for name, value, minimum in (("n_samples", n_samples, 1), ("n_chains", n_chains, 1), ("burn_in", burn_in, 0), ("thin", thin, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    for name, value in (("step", step), ("prior_scale", prior_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    psi = psi.to(torch.float64)
    d = psi.shape[1]

    def log_density(w: torch.Tensor) -> torch.Tensor:
        return log_prior(w, prior, prior_scale) + response.log_likelihood(w, psi, choices)

    w = _initial(prior, n_chains, d, prior_scale, generator)
    if init == "map" and psi.shape[0] > 0:
        w = _near_map(log_density, w, prior, float(step), generator)
    per_chain = -(-n_samples // n_chains)
    run = _run_mh if sampler == "mh" else _run_langevin
    kept, acceptance = run(
        log_density, w, prior, sampler, burn_in, thin, per_chain, torch.full((n_chains, 1), float(step), dtype=torch.float64), generator
    )
    return PosteriorSamples(samples=kept.reshape(-1, d)[:n_samples], acceptance=acceptance)


def _run_mh(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    prior: str,
    sampler: str,
    burn_in: int,
    thin: int,
    per_chain: int,
    step: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """Random-walk MH; returns kept states [per_chain, C, d] (chain-major after reshape) and acceptance."""
    lp = log_density(w)
    kept, window, accepted_after = [], torch.zeros(w.shape[0], 1, dtype=torch.float64), 0.0
    total = burn_in + thin * per_chain
    for t in range(total):
        proposal = w + step * torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if prior == "sphere":
            proposal = proposal / proposal.norm(dim=-1, keepdim=True)
        lp_new = log_density(proposal)
        log_u = torch.log(torch.rand(w.shape[0], generator=generator, dtype=torch.float64))
        accept = log_u < lp_new - lp
        w = torch.where(accept[:, None], proposal, w)
        lp = torch.where(accept, lp_new, lp)
        w, step, window, accepted_after = _bookkeep(t, burn_in, thin, accept, w, step, window, accepted_after, kept, sampler)
    return _finish(kept, accepted_after, total - burn_in)


def _run_langevin(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    prior: str,
    sampler: str,
    burn_in: int,
    thin: int,
    per_chain: int,
    step: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """Langevin: w' = w + eps grad log p(w) + sqrt(2 eps) xi, MH-corrected for MALA."""

    def value_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        value = log_density(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad

    lp, grad = value_and_grad(w)
    kept, window, accepted_after = [], torch.zeros(w.shape[0], 1, dtype=torch.float64), 0.0
    total = burn_in + thin * per_chain
    for t in range(total):
        eps = step**2  # step is the noise scale sqrt(2 eps) / sqrt(2), kept comparable with MH's
        mean = w + eps * grad
        proposal = mean + torch.sqrt(2 * eps) * torch.randn(w.shape, generator=generator, dtype=torch.float64)
        lp_new, grad_new = value_and_grad(proposal)
        if sampler == "ula":
            accept = torch.ones(w.shape[0], dtype=torch.bool)
        else:
            back = proposal + eps * grad_new
            log_q_forward = -((proposal - mean) ** 2).sum(-1) / (4 * eps[:, 0])
            log_q_backward = -((w - back) ** 2).sum(-1) / (4 * eps[:, 0])
            log_u = torch.log(torch.rand(w.shape[0], generator=generator, dtype=torch.float64))
            accept = log_u < lp_new - lp + log_q_backward - log_q_forward
        w = torch.where(accept[:, None], proposal, w)
        lp = torch.where(accept, lp_new, lp)
        grad = torch.where(accept[:, None], grad_new, grad)
        w, step, window, accepted_after = _bookkeep(t, burn_in, thin, accept, w, step, window, accepted_after, kept, sampler)
    return _finish(kept, accepted_after, total - burn_in)


def _bookkeep(t, burn_in, thin, accept, w, step, window, accepted_after, kept, sampler):
    """Adapt the step during burn-in (not for ULA, whose step sets its bias); keep every
    ``thin``-th state after it."""
    if t < burn_in:
        window = window + accept[:, None].to(torch.float64)
        if (t + 1) % _ADAPT_EVERY == 0:
            if sampler in _TARGET_ACCEPT:
                step = _adapt(step, window, _TARGET_ACCEPT[sampler])
            window = torch.zeros_like(window)
    else:
        accepted_after += float(accept.to(torch.float64).mean())
        if (t - burn_in + 1) % thin == 0:
            kept.append(w.clone())
    return w, step, window, accepted_after


def _finish(kept: list[torch.Tensor], accepted_after: float, steps_after: int) -> tuple[torch.Tensor, float]:
    stacked = torch.stack(kept, dim=1)  # [C, per_chain, d]: each chain's samples contiguous
    return stacked, accepted_after / max(steps_after, 1)
