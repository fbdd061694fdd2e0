"""Networks of diffusion policies: the denoisers (1D U-Net, DP-T transformer) and the vision encoder."""

from policy_sampler.models.conditional_unet1d import (
    ConditionalUnet1D,
    ConditionalUnet1DConfig,
    ConditionalUnet1DDenoiser,
)
from policy_sampler.models.denoiser import NetworkDenoiser
from policy_sampler.models.resnet import ResNetTrunk, ResNetTrunkConfig
from policy_sampler.models.spatial_softmax import SpatialSoftmax
from policy_sampler.models.transformer_for_diffusion import (
    TransformerForDiffusion,
    TransformerForDiffusionConfig,
    TransformerForDiffusionDenoiser,
)
from policy_sampler.models.vision_encoder import ImageCrop, VisionEncoder, VisionEncoderConfig

__all__ = [
    "ConditionalUnet1D",
    "ConditionalUnet1DConfig",
    "ConditionalUnet1DDenoiser",
    "ImageCrop",
    "NetworkDenoiser",
    "ResNetTrunk",
    "ResNetTrunkConfig",
    "SpatialSoftmax",
    "TransformerForDiffusion",
    "TransformerForDiffusionConfig",
    "TransformerForDiffusionDenoiser",
    "VisionEncoder",
    "VisionEncoderConfig",
]
