"""Parallel-in-time unadjusted Langevin: the ULA trajectory solved by Picard iterations
(Anari, Chewi & Vuong 2024, *Fast parallel sampling under isoperimetry*, arXiv 2401.09016, Sec. 3).

ULA (the Euler-Maruyama discretization of dX = grad log p(X) dt + sqrt(2) dB) is the recursion

    x_{i+1} = x_i + eps grad f(x_i) + sqrt(2 eps) xi_i,        f = log p,

which needs one gradient per step, one after another. Over a block of M steps starting at x_s it is
the fixed point of the Picard map

    X_m = x_s + eps sum_{j < m} grad f(X_j) + sqrt(2 eps) sum_{j < m} xi_{s+j},   m = 1..M,

whose right side needs the gradients at all M points of the previous iterate at once: one
*round* (a batched call) per sweep. Starting from X_m = x_s, sweep k makes the first k points
exact (the map is triangular), so M sweeps reproduce ULA's path with the same noise exactly; with
grad f L-Lipschitz the error after k sweeps is at most (L M eps)^k / k! of the first one (the usual
Picard bound: sweep k's error at point m sums k-fold nested sums over earlier points), so far fewer
sweeps than M reach round-off when L M eps is O(1).
The paper runs a fixed O(log(d / epsilon)) sweeps per block of length h = M eps ~ 1 / L; here a
block stops when no point moved more than ``tolerance`` in a sweep (or after ``iterations``
sweeps, if given). The law is ULA's (biased by O(eps), like :mod:`.posterior`'s ``"ula"``); the
parallel depth is the number of sweeps instead of the number of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["PicardOptions", "LangevinPath", "ula_path", "picard_ula_path"]

Gradient = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PicardOptions:
    """``block``: Langevin steps solved jointly (the parallel width per chain); ``iterations``:
    a fixed number of sweeps per block (``None``: until converged); ``tolerance``: a block has
    converged when a sweep moves no point by more than this (max norm)."""

    block: int = 16
    iterations: int | None = None
    tolerance: float = 1e-6

    def __post_init__(self) -> None:
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"picard block must be an integer >= 1, got {self.block!r}")
        if self.iterations is not None and (isinstance(self.iterations, bool) or not isinstance(self.iterations, int)
                                            or self.iterations < 1):
            raise ValueError(f"picard iterations must be None or an integer >= 1, got {self.iterations!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or not self.tolerance > 0 \
                or not math.isfinite(self.tolerance):
            raise ValueError(f"picard tolerance must be a finite number > 0, got {self.tolerance!r}")

    @classmethod
    def parse(cls, value: "PicardOptions | dict[str, Any] | None") -> "PicardOptions":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"block", "iterations", "tolerance"})
            if unknown:
                raise ValueError(f"unknown picard option(s) {unknown}; known: ['block', 'iterations', 'tolerance']")
            return cls(**value)
        raise ValueError(f"picard must be None, a dict or PicardOptions, got {type(value).__name__}")


@dataclass
class LangevinPath:
    """``states`` [n, C, d]: x_1..x_n; ``rounds``: sequential batched gradient calls;
    ``sweeps``: Picard sweeps per block (empty for the sequential path)."""

    states: torch.Tensor
    rounds: int
    sweeps: list[int] = field(default_factory=list)


def _check(x0: torch.Tensor, eps: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    if noise.ndim != 3 or noise.shape[1:] != x0.shape:
        raise ValueError(f"noise must be [n, {x0.shape[0]}, {x0.shape[1]}] (steps, chains, d), got {tuple(noise.shape)}")
    eps = torch.as_tensor(eps, dtype=x0.dtype)
    if not bool((eps > 0).all()):
        raise ValueError("eps must be > 0")
    return eps.reshape(-1, 1) if eps.ndim else eps


def ula_path(grad: Gradient, x0: torch.Tensor, eps: torch.Tensor | float, noise: torch.Tensor) -> LangevinPath:
    """Sequential ULA from ``x0`` [C, d] with step ``eps`` (scalar or per chain [C, 1]) and
    standard normal ``noise`` [n, C, d]: n rounds."""
    eps = _check(x0, eps, noise)
    x, states = x0, []
    for xi in noise:
        x = x + eps * grad(x) + torch.sqrt(2 * eps) * xi
        states.append(x)
    return LangevinPath(torch.stack(states), rounds=len(states))


def picard_ula_path(grad: Gradient, x0: torch.Tensor, eps: torch.Tensor | float, noise: torch.Tensor,
                    options: PicardOptions | None = None) -> LangevinPath:
    """The same path as :func:`ula_path` (to ``options.tolerance``), block by block, each block
    by Picard sweeps whose M gradients per chain are one batched call (module docstring)."""
    options = options or PicardOptions()
    eps = _check(x0, eps, noise)
    chains, d = x0.shape
    start, states, sweeps = x0, [], []
    for s in range(0, noise.shape[0], options.block):
        xi = noise[s : s + options.block]
        m = xi.shape[0]
        drift_free = torch.sqrt(2 * eps) * torch.cumsum(xi, dim=0)  # [m, C, d]
        guess = start.expand(m, chains, d)  # X^0_1..X^0_m
        limit = m if options.iterations is None else min(options.iterations, m)
        for k in range(1, limit + 1):
            points = torch.cat([start[None], guess[:-1]])  # X_0..X_{m-1}
            g = grad(points.reshape(m * chains, d)).reshape(m, chains, d)
            new = start + eps * torch.cumsum(g, dim=0) + drift_free
            moved = float((new - guess).abs().max())
            guess = new
            if options.iterations is None and moved <= options.tolerance:
                break
        sweeps.append(k)
        states.append(guess)
        start = guess[-1]
    return LangevinPath(torch.cat(states), rounds=sum(sweeps), sweeps=sweeps)
