"""A ResNet trunk with GroupNorm: the image backbone of Diffusion Policy's vision encoder.

He et al. 2016 ("Deep Residual Learning for Image Recognition", Table 1, the 18-layer column) without
the final average pooling and fully connected layer, and with every BatchNorm replaced by GroupNorm
(Wu & He 2018) as Chi et al. 2023 do (Sec. 3.3: BatchNorm's running statistics and an EMA of the weights
do not mix): ``GroupNorm(C // group_channels, C)``, 16 channels per group as in Diffusion Policy.

Layout::

    stem:   Conv2d(3, stem_channels, stem_kernel, stride 2, no bias) -> GroupNorm -> ReLU
            [-> MaxPool2d(3, stride 2, padding 1) when stem_pool]
    stage i (channels C_i, blocks_per_stage[i] BasicBlocks; stride 2 on its first block except stage 0)
    BasicBlock(in, out, stride): Conv3x3(stride) -> GN -> ReLU -> Conv3x3 -> GN, plus the shortcut
            (identity, or Conv1x1(stride) -> GN when the shape changes), then ReLU.

``ResNetTrunk(ResNetTrunkConfig())`` is ResNet-18's trunk: 11,176,512 parameters, as torchvision's
``resnet18`` without ``fc`` (GroupNorm has the same two affine parameters per channel as BatchNorm).
The output is the last stage's feature map ``[N, C_last, h, w]`` (``h = ceil(H / 32)`` for ResNet-18).
No pretrained weights: everything is initialised here (He-normal convolutions, unit/zero norms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = ["ResNetTrunk", "ResNetTrunkConfig"]


def _positive_ints(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    out = tuple(values)
    if not out or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return out


@dataclass
class ResNetTrunkConfig:
    """Shape of a :class:`ResNetTrunk`; the defaults are ResNet-18.

    ``stem_channels``/``stem_kernel``: the first convolution (stride 2, padding ``kernel // 2``);
    ``stem_pool``: the 3x3 stride-2 max pooling after it; ``stage_channels``/``blocks_per_stage``: one
    entry per stage; ``group_channels``: channels per GroupNorm group (at least one group).
    """

    stem_channels: int = 64
    stem_kernel: int = 7
    stem_pool: bool = True
    stage_channels: tuple[int, ...] = field(default=(64, 128, 256, 512))
    blocks_per_stage: tuple[int, ...] = field(default=(2, 2, 2, 2))
    group_channels: int = 16

    def __post_init__(self) -> None:
        (self.stem_channels,) = _positive_ints("stem_channels", (self.stem_channels,))
        (self.stem_kernel,) = _positive_ints("stem_kernel", (self.stem_kernel,))
        if self.stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd, got {self.stem_kernel}")
        if not isinstance(self.stem_pool, bool):
            raise ValueError(f"stem_pool must be a bool, got {self.stem_pool!r}")
        self.stage_channels = _positive_ints("stage_channels", self.stage_channels)
        self.blocks_per_stage = _positive_ints("blocks_per_stage", self.blocks_per_stage)
        if len(self.blocks_per_stage) != len(self.stage_channels):
            raise ValueError(
                f"blocks_per_stage {list(self.blocks_per_stage)} must have one entry per stage "
                f"(stage_channels {list(self.stage_channels)})"
            )
        (self.group_channels,) = _positive_ints("group_channels", (self.group_channels,))

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    @property
    def stride(self) -> int:
        """Total downsampling of the trunk (32 for ResNet-18)."""
        return 2 ** (1 + int(self.stem_pool) + len(self.stage_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stage_channels"] = list(self.stage_channels)
        out["blocks_per_stage"] = list(self.blocks_per_stage)
        return out


def group_norm(channels: int, group_channels: int) -> nn.GroupNorm:
    """``GroupNorm`` with ``channels // group_channels`` groups (at least one)."""
    return nn.GroupNorm(max(1, channels // group_channels), channels)


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block, GroupNorm instead of BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, group_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(out_channels, group_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(out_channels, group_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                group_norm(out_channels, group_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.relu(h + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """``forward(images [N, 3, H, W] float) -> features [N, out_channels, h, w]`` (see the module docstring)."""

    def __init__(self, config: ResNetTrunkConfig) -> None:
        super().__init__()
        if not isinstance(config, ResNetTrunkConfig):
            raise ValueError(f"config must be a ResNetTrunkConfig, got {type(config).__name__}")
        self.config = c = config
        stem: list[nn.Module] = [
            nn.Conv2d(3, c.stem_channels, c.stem_kernel, stride=2, padding=c.stem_kernel // 2, bias=False),
            group_norm(c.stem_channels, c.group_channels),
            nn.ReLU(),
        ]
        if c.stem_pool:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        stages = []
        channels = c.stem_channels
        for i, (width, blocks) in enumerate(zip(c.stage_channels, c.blocks_per_stage)):
            layers = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(channels, width, stride, c.group_channels))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.stages(self.stem(images))
