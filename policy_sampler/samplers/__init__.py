"""Samplers behind one interface: ``make_sampler(name, **options).sample(denoiser, schedule, x_T, ...)``."""

from policy_sampler.samplers import autospeculative, picard, sequential, speculative  # noqa: F401  (registers the samplers)
from policy_sampler.samplers.base import (
    Denoiser,
    SampleResult,
    Sampler,
    as_sampler,
    available_samplers,
    make_sampler,
    register_sampler,
    sampler_options,
)

__all__ = [
    "Denoiser",
    "SampleResult",
    "Sampler",
    "as_sampler",
    "available_samplers",
    "make_sampler",
    "register_sampler",
    "sampler_options",
]
