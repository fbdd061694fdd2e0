"""policy_sampler: fast samplers for diffusion robot policies that sample what the sequential chain samples."""

from policy_sampler.samplers import SampleResult, Sampler, available_samplers, make_sampler
from policy_sampler.schedule import NoiseSchedule
from policy_sampler.policy import DiffusionPolicy
from policy_sampler import baselines  # noqa: F401,E402  (registers the baseline samplers)

__all__ = ["DiffusionPolicy", "NoiseSchedule", "SampleResult", "Sampler", "available_samplers", "make_sampler"]
__version__ = "0.1.0"
