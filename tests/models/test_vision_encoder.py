"""Vision encoder: GroupNorm ResNet trunk sizes, spatial-softmax keypoints, crop modes, per-camera and
shared encoders, and the errors bad images get."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policy_sampler.models import (
    ImageCrop,
    ResNetTrunk,
    ResNetTrunkConfig,
    SpatialSoftmax,
    VisionEncoder,
    VisionEncoderConfig,
)

SMALL_BACKBONE = dict(stem_channels=16, stem_kernel=5, stage_channels=(32, 64), blocks_per_stage=(1, 1))
KEYS = ("top_image", "wrist_image")


def small_config(**overrides) -> VisionEncoderConfig:
    kwargs = dict(image_keys=KEYS, image_shape=(84, 84), crop_shape=(76, 76), backbone=SMALL_BACKBONE,
                  num_keypoints=8, feature_dim=16)
    kwargs.update(overrides)
    return VisionEncoderConfig(**kwargs)


def images(n: int, seed: int = 0, shape=(84, 84)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 256, (n, *shape, 3), generator=g, dtype=torch.uint8) for k in KEYS}


def test_resnet18_trunk_has_torchvisions_parameter_count_and_no_batchnorm():
    trunk = ResNetTrunk(ResNetTrunkConfig())  # the paper's ResNet-18
    assert sum(p.numel() for p in trunk.parameters()) == 11_176_512  # torchvision resnet18 minus fc
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trunk.modules())
    norms = [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels // m.num_groups == 16 for m in norms)
    assert trunk(torch.zeros(1, 3, 76, 76)).shape == (1, 512, 3, 3)  # stride 32, as robomimic's 76 px crop


def test_paper_encoder_size_and_output_shape():
    encoder = VisionEncoder(VisionEncoderConfig(image_keys=("top_image",))).eval()
    # trunk + spatial softmax (1x1 conv 512 -> 32) + Linear(64, 64): robomimic's VisualCore
    assert encoder.num_parameters() == 11_176_512 + 512 * 32 + 32 + 64 * 64 + 64
    out = encoder({"top_image": torch.zeros(2, 84, 84, 3, dtype=torch.uint8)})
    assert out.shape == (2, 64)


@pytest.mark.parametrize("share", [False, True])
def test_per_camera_and_shared_encoders(share):
    torch.manual_seed(0)
    encoder = VisionEncoder(small_config(share_encoder=share)).eval()
    one = VisionEncoder(small_config(image_keys=("top_image",))).num_parameters()
    assert encoder.num_parameters() == (one if share else 2 * one)
    x = images(3)
    out = encoder(x)
    assert out.shape == (3, 2 * 16) and torch.isfinite(out).all()
    # each camera's features depend on its own image only, in image_keys order
    changed = dict(x, wrist_image=torch.zeros_like(x["wrist_image"]))
    out2 = encoder(changed)
    assert torch.equal(out2[:, :16], out[:, :16]) and not torch.allclose(out2[:, 16:], out[:, 16:])
    if share:  # one network: swapping the cameras swaps the halves
        swapped = encoder({"top_image": x["wrist_image"], "wrist_image": x["top_image"]})
        torch.testing.assert_close(swapped, torch.cat((out[:, 16:], out[:, :16]), dim=1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("height,width", [(8, 10), (5, 7)])
def test_spatial_softmax_keypoint_of_a_bright_pixel_is_its_coordinate(height, width):
    pool = SpatialSoftmax(in_channels=2, num_keypoints=2)
    with torch.no_grad():  # keypoint k reads channel k
        pool.keypoint_logits.weight.copy_(torch.eye(2)[:, :, None, None])
        pool.keypoint_logits.bias.zero_()
    features = torch.zeros(1, 2, height, width)
    spots = [(2, width - 1), (height - 1, 1)]  # (row, column) per channel
    for k, (r, c) in enumerate(spots):
        features[0, k, r, c] = 60.0  # exp(60) dwarfs the other positions' exp(0)
    keypoints = pool(features)
    assert keypoints.shape == (1, 2, 2)
    for k, (r, c) in enumerate(spots):
        expected = torch.tensor([-1 + 2 * c / (width - 1), -1 + 2 * r / (height - 1)])  # (x, y)
        torch.testing.assert_close(keypoints[0, k], expected, rtol=0, atol=1e-5)
    # a uniform map has its keypoint at the centre
    assert torch.allclose(pool(torch.zeros(1, 2, height, width)), torch.zeros(1, 2, 2), atol=1e-6)


def coordinate_images(n: int, height: int = 84, width: int = 84) -> torch.Tensor:
    """Channel 0 holds the row index, channel 1 the column: a crop's pixels say where they came from."""
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    img = torch.stack((rows, cols, torch.zeros_like(rows)), dim=-1).to(torch.uint8)
    return img.expand(n, height, width, 3).clone()


def test_crop_is_center_in_eval_and_random_windows_in_train():
    crop = ImageCrop((76, 70))
    x = coordinate_images(64)
    crop.eval()
    centre = crop(x)
    assert torch.equal(centre, x[:, 4:80, 7:77])
    crop.train()
    torch.manual_seed(0)
    out = crop(x)
    assert out.shape == (64, 76, 70, 3)
    tops, lefts = out[:, 0, 0, 0].long(), out[:, 0, 0, 1].long()
    for i in range(64):  # every crop is one contiguous window of its own image
        assert torch.equal(out[i], x[i, tops[i]:tops[i] + 76, lefts[i]:lefts[i] + 70])
    assert tops.min() >= 0 and tops.max() <= 8 and lefts.min() >= 0 and lefts.max() <= 14
    assert len(set(tops.tolist())) > 3 and len(set(lefts.tolist())) > 3  # offsets differ per image
    assert not torch.equal(out, crop(x))  # and per call


def test_encoder_is_deterministic_in_eval_and_augments_in_train():
    torch.manual_seed(0)
    encoder = VisionEncoder(small_config())
    x = images(4)
    encoder.eval()
    assert torch.equal(encoder(x), encoder(x))
    encoder.train()
    assert not torch.equal(encoder(x), encoder(x))
    VisionEncoder(small_config(crop_shape=None)).train()(x)  # no crop: the whole image


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"top_image": torch.zeros(2, 84, 84, 3, dtype=torch.uint8)}, r"missing camera key.*wrist_image"),
        (dict(images(2), wrist_image=torch.zeros(2, 84, 84, 3)), r"'wrist_image'.*uint8.*float32"),
        (dict(images(2), top_image=torch.zeros(2, 64, 64, 3, dtype=torch.uint8)), r"'top_image'.*\[N, 84, 84, 3\].*64, 64"),
        (dict(images(2), top_image=torch.zeros(2, 3, 84, 84, dtype=torch.uint8)), "channels last"),
        ([1, 2], "dict"),
    ],
)
def test_bad_images_name_the_key_and_the_problem(bad, match):
    encoder = VisionEncoder(small_config())
    with pytest.raises(ValueError, match=match):
        encoder(bad)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(crop_shape=(90, 76)), "crop_shape"),
        (dict(image_shape=(84,)), "image_shape"),
        (dict(image_keys=()), "image_keys"),
        (dict(image_keys=("a", "a")), "distinct"),
        (dict(num_keypoints=0), "num_keypoints"),
        (dict(backbone=dict(stage_channels=(8, 16), blocks_per_stage=(1,))), "blocks_per_stage"),
    ],
)
def test_config_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        small_config(**overrides)


def test_config_round_trip():
    config = small_config(share_encoder=True)
    again = VisionEncoderConfig.from_dict(config.to_dict())
    assert again == config and again.output_dim == 32
