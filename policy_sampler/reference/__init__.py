"""Exact references for checking samplers: denoisers whose answers are known in closed form."""

from policy_sampler.reference.gaussian_mixture import GaussianMixtureDenoiser, chunk_mixture

__all__ = ["GaussianMixtureDenoiser", "chunk_mixture"]
