"""Small LeRobot DiffusionPolicies for the LeRobot integration tests (skipped where LeRobot is not
installed: run them with .venv-lerobot, built by `bash scripts/setup.sh --lerobot`)."""

from __future__ import annotations

import pytest
import torch


def lerobot_policy(image: bool = False, env_state: bool = True, **overrides):
    """A LeRobot DiffusionPolicy (eval mode, CPU, fixed init): state (4) plus environment state (4)
    and/or a 64x64 image through LeRobot's ResNet-18 (no pretrained weights: nothing downloads),
    actions (2), horizon 16, 2 observation steps, 8 executed actions, a small U-Net."""
    pytest.importorskip("lerobot", reason="LeRobot is not installed (bash scripts/setup.sh --lerobot)")
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (4,))}
    if env_state:
        inputs["observation.environment_state"] = PolicyFeature(FeatureType.ENV, (4,))
    if image:
        inputs["observation.image"] = PolicyFeature(FeatureType.VISUAL, (3, 64, 64))
    options = dict(horizon=16, n_obs_steps=2, n_action_steps=8, down_dims=(16, 32, 64), diffusion_step_embed_dim=16,
                   pretrained_backbone_weights=None, use_group_norm=True, device="cpu")
    options.update(overrides)
    config = DiffusionConfig(input_features=inputs,
                             output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))}, **options)
    torch.manual_seed(0)
    return DiffusionPolicy(config).eval()


def observation(batch_size: int, image: bool = False, env_state: bool = True, seed: int = 0) -> dict:
    """One tick's observation as LeRobot's select_action takes it: ``{key: [B, ...]}``."""
    g = torch.Generator().manual_seed(seed)
    obs = {"observation.state": torch.randn(batch_size, 4, generator=g)}
    if env_state:
        obs["observation.environment_state"] = torch.randn(batch_size, 4, generator=g)
    if image:
        obs["observation.image"] = torch.rand(batch_size, 3, 64, 64, generator=g)
    return obs
