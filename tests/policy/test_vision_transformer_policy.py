"""Vision and transformer DiffusionPolicies: the vision encoder runs once per chunk (counted), every
sampler runs them, checkpoints (safetensors, EMA weights) save, load and sample identically with every
sampler, and bad image input is a clear error naming the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_sampler import DiffusionPolicy, available_samplers
from policy_sampler.models import TransformerForDiffusion, VisionEncoder
from policy_sampler.policy import DiffusionPolicyConfig

PROPRIO, ACT, TO, H = 4, 2, 2, 8
IMAGE = (32, 32)
VISION = dict(image_keys=["top_image"], image_shape=list(IMAGE), crop_shape=[28, 28], num_keypoints=4,
              feature_dim=8, backbone=dict(stem_channels=8, stem_kernel=3, stage_channels=[8, 16],
                                           blocks_per_stage=[1, 1], group_channels=8))
TINY = dict(obs_dim=PROPRIO, action_dim=ACT, obs_keys=["proprio"], horizon=H, n_obs_steps=TO, n_action_steps=4,
            down_dims=(16, 32), kernel_size=3, diffusion_step_embed_dim=16, num_train_timesteps=20,
            num_inference_steps=10, transformer=dict(n_layer=2, n_head=2, n_emb=16))
STATS = {"proprio": {"min": [-1.0] * PROPRIO, "max": [1.0] * PROPRIO}, "action": {"min": [0.0, -2.0], "max": [4.0, 2.0]}}
KINDS = {"vision_unet": dict(vision=VISION), "vision_transformer": dict(vision=VISION, model="transformer"),
         "transformer": dict(model="transformer")}


def make_policy(kind: str, seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    policy = DiffusionPolicy(DiffusionPolicyConfig(**TINY, **KINDS[kind]), dataset_stats=STATS)
    with torch.no_grad():  # EMA weights away from their (zero-bias) init, so outputs depend on everything
        for p in policy.ema_modules().parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval()


def make_obs(batch: int = 3, seed: int = 0, images: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = {"proprio": torch.rand(batch, TO, PROPRIO, generator=g) * 2 - 1}
    if images:
        obs["top_image"] = torch.randint(0, 256, (batch, TO, *IMAGE, 3), generator=g, dtype=torch.uint8)
    return obs


def test_config_builds_the_chosen_networks_and_round_trips():
    policy = make_policy("vision_transformer")
    c = policy.config
    assert isinstance(policy.model, TransformerForDiffusion) and isinstance(policy.ema_obs_encoder, VisionEncoder)
    assert c.input_keys == ("proprio", "top_image") and c.obs_feature_dim == PROPRIO + 8
    assert c.global_cond_dim == TO * (PROPRIO + 8)
    again = DiffusionPolicyConfig.from_dict(c.to_dict())
    assert again == c
    with pytest.raises(ValueError, match="unknown transformer setting.*n_layers"):
        DiffusionPolicyConfig(**{**TINY, "transformer": {"n_layers": 2}})
    with pytest.raises(ValueError, match="model must be one of"):
        DiffusionPolicyConfig(**{**TINY, "model": "dit"})
    with pytest.raises(ValueError, match="image_keys"):
        DiffusionPolicyConfig(**{**TINY, "vision": {**VISION, "image_keys": ["proprio"]}})


@pytest.mark.parametrize("kind", ["vision_unet", "vision_transformer"])
@pytest.mark.parametrize("sampler", available_samplers())
def test_the_vision_encoder_runs_once_per_chunk(kind, sampler):
    policy = make_policy(kind)
    encoder_calls, denoiser_calls = [], []
    policy.ema_obs_encoder.register_forward_hook(lambda *a: encoder_calls.append(1))
    policy.ema_model.register_forward_hook(lambda *a: denoiser_calls.append(1))
    out = policy.predict_action(make_obs(3), sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert len(encoder_calls) == 1  # one encoder pass for the whole chunk (3 rows x 2 frames at once) ...
    assert len(denoiser_calls) == out.rounds >= 2  # ... however many denoiser calls the sampler makes
    assert out.actions.shape == (3, 4, ACT) and torch.isfinite(out.chunk).all()


def test_images_change_the_actions_and_eval_uses_center_crops():
    policy = make_policy("vision_unet")
    obs, g = make_obs(2), lambda: torch.Generator().manual_seed(1)
    a = policy.predict_action(obs, generator=g()).chunk
    assert torch.equal(a, policy.predict_action(obs, generator=g()).chunk)  # no random crop at inference
    other = dict(obs, top_image=255 - obs["top_image"])
    assert not torch.allclose(a, policy.predict_action(other, generator=g()).chunk)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_training_loss_reaches_every_trained_network(kind):
    policy = make_policy(kind).train()
    batch = {"obs": make_obs(4), "action": torch.rand(4, H, ACT)}
    if "vision" not in kind:
        batch["obs"].pop("top_image")
    loss = policy.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, module in policy.trained_modules().items():
        assert all(p.grad is not None for p in module.parameters()), name
    assert all(p.grad is None for p in policy.ema_modules().parameters())
    ema_loss = policy.compute_loss(batch, generator=torch.Generator().manual_seed(0), use_ema=True)
    assert torch.isfinite(ema_loss) and ema_loss.grad_fn is None
    groups = policy.optimizer_groups(1e-3)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(
        id(p) for p in policy.trained_modules().parameters())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_checkpoint_round_trip_gives_identical_chunks_with_every_sampler(kind, tmp_path):
    policy = make_policy(kind)
    obs = make_obs(2, images="vision" in kind)
    path = policy.save(tmp_path / kind, metadata={"task": "synthetic"})
    again = DiffusionPolicy.load(path)
    assert again.config == policy.config and again.metadata["task"] == "synthetic"
    for name, module in policy.ema_modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, again.ema_modules()[name].state_dict()[key]), (name, key)
            assert torch.equal(value, again.trained_modules()[name].state_dict()[key]), (name, key)
    for sampler in available_samplers():
        a = policy.predict_action(obs, sampler=sampler, generator=torch.Generator().manual_seed(3))
        b = again.predict_action(obs, sampler=sampler, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.chunk, b.chunk), sampler
        assert (a.rounds, a.nfe) == (b.rounds, b.nfe), sampler
    # a checkpoint of another kind of policy is refused by its weights, not silently mixed
    if kind == "transformer":
        from safetensors.torch import load_file
        assert not any(k.startswith("obs_encoder.") for k in load_file(str(path / "model.safetensors")))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda o: o.pop("top_image"), r"missing key.*top_image"),
        (lambda o: o.update(top_image=o["top_image"].float()), r"'top_image'.*uint8.*float32"),
        (lambda o: o.update(top_image=o["top_image"][:, :, :16]), r"'top_image'.*\[3, 2, 32, 32, 3\].*16"),
        (lambda o: o.update(top_image=o["top_image"][:, :1]), r"'top_image'.*\[3, 2, 32, 32, 3\]"),
        (lambda o: o.update(top_image=o["top_image"].permute(0, 1, 4, 2, 3)), "channels last"),
        (lambda o: o.update(top_image=o["top_image"][:2]), r"'top_image'.*\[3, 2, 32, 32, 3\]"),
    ],
)
def test_bad_images_are_clear_errors(change, match):
    obs = make_obs(3)
    change(obs)
    with pytest.raises(ValueError, match=match):
        make_policy("vision_unet").predict_action(obs)


def test_env_histories_stack_images_as_uint8_and_state_as_float():
    from policy_sampler.policy.observations import stack_observations

    rng = np.random.default_rng(0)
    frame = lambda: {"state": rng.random(8).astype(np.float32), "proprio": rng.random(4).astype(np.float32),  # noqa: E731
                     "top_image": rng.integers(0, 256, (*IMAGE, 3), dtype=np.uint8)}
    histories = [[frame(), frame()] for _ in range(3)]
    obs = stack_observations(("proprio", "top_image"), histories)
    assert obs["proprio"].dtype == torch.float32 and obs["proprio"].shape == (3, TO, PROPRIO)
    assert obs["top_image"].dtype == torch.uint8 and obs["top_image"].shape == (3, TO, *IMAGE, 3)
    assert np.array_equal(obs["top_image"][1, 0].numpy(), histories[1][0]["top_image"])
    make_policy("vision_unet").predict_action(obs)  # exactly what the policy takes
    with pytest.raises(ValueError, match="wrist_image"):
        stack_observations(("proprio", "wrist_image"), histories)


@pytest.mark.parametrize("name", ["vision_small", "vision_paper"])
@pytest.mark.parametrize("model", ["unet", "transformer"])
def test_hydra_policy_configs_build_vision_and_transformer_policies(name, model):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"policy={name}", f"policy.model={model}", "task=T",
                                                      "dataset=d.hdf5"])
    data = OmegaConf.to_container(cfg.policy)
    assert data["vision"]["image_keys"] is None  # filled in from the dataset by the trainer
    data["vision"].update(image_keys=["top_image"], image_shape=[84, 84])
    config = DiffusionPolicyConfig.from_dict(dict(data, obs_dim=4, action_dim=2))
    assert config.model == model and config.obs_keys == ("proprio",)
    assert config.vision.backbone.stage_channels == ((64, 128, 256, 512) if name == "vision_paper" else (32, 64))
    n_emb = config.transformer_config().n_emb
    assert n_emb == (256 if name == "vision_paper" else 64)


def test_a_checkpoint_whose_weights_lack_the_encoder_is_a_clear_error(tmp_path):
    import json

    path = make_policy("vision_unet").save(tmp_path / "vision")
    document = json.loads((path / "config.json").read_text())
    make_policy("transformer").save(tmp_path / "other")  # transformer weights, no obs_encoder.*
    (path / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    (path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="does not match the policy config"):
        DiffusionPolicy.load(path)
