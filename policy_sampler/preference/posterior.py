"""Posterior samples of the reward weights w given the answers so far, as many parallel chains.

p(w | D) is proportional to prior(w) * prod_i P(s_i | w, psi_i) (:class:`ResponseModel`). Priors:

- ``"sphere"``: w uniform on the unit sphere (APReL's belief: Gaussian step, renormalized);
- ``"ball"``: w uniform in the unit ball (the CoRL 2018 sampler, arXiv 1810.04303, Sec. IV);
- ``"gaussian"``: w ~ N(0, prior_scale^2 I). With the Bradley-Terry, strict or weak models the
  log-posterior is then concave, the setting in which Langevin samplers mix fast
  (arXiv 2401.09016).

Where the chains start (``init``):

- ``"modes"`` (the default): prior draws climb the log-posterior, the end points are grouped into
  distinct optima, and a Student-t mixture over them (:mod:`.modes`) serves twice: chains start
  from draws of it reweighted by p / q (sampling-importance-resampling), and every MH step is,
  with probability ``JUMP_PROBABILITY``, an independence move proposed from it, so chains jump
  between the modes that contradictory answers create and each mode keeps its mass;
- ``"map"``: every chain starts near the single highest optimum (the behaviour before the
  multimodal fix; it loses every other mode, kept for comparison);
- ``"prior"``: chains start at prior draws (they can spend the whole burn-in far from a narrow
  posterior).

Samplers (every chain runs ``burn_in + thin * ceil(n_samples / n_chains)`` steps, vectorized
over chains and answers; the step size adapts per chain during burn-in only, so the kept states
come from a fixed Markov kernel):

- ``"mh"``: random-walk Metropolis-Hastings (any prior), mixed with the mode-jumping
  independence moves under ``init="modes"``. On the sphere the proposal normalize(w + step * xi)
  is symmetric (it depends only on the angle), so the plain ratio holds.
- ``"mala"``: Metropolis-adjusted Langevin (``"gaussian"`` prior);
- ``"ula"``: unadjusted Langevin (``"gaussian"`` prior; biased by O(step));
- ``"picard_ula"``: the same ULA trajectory computed in parallel in time by Picard sweeps over
  blocks of steps (:mod:`.parallel_langevin`, arXiv 2401.09016; option ``picard``: a
  :class:`PicardOptions` or its dict); ``rounds`` counts sweeps instead of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from policy_sampler.preference.modes import ModeMixture, climb, find_modes, project
from policy_sampler.preference.parallel_langevin import PicardOptions, picard_ula_path
from policy_sampler.preference.response import ResponseModel

__all__ = ["PRIORS", "SAMPLERS", "INITS", "PosteriorSamples", "sample_posterior", "log_prior"]

PRIORS: tuple[str, ...] = ("sphere", "ball", "gaussian")
SAMPLERS: tuple[str, ...] = ("mh", "mala", "ula", "picard_ula")
INITS: tuple[str, ...] = ("modes", "map", "prior")
JUMP_PROBABILITY = 0.3
CLIMB_ITERATIONS = 150
_TARGET_ACCEPT = {"mh": 0.3, "mala": 0.57}
_ADAPT_EVERY = 10


@dataclass
class PosteriorSamples:
    """``samples`` [n_samples, d]; the mean acceptance rate over chains after burn-in (1.0 for
    ULA, which accepts every step); ``rounds``: sequential evaluations of the log-density or its
    gradient (climbing plus chain steps), the parallel depth of the update; ``n_modes``: distinct
    optima found (``init="modes"``; 0 otherwise)."""

    samples: torch.Tensor
    acceptance: float
    rounds: int = 0
    n_modes: int = 0


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


def _near_map(log_density: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, prior: str, step: float,
              generator: torch.Generator) -> torch.Tensor:
    """``init="map"``: every chain starts at the highest climbed end point plus ``step``-sized
    noise, projected back (wrong when the posterior has several modes: it keeps one)."""
    x = climb(log_density, w, prior, CLIMB_ITERATIONS)
    best = x[log_density(x).argmax()]
    return project(best + step * torch.randn(w.shape, generator=generator, dtype=torch.float64), prior)


def _resample_starts(log_density: Callable[[torch.Tensor], torch.Tensor], mixture: ModeMixture, n_chains: int,
                     generator: torch.Generator) -> torch.Tensor:
    """``init="modes"``: n_chains starts drawn from 16 n_chains mixture draws with probabilities
    proportional to p / q (sampling-importance-resampling: the starts' law tends to p as the
    number of draws grows; the chains' burn-in removes what is left)."""
    draws = mixture.sample(16 * n_chains, generator)
    log_w = log_density(draws) - mixture.log_prob(draws)
    log_w = torch.nan_to_num(log_w, nan=-math.inf, posinf=-math.inf)
    if not torch.isfinite(log_w).any():
        return mixture.centers[torch.arange(n_chains) % mixture.n_modes]
    index = torch.multinomial(torch.softmax(log_w, 0), n_chains, replacement=True, generator=generator)
    return draws[index]


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
    init: str = "modes",
    picard: PicardOptions | dict | None = None,
) -> PosteriorSamples:
    """Samples of p(w | answers) for answered queries ``psi`` [n, d] with ``choices`` [n].

    Why ``init="modes"`` draws from the posterior p, multimodal or not. The mixture q is built
    before the chains move (from the climbing's own random starts), so given q each MH step is a
    fixed kernel K = (1 - rho) K_rw + rho K_q, rho = ``JUMP_PROBABILITY``, once the burn-in's step
    adaptation has stopped. K_rw (random walk, symmetric proposal g(w'|w) = g(w|w')) and K_q
    (independence proposal q(w'), accepted with a(w, w') = min(1, p(w') q(w) / (p(w) q(w')))) are
    both reversible with respect to p: for w != w',
    p(w) q(w') a(w, w') = min(p(w) q(w'), p(w') q(w)) is symmetric in (w, w'), and likewise
    p(w) g(w'|w) min(1, p(w')/p(w)) = g min(p(w), p(w')). A mixture of p-reversible kernels is
    p-reversible, so p is invariant under K; K_rw alone already reaches every set of positive
    p-mass, so the chain is p-irreducible and aperiodic and its law converges to p from any start
    (Tierney 1994, Thm. 1). The answer does not depend on q or on the starts; they set the speed
    only: a chain in one mode proposes mode j with probability about rho * w_j per step, so over
    300 steps it crosses many times instead of never, and the SIR starts are already spread over
    the modes in proportion to their estimated mass.
    """
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
    picard_options = PicardOptions.parse(picard)
    psi = psi.to(torch.float64)
    d = psi.shape[1]

    def log_density(w: torch.Tensor) -> torch.Tensor:
        return log_prior(w, prior, prior_scale) + response.log_likelihood(w, psi, choices)

    w = _initial(prior, n_chains, d, prior_scale, generator)
    mixture, rounds = None, 0
    if init == "map" and psi.shape[0] > 0:
        w, rounds = _near_map(log_density, w, prior, float(step), generator), CLIMB_ITERATIONS
    elif init == "modes" and psi.shape[0] > 0:
        starts = _initial(prior, max(4 * n_chains, 64), d, prior_scale, generator)
        floor = 1.0 / prior_scale**2 if prior == "gaussian" else 1.0
        mixture = find_modes(log_density, starts, prior, floor, CLIMB_ITERATIONS)
        w, rounds = _resample_starts(log_density, mixture, n_chains, generator), CLIMB_ITERATIONS
    per_chain = -(-n_samples // n_chains)
    step0 = torch.full((n_chains, 1), float(step), dtype=torch.float64)
    steps = burn_in + thin * per_chain
    if sampler == "mh":
        kept, acceptance = _run_mh(log_density, w, prior, burn_in, thin, per_chain, step0, generator, mixture)
    elif sampler == "picard_ula":
        noise = torch.randn(steps, n_chains, d, generator=generator, dtype=torch.float64)
        path = picard_ula_path(lambda x: value_and_grad(log_density, x)[1], w, step0**2, noise, picard_options)
        kept, acceptance, steps = path.states[burn_in + thin - 1 :: thin].transpose(0, 1), 1.0, path.rounds
    else:
        kept, acceptance = _run_langevin(log_density, w, sampler, burn_in, thin, per_chain, step0, generator)
    return PosteriorSamples(samples=kept.reshape(-1, d)[:n_samples], acceptance=acceptance,
                            rounds=rounds + steps, n_modes=0 if mixture is None else mixture.n_modes)


def _run_mh(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    prior: str,
    burn_in: int,
    thin: int,
    per_chain: int,
    step: torch.Tensor,
    generator: torch.Generator,
    mixture: ModeMixture | None,
) -> tuple[torch.Tensor, float]:
    """Random-walk MH, mixed with independence moves from ``mixture`` when given (the
    docstring of :func:`sample_posterior`); returns kept states [C, per_chain, d] and the
    acceptance rate after burn-in."""
    lp = log_density(w)
    chains = w.shape[0]
    kept, adapt = [], _Adaptation(chains, "mh")
    total = burn_in + thin * per_chain
    no_jump = torch.zeros(chains, dtype=torch.bool)
    if mixture is not None:  # every step's independence proposals and their densities, drawn at once
        jumps = torch.rand(total, chains, generator=generator, dtype=torch.float64) < JUMP_PROBABILITY
        independent = mixture.sample(total * chains, generator)
        independent_log_q = mixture.log_prob(independent).reshape(total, chains)
        independent = independent.reshape(total, chains, -1)
    for t in range(total):
        proposal = w + step * torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if prior == "sphere":
            proposal = project(proposal, "sphere")
        jump = no_jump if mixture is None else jumps[t]
        if bool(jump.any()):
            proposal = torch.where(jump[:, None], independent[t], proposal)
        lp_new = log_density(proposal)
        log_ratio = lp_new - lp
        if bool(jump.any()):  # q(w) / q(w') for the chains that jump (q(w) of the current states only)
            log_ratio = log_ratio + torch.where(jump, mixture.log_prob(w) - independent_log_q[t], torch.zeros_like(lp))
        log_u = torch.log(torch.rand(chains, generator=generator, dtype=torch.float64))
        accept = log_u < torch.nan_to_num(log_ratio, nan=-math.inf)
        w = torch.where(accept[:, None], proposal, w)
        lp = torch.where(accept, lp_new, lp)
        step = adapt.update(t, burn_in, accept, ~jump, step)
        if t >= burn_in and (t - burn_in + 1) % thin == 0:
            kept.append(w.clone())
    return torch.stack(kept, dim=1), adapt.acceptance(total - burn_in)


def _run_langevin(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    sampler: str,
    burn_in: int,
    thin: int,
    per_chain: int,
    step: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """Langevin: w' = w + eps grad log p(w) + sqrt(2 eps) xi with eps = step^2, MH-corrected for
    MALA; returns kept states [C, per_chain, d] and the acceptance rate after burn-in."""
    lp, grad = value_and_grad(log_density, w)
    kept, adapt = [], _Adaptation(w.shape[0], sampler)
    everyone = torch.ones(w.shape[0], dtype=torch.bool)
    total = burn_in + thin * per_chain
    for t in range(total):
        eps = step**2  # step is the noise scale sqrt(2 eps) / sqrt(2), kept comparable with MH's
        mean = w + eps * grad
        proposal = mean + torch.sqrt(2 * eps) * torch.randn(w.shape, generator=generator, dtype=torch.float64)
        lp_new, grad_new = value_and_grad(log_density, proposal)
        if sampler == "ula":
            accept = everyone
        else:
            back = proposal + eps * grad_new
            log_q_forward = -((proposal - mean) ** 2).sum(-1) / (4 * eps[:, 0])
            log_q_backward = -((w - back) ** 2).sum(-1) / (4 * eps[:, 0])
            log_u = torch.log(torch.rand(w.shape[0], generator=generator, dtype=torch.float64))
            accept = log_u < torch.nan_to_num(lp_new - lp + log_q_backward - log_q_forward, nan=-math.inf)
        w = torch.where(accept[:, None], proposal, w)
        lp = torch.where(accept, lp_new, lp)
        grad = torch.where(accept[:, None], grad_new, grad)
        step = adapt.update(t, burn_in, accept, everyone, step)
        if t >= burn_in and (t - burn_in + 1) % thin == 0:
            kept.append(w.clone())
    return torch.stack(kept, dim=1), adapt.acceptance(total - burn_in)


def value_and_grad(log_density: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_density(x) [C], its gradient [C, d]) for ``x`` [C, d]."""
    x = x.detach().requires_grad_(True)
    value = log_density(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


class _Adaptation:
    """Per-chain step adaptation during burn-in (Robbins-Monro style, every ``_ADAPT_EVERY``
    steps, towards the sampler's target acceptance of the local moves; none for ULA, whose step
    sets its bias), and the acceptance rate after it."""

    def __init__(self, chains: int, sampler: str):
        self.target = _TARGET_ACCEPT.get(sampler)
        self.accepted = torch.zeros(chains, 1, dtype=torch.float64)
        self.tried = torch.zeros(chains, 1, dtype=torch.float64)
        self.after = 0.0

    def update(self, t: int, burn_in: int, accept: torch.Tensor, local: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        if t >= burn_in:
            self.after += float(accept.to(torch.float64).mean())
            return step
        self.accepted += (accept & local)[:, None].to(torch.float64)
        self.tried += local[:, None].to(torch.float64)
        if (t + 1) % _ADAPT_EVERY == 0:
            if self.target is not None:
                rate = self.accepted / self.tried.clamp(min=1.0)
                step = step * torch.exp(torch.where(self.tried > 0, rate - self.target, torch.zeros_like(rate)))
            self.accepted.zero_(), self.tried.zero_()
        return step

    def acceptance(self, steps_after: int) -> float:
        return self.after / max(steps_after, 1)
