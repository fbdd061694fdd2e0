"""Diffusion Policy's vision encoder: camera images to one feature vector per observation step.

Chi et al. 2023, Sec. 3.3 ("Visual Encoder"): each camera's image goes through its own ResNet-18 whose
BatchNorms are GroupNorms and whose global average pooling is a spatial softmax (the keypoint pooling
of Levine et al. 2016), then a linear layer; random crops augment the images in training and a center
crop of the same size is used in evaluation. The per-camera features are concatenated (the policy adds
the low-dimensional state and flattens the observation steps into the denoiser's conditioning).

Per camera key ``k`` (input: uint8 images ``[N, H, W, 3]``, robomimic's layout, as the tasks render them)::

    x = images[k] / 127.5 - 1                       float in [-1, 1], channels first
    x = crop(x)                                     random (train mode) or center (eval mode) crop_shape
    f = ResNetTrunk(x)                              [N, C, h, w]     (policy_sampler.models.resnet)
    p = SpatialSoftmax(f)                           [N, K, 2]        (policy_sampler.models.spatial_softmax)
    z_k = Linear(2K, feature_dim)(flatten(p))       [N, feature_dim]
    out = concat(z_k for k in image_keys)           [N, len(image_keys) * feature_dim]

``share_encoder=True`` uses one trunk, spatial softmax and linear layer for every camera (the cameras are
stacked along the batch), LeRobot's ``use_separate_rgb_encoder_per_camera=False``.

Configurations: the defaults are the paper's (ResNet-18, 32 keypoints, 64 features per camera, 84 px
images cropped to 76 px, as in Diffusion Policy's robomimic image tasks; about 11.2M parameters per
camera); ``configs/policy/vision_small.yaml`` holds a small residual CNN that trains on a CPU in minutes.
No pretrained weights are ever downloaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from policy_sampler.models.resnet import ResNetTrunk, ResNetTrunkConfig
from policy_sampler.models.spatial_softmax import SpatialSoftmax

__all__ = ["ImageCrop", "VisionEncoder", "VisionEncoderConfig", "check_image"]


def _shape2(name: str, value: Any, allow_none: bool = False) -> tuple[int, int] | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be [height, width] (two positive ints), got {value!r}")
    out = tuple(value)
    if len(out) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in out):
        raise ValueError(f"{name} must be [height, width] (two positive ints), got {value!r}")
    return out  # type: ignore[return-value]


@dataclass
class VisionEncoderConfig:
    """Hyper-parameters of :class:`VisionEncoder` (defaults: the paper's ResNet-18 encoder).

    ``image_keys``: the observation keys holding camera images (``"<camera>_image"`` in robomimic's
    layout), encoded in this order; ``image_shape``: their ``[height, width]`` (uint8, 3 channels, last);
    ``crop_shape``: ``[height, width]`` of the random (train) / center (eval) crop, or None for no crop;
    ``backbone``: the :class:`ResNetTrunkConfig` (a dict is accepted); ``num_keypoints``: spatial-softmax
    keypoints per camera; ``feature_dim``: features per camera after the linear layer;
    ``share_encoder``: one encoder for every camera instead of one each.
    """

    image_keys: tuple[str, ...] = ("image",)
    image_shape: tuple[int, int] = (84, 84)
    crop_shape: tuple[int, int] | None = (76, 76)
    backbone: ResNetTrunkConfig = field(default_factory=ResNetTrunkConfig)
    num_keypoints: int = 32
    feature_dim: int = 64
    share_encoder: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image_keys, str) or not hasattr(self.image_keys, "__iter__"):
            raise ValueError(f"image_keys must be a sequence of observation key names, got {self.image_keys!r}")
        self.image_keys = tuple(self.image_keys)
        if not self.image_keys or not all(isinstance(k, str) and k for k in self.image_keys):
            raise ValueError(f"image_keys must name at least one camera image key, got {self.image_keys!r}")
        if len(set(self.image_keys)) != len(self.image_keys):
            raise ValueError(f"image_keys must be distinct, got {self.image_keys}")
        self.image_shape = _shape2("image_shape", self.image_shape)
        self.crop_shape = _shape2("crop_shape", self.crop_shape, allow_none=True)
        if self.crop_shape is not None and (
            self.crop_shape[0] > self.image_shape[0] or self.crop_shape[1] > self.image_shape[1]
        ):
            raise ValueError(
                f"crop_shape {list(self.crop_shape)} must fit inside image_shape {list(self.image_shape)}"
            )
        if isinstance(self.backbone, Mapping):
            self.backbone = ResNetTrunkConfig(**self.backbone)
        if not isinstance(self.backbone, ResNetTrunkConfig):
            raise ValueError(f"backbone must be a ResNetTrunkConfig or a dict of its fields, got {self.backbone!r}")
        for name in ("num_keypoints", "feature_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.share_encoder, bool):
            raise ValueError(f"share_encoder must be a bool, got {self.share_encoder!r}")

    @property
    def output_dim(self) -> int:
        """Features per observation step: ``len(image_keys) * feature_dim``."""
        return len(self.image_keys) * self.feature_dim

    @property
    def input_shape(self) -> tuple[int, int]:
        """``[height, width]`` the trunk sees (the crop, or the whole image)."""
        return self.crop_shape if self.crop_shape is not None else self.image_shape

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_keys"] = list(self.image_keys)
        out["image_shape"] = list(self.image_shape)
        out["crop_shape"] = None if self.crop_shape is None else list(self.crop_shape)
        out["backbone"] = self.backbone.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VisionEncoderConfig":
        return cls(**dict(data))


def check_image(key: str, value: Any, image_shape: tuple[int, int], leading: tuple[str | int, ...]) -> Tensor:
    """``value`` as a uint8 tensor ``[*leading, H, W, 3]``; a ``ValueError`` naming ``key`` and what is
    wrong otherwise. ``leading`` names (str) or fixes (int) the leading dimensions."""
    h, w = image_shape
    expected = "[" + ", ".join(str(d) for d in (*leading, h, w, 3)) + "]"
    if hasattr(value, "__array__") and not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    if not isinstance(value, Tensor):
        raise ValueError(f"{key} must be a uint8 image tensor {expected}, got {type(value).__name__}")
    if value.dtype != torch.uint8:
        raise ValueError(
            f"{key} must be a uint8 image tensor {expected} (0-255, as the env renders it), "
            f"got dtype {value.dtype}"
        )
    shape = tuple(value.shape)
    fixed_ok = len(shape) == len(leading) + 3 and all(
        not isinstance(d, int) or shape[i] == d for i, d in enumerate(leading)
    )
    if not fixed_ok or shape[len(leading):] != (h, w, 3) or 0 in shape:
        hint = ""
        if len(shape) >= 3 and shape[-3] == 3 and shape[-1] != 3:
            hint = " (images are channels last: height, width, RGB)"
        raise ValueError(f"{key} must have shape {expected}, got {list(shape)}{hint}")
    return value


class ImageCrop(nn.Module):
    """``forward(images [N, H, W, C]) -> [N, h, w, C]``: an independent uniformly random ``crop_shape``
    window per image in train mode (torch's global generator), the center window in eval mode."""

    def __init__(self, crop_shape: tuple[int, int]) -> None:
        super().__init__()
        self.crop_shape = _shape2("crop_shape", crop_shape)

    def forward(self, images: Tensor) -> Tensor:
        n, height, width = images.shape[:3]
        h, w = self.crop_shape
        if (h, w) == (height, width):
            return images
        if not self.training:
            top, left = (height - h) // 2, (width - w) // 2
            return images[:, top:top + h, left:left + w]
        device = images.device
        tops = torch.randint(0, height - h + 1, (n,), device=device)
        lefts = torch.randint(0, width - w + 1, (n,), device=device)
        rows = (tops[:, None] + torch.arange(h, device=device))[:, :, None]  # [N, h, 1]
        cols = (lefts[:, None] + torch.arange(w, device=device))[:, None, :]  # [N, 1, w]
        return images[torch.arange(n, device=device)[:, None, None], rows, cols]


class CameraEncoder(nn.Module):
    """One camera's trunk, spatial softmax and linear layer: ``[N, 3, h, w] -> [N, feature_dim]``."""

    def __init__(self, config: VisionEncoderConfig) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(config.backbone)
        self.keypoints = SpatialSoftmax(config.backbone.out_channels, config.num_keypoints)
        self.project = nn.Linear(2 * config.num_keypoints, config.feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.keypoints(self.trunk(x)).flatten(1))


class VisionEncoder(nn.Module):
    """``forward({key: uint8 [N, H, W, 3]}) -> [N, output_dim]`` (see the module docstring)."""

    def __init__(self, config: VisionEncoderConfig) -> None:
        super().__init__()
        if not isinstance(config, VisionEncoderConfig):
            raise ValueError(f"config must be a VisionEncoderConfig, got {type(config).__name__}")
        self.config = config
        self.crop = ImageCrop(config.crop_shape) if config.crop_shape is not None else nn.Identity()
        keys = ("shared",) if config.share_encoder else config.image_keys
        self.cameras = nn.ModuleDict({key: CameraEncoder(config) for key in keys})

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_images(self, images: Any, leading: tuple[str | int, ...] = ("N",)) -> dict[str, Tensor]:
        """Every configured camera key of ``images`` checked (uint8, ``[*leading, H, W, 3]``)."""
        keys = self.config.image_keys
        if not isinstance(images, Mapping):
            raise ValueError(f"images must be a dict keyed by {list(keys)}, got {type(images).__name__}")
        missing = [k for k in keys if k not in images]
        if missing:
            raise ValueError(f"images are missing camera key(s) {missing}; expected {list(keys)}, got {list(images)}")
        return {k: check_image(f"images[{k!r}]", images[k], self.config.image_shape, leading) for k in keys}

    def forward(self, images: Mapping[str, Tensor]) -> Tensor:
        checked = self.check_images(images)
        n = next(iter(checked.values())).shape[0]
        if any(v.shape[0] != n for v in checked.values()):
            raise ValueError(f"every camera needs the same batch size, got {[list(v.shape) for v in checked.values()]}")
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        keys = self.config.image_keys

        def prepare(x: Tensor) -> Tensor:
            x = self.crop(x.to(device))
            return x.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0

        if self.config.share_encoder:
            stacked = prepare(torch.cat([checked[k] for k in keys]))
            return torch.cat(self.cameras["shared"](stacked).split(n), dim=-1)
        return torch.cat([self.cameras[k](prepare(checked[k])) for k in keys], dim=-1)
