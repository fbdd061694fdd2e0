"""Windows of a linear chain solved in one shot: x_{k+1} = lam_k * x_k + u_k.

The frozen-x0 draft has this form: with the clean prediction held at an anchor A, a DDPM or DDIM step
is linear in x, lam = d1 and u = d0 * A + sigma * z (see ``GaussianChain.draft_coefficients``).
With Q_k = prod_{i<k} lam_i the solution from slot s is

    x_{s+i} = Q_{s+i} * (x_s / Q_s + sum_{j<i} u_{s+j} / Q_{s+j+1}),

one cumulative sum over the window instead of a Python loop over its steps, with fixed shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policy_sampler.schedule import device_table


class LinearRecurrence:
    """Solver for x_{k+1} = lam_k x_k + u_k over per-row windows; ``lam`` is float64 [K] in (0, 1].

    A zero ``lam_k`` (the final step onto alpha_bar = 1 forgets x) is replaced by 1 so that Q stays
    invertible; callers never roll through that step (it produces the output, never a window input).
    """

    def __init__(self, lam: Tensor, device: torch.device, dtype: torch.dtype) -> None:
        self.lam64 = torch.where(lam > 0, lam, torch.ones_like(lam))
        q = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), self.lam64]), 0)  # [K+1]
        self.lam = device_table(self.lam64, device, dtype)
        self.q = device_table(q, device, dtype)

    def solve(self, x_start: Tensor, start: Tensor, u: Tensor) -> Tensor:
        """States at slots start+1 .. start+n for rows with start state ``x_start`` [R, *E], start slot
        ``start`` [R] and increments ``u`` [R, n, *E] of steps start .. start+n-1."""
        n = u.shape[1]
        last = self.q.numel() - 1
        slots = (start[:, None] + torch.arange(1, n + 1, device=start.device)).clamp(max=last)
        shape = (*slots.shape, *([1] * (u.ndim - 2)))
        q_next = self.q[slots].reshape(shape)
        q_start = self.q[start].reshape(-1, *([1] * (u.ndim - 1)))
        return q_next * (x_start.unsqueeze(1) / q_start + torch.cumsum(u / q_next, dim=1))
