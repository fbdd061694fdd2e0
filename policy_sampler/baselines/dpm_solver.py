"""DPM-Solver++ (Lu et al., arXiv 2211.01095) through diffusers' ``DPMSolverMultistepScheduler``, in its
own loop: a fast ODE solver a user would pick instead of DDPM (another law than ``ddpm``'s).

The scheduler is built from the policy's ``DDPMScheduler`` config as a diffusers user would
(``DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")``, second order,
diffusers' defaults otherwise). DiffusionPolicy clips the clean prediction to ``[-r, r]``; DPM-Solver
has no ``clip_sample``, but its thresholding with ``sample_max_value = r`` and a ratio that never
lowers the bound below ``r`` is exactly that clip (the quantile is clamped to ``[1, r]`` and then
divided out: with ``r = 1`` the bound is always 1).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["dpm_solver_scheduler", "dpm_solver_sample"]


def dpm_solver_scheduler(ddpm_scheduler: Any, num_inference_steps: int, solver_order: int = 2):
    """A ``DPMSolverMultistepScheduler`` (DPM-Solver++) with the DDPM scheduler's noise schedule and
    prediction type, and its clip as thresholding, set to ``num_inference_steps``."""
    from diffusers import DPMSolverMultistepScheduler

    config = dict(ddpm_scheduler.config)
    extra: dict[str, Any] = {}
    if config.get("clip_sample", False):
        if float(config.get("clip_sample_range", 1.0)) != 1.0:
            raise ValueError("DPM-Solver++ thresholding reproduces clip_sample only for clip_sample_range = 1")
        extra = {"thresholding": True, "sample_max_value": 1.0}
    scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                        solver_order=solver_order, **extra)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


@torch.no_grad()
def dpm_solver_sample(denoiser: Callable, ddpm_scheduler: Any, x_T: Tensor, cond: Tensor | None,
                      num_inference_steps: int, solver_order: int = 2) -> Tensor:
    """Integrate the probability-flow ODE from ``x_T`` with DPM-Solver++ (one ``denoiser`` call per
    step, the whole batch at once); returns the clean sample."""
    scheduler = dpm_solver_scheduler(ddpm_scheduler, num_inference_steps, solver_order)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = denoiser(x, t.expand(x.shape[0]).to(x.device), cond)
        x = scheduler.step(out, t, x).prev_sample
    return x
