"""Spatial softmax: a feature map reduced to the expected image coordinates of K keypoints.

Levine et al. 2016 ("End-to-End Training of Deep Visuomotor Policies", Sec. 4.2), the pooling Diffusion
Policy's vision encoder uses in place of ResNet's global average pooling (Chi et al. 2023, Sec. 3.3,
through robomimic): a 1x1 convolution maps the ``C`` feature channels to ``K`` keypoint logit maps
``a_k(i, j)``, a softmax over the ``h x w`` positions of each map gives ``s_k(i, j) = exp(a_k(i, j)) /
sum_ij exp(a_k(i, j))`` and the keypoint is the expected position

    (x_k, y_k) = (sum_ij s_k(i, j) u_j, sum_ij s_k(i, j) v_i),   u = linspace(-1, 1, w), v = linspace(-1, 1, h)

so x runs from -1 (left column) to +1 (right column) and y from -1 (top row) to +1 (bottom row).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SpatialSoftmax"]


class SpatialSoftmax(nn.Module):
    """``forward(features [N, C, h, w]) -> keypoints [N, num_keypoints, 2]`` (x, y in [-1, 1])."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_keypoints", num_keypoints)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_keypoints = num_keypoints
        self.keypoint_logits = nn.Conv2d(in_channels, num_keypoints, 1)

    def forward(self, features: Tensor) -> Tensor:
        n, _, h, w = features.shape
        logits = self.keypoint_logits(features).flatten(2)  # [N, K, h*w]
        weights = torch.softmax(logits, dim=-1)
        v, u = torch.meshgrid(
            torch.linspace(-1.0, 1.0, h, device=features.device, dtype=weights.dtype),
            torch.linspace(-1.0, 1.0, w, device=features.device, dtype=weights.dtype),
            indexing="ij",
        )
        grid = torch.stack((u.reshape(-1), v.reshape(-1)), dim=-1)  # [h*w, 2]: (x, y) per position
        return weights @ grid
