"""Schedules and replayed noise shared by the Picard-family tests."""

import torch
from diffusers import DDPMScheduler

from policy_sampler import NoiseSchedule


def ddpm_schedule(steps=100, **config):
    config = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "clip_sample": True,
              "prediction_type": "epsilon", **config}
    return NoiseSchedule.from_diffusers(DDPMScheduler(**config), num_inference_steps=steps)


def draws(schedule, batch, dim, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(batch, dim, generator=g, dtype=dtype)
    noise = torch.randn(schedule.num_steps, batch, dim, generator=g, dtype=dtype)
    return x_T, noise
