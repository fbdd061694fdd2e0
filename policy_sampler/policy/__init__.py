"""The diffusion policy: configuration, normalization and modeling kept apart (as in LeRobot)."""

from policy_sampler.policy.config import DiffusionPolicyConfig
from policy_sampler.policy.diffusion_policy import DiffusionPolicy, PolicyOutput
from policy_sampler.policy.loading import load_policy, resolve_policy_dir
from policy_sampler.policy.normalizer import FieldNormalizer, Normalizer

__all__ = ["DiffusionPolicy", "DiffusionPolicyConfig", "FieldNormalizer", "Normalizer", "PolicyOutput", "load_policy",
           "resolve_policy_dir"]
