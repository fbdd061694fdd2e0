"""Denoising networks for diffusion policies."""

from policy_sampler.models.conditional_unet1d import (
    ConditionalUnet1D,
    ConditionalUnet1DConfig,
    ConditionalUnet1DDenoiser,
)

__all__ = ["ConditionalUnet1D", "ConditionalUnet1DConfig", "ConditionalUnet1DDenoiser"]
