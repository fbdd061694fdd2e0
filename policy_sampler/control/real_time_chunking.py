"""Real-time chunking (RTC, Black et al., arXiv 2506.07339): training-free inpainting of the next chunk.

While the next chunk is computed, the robot keeps executing the current one, so the first actions of
the next chunk are already decided. RTC freezes them and inpaints the rest to agree with the previous
chunk, with a soft mask that fades the previous chunk's influence out (RTC eq. 5, our reading):

    W_i = 1                               for i < frozen
    W_i = c_i (e^{c_i} - 1) / (e - 1)     for frozen <= i < overlap_end,  c_i = (overlap_end - i) / (overlap_end - frozen + 1)
    W_i = 0                               for i >= overlap_end

and the pseudo-inverse guidance of PiGDM (RTC Alg. 1) on the clean-sample estimate. RTC states it for
flow matching; transcribed here to the epsilon parameterization of a DDPM denoiser (our reading): with
x0_hat = (x - sqrt(1 - a) eps) / sqrt(a) and r^2 = 1 - a (PiGDM's r_t^2 for a unit-variance prior),

    g = d/dx [ -1/2 (Y - x0_hat)^T diag(W) (Y - x0_hat) ]
      = (d x0_hat / dx)^T diag(W) (Y - x0_hat)                 (a vector-Jacobian product through the network)
    eps_guided = eps - min(beta, 1 / r^2) * sqrt(1 - a) * g

(a score step of min(beta, 1/r^2) g, clipped at RTC's beta = 5). With ``jacobian="full"`` (what RTC
and PiGDM define) g is computed by autograd through the network: a backward pass per denoiser call,
so the denoiser must be differentiable (``DiffusionPolicy.denoiser(differentiable=True)``). With
``jacobian="identity"`` the network's Jacobian d eps / dx is taken as zero, so d x0_hat / dx =
1 / sqrt(a) and g = diag(W) (Y - x0_hat) / sqrt(a) in closed form: no backward pass, and any
denoiser (a compiled or CUDA-graph runtime) can be guided; it is an approximation, not RTC.
The guided denoiser is an ordinary denoiser, so every sampler runs it: the exact samplers then sample
the guided chain's law exactly.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from policy_sampler.schedule import NoiseSchedule

__all__ = ["JACOBIANS", "RealTimeChunking", "soft_mask"]

JACOBIANS = ("full", "identity")


def soft_mask(horizon: int, frozen: int, overlap_end: int) -> Tensor:
    """RTC eq. 5: weight of each of ``horizon`` positions on the previous chunk (float64 [horizon])."""
    if not 0 <= frozen <= horizon or not 0 <= overlap_end <= horizon:
        raise ValueError(f"need 0 <= frozen, overlap_end <= horizon={horizon}, got frozen={frozen}, "
                         f"overlap_end={overlap_end}")
    i = torch.arange(horizon, dtype=torch.float64)
    c = (overlap_end - i) / (overlap_end - frozen + 1)
    fade = c * (torch.exp(c) - 1) / (math.e - 1)
    w = torch.where(i < overlap_end, fade, torch.zeros_like(i))
    return torch.where(i < frozen, torch.ones_like(i), w)


class RealTimeChunking:
    """Guidance toward ``target`` ([B, horizon, action_dim], normalized actions of the previous chunk
    aligned to the new chunk's positions) with weights ``weights`` ([horizon]) and ``jacobian`` 'full'
    or 'identity'; see the module docstring. Pass it as ``guidance=`` to
    :meth:`DiffusionPolicy.predict_action`. ``target`` must be finite (the caller builds it from a
    chunk it already checked, so no device sync is spent here)."""

    def __init__(self, target: Tensor, weights: Tensor, max_guidance: float = 5.0, jacobian: str = "full") -> None:
        if target.ndim != 3 or weights.shape != (target.shape[1],):
            raise ValueError(f"target must be [B, horizon, action_dim] and weights [horizon], got "
                             f"{tuple(target.shape)} and {tuple(weights.shape)}")
        if not max_guidance > 0:
            raise ValueError(f"max_guidance must be positive, got {max_guidance!r}")
        if jacobian not in JACOBIANS:
            raise ValueError(f"jacobian must be one of {list(JACOBIANS)}, got {jacobian!r}")
        self.target = target
        self.weights = weights.to(device=target.device, dtype=target.dtype)
        self.max_guidance = float(max_guidance)
        self.jacobian = jacobian

    @property
    def differentiable(self) -> bool:
        """Whether :meth:`bind` needs a denoiser that autograd can differentiate through."""
        return self.jacobian == "full"

    def bind(self, denoiser: Callable, schedule: NoiseSchedule, cond: Tensor | None) -> tuple[Callable, Tensor]:
        """The guided denoiser and the conditioning it reads: the batch's ``cond`` with the target
        appended, so samplers that gather rows hand each row its own target. With ``jacobian="full"``
        ``denoiser`` must be differentiable (its output must carry a graph back to ``x``)."""
        if schedule.prediction_type != "epsilon":
            raise ValueError(f"real-time chunking guidance needs an epsilon-prediction policy, got "
                             f"{schedule.prediction_type!r}")
        b, horizon, action_dim = self.target.shape
        cond_dim = 0 if cond is None else cond[0].numel()
        flat_cond = self.target.new_zeros(b, 0) if cond is None else cond.reshape(b, -1)
        packed = torch.cat([flat_cond.to(self.target.dtype), self.target.reshape(b, -1)], dim=1)
        alphas = schedule.alphas_cumprod.to(device=self.target.device)  # once per chunk, not per call
        weights = self.weights.view(1, -1, 1)
        cond_shape = None if cond is None else tuple(cond.shape[1:])
        full = self.jacobian == "full"

        def guided(x: Tensor, t: Tensor, packed_rows: Tensor) -> Tensor:
            row_cond = None if cond_shape is None else packed_rows[:, :cond_dim].reshape(-1, *cond_shape)
            target = packed_rows[:, cond_dim:].reshape(-1, horizon, action_dim).to(x.dtype)
            a = alphas[t].to(x.dtype).view(-1, 1, 1)
            w = weights.to(x.dtype)
            if full:
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    eps = denoiser(xg, t, row_cond)
                    if not eps.requires_grad:
                        raise ValueError("rtc jacobian='full' needs a differentiable denoiser (its output has no "
                                         "gradient): use DiffusionPolicy.denoiser(differentiable=True), or "
                                         "jacobian='identity'")
                    x0 = (xg - (1 - a).sqrt() * eps) / a.sqrt()
                    loss = -0.5 * (w * (target - x0).pow(2)).sum()
                    (grad,) = torch.autograd.grad(loss, xg)
                eps = eps.detach()
            else:
                eps = denoiser(x, t, row_cond)
                x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
                grad = w * (target - x0) / a.sqrt()
            scale = torch.clamp(1 / (1 - a), max=self.max_guidance)
            return eps - scale * (1 - a).sqrt() * grad

        return guided, packed
