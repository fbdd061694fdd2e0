"""Camera demos end to end: collected from ``obs_mode="pixels_state"``, stored uint8 in robomimic's layout
(``obs/<camera>_image`` [T, H, W, 3]), read back through robomimic's ``SequenceDataset`` as the policy's
windows, a vision and a transformer policy trained on them, and a vision policy rolled in its task
(the env made in pixel mode from the policy itself)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.data import collect, make_env_args, write_robomimic_hdf5
from policy_sampler.policy import DiffusionPolicyConfig
from policy_sampler.rollout import RolloutConfig, SamplerSpec, evaluate_sampler, policy_env_kwargs
from policy_sampler.training import TrainConfig, train
from policy_sampler.training.windows import dataset_images, load_windows

TASK = "PolicySampler/ObstacleReach-v0"
SIZE = 32
VISION = dict(image_keys=None, image_shape=None, crop_shape=[28, 28], num_keypoints=4, feature_dim=8,
              backbone=dict(stem_channels=8, stem_kernel=3, stage_channels=[8, 16], blocks_per_stage=[1, 1],
                            group_channels=8))
TINY = dict(obs_keys=["proprio"], horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=[16, 32], kernel_size=3,
            diffusion_step_embed_dim=16, num_train_timesteps=20, num_inference_steps=10,
            transformer=dict(n_layer=1, n_head=2, n_emb=16), vision=VISION)
QUICK = TrainConfig(steps=4, batch_size=16, warmup_steps=1, val_every=2, progress=False)


@pytest.fixture(scope="module")
def pixel_demos(tmp_path_factory):
    kwargs = {"obs_mode": "pixels_state", "image_size": SIZE}
    episodes = collect(TASK, 4, seed=0, keep_only_successful=False, max_steps=30, env_kwargs=kwargs, progress=False)
    path = tmp_path_factory.mktemp("pixels") / "demos.hdf5"
    write_robomimic_hdf5(path, episodes, env_args=make_env_args(TASK, env_kwargs=kwargs), valid_fraction=0.25)
    return path, episodes


def test_images_are_stored_uint8_in_robomimics_layout(pixel_demos):
    path, episodes = pixel_demos
    with h5py.File(path, "r") as f:
        demo = f["data/demo_0"]
        image = demo["obs/top_image"]
        assert image.dtype == np.uint8 and image.shape == (30, SIZE, SIZE, 3)
        assert demo["obs/proprio"].shape == (30, 4) and demo["obs/state"].shape == (30, 8)
        np.testing.assert_array_equal(demo["obs/proprio"][()], demo["obs/state"][:, :4])
        np.testing.assert_array_equal(image[()], episodes[0].extra_observations["top_image"])
        assert "top_image" not in demo["next_obs"] and "proprio" in demo["next_obs"]
        assert json.loads(f["data"].attrs["env_args"])["env_kwargs"]["obs_mode"] == "pixels_state"
    assert dataset_images(path) == {"top_image": (SIZE, SIZE)}
    frames = episodes[0].extra_observations["top_image"]
    assert frames.std() > 5 and not np.array_equal(frames[0], frames[-1])  # the puck moved


def test_windows_through_robomimics_loader_are_the_stored_frames(pixel_demos):
    path, episodes = pixel_demos
    config = DiffusionPolicyConfig(obs_dim=4, action_dim=2, **{**TINY, "vision": {
        **VISION, "image_keys": ["top_image"], "image_shape": [SIZE, SIZE]}})
    windows = load_windows(path, config, split=None)
    frames = [e.extra_observations["top_image"] for e in episodes]
    proprio = [e.extra_observations["proprio"] for e in episodes]
    assert windows.obs["top_image"].dtype == torch.uint8
    assert windows.obs["top_image"].shape == (sum(len(e) for e in episodes), 2, SIZE, SIZE, 3)
    start = 0
    for images, low_dim, episode in zip(frames, proprio, episodes):
        for t in (0, 1, len(episode) - 1):  # window t holds steps t-1, t (step 0 repeated at the start)
            i = start + t
            np.testing.assert_array_equal(windows.obs["top_image"][i, 1].numpy(), images[t])
            np.testing.assert_array_equal(windows.obs["top_image"][i, 0].numpy(), images[max(t - 1, 0)])
            np.testing.assert_array_equal(windows.obs["proprio"][i, 1].numpy(), low_dim[t])
            np.testing.assert_array_equal(windows.action[i, 1].numpy(), episode.actions[t])
        start += len(episode)


@pytest.mark.parametrize("model", ["unet", "transformer"])
def test_vision_policies_train_save_and_load(pixel_demos, tmp_path, model):
    path, _ = pixel_demos
    result = train({**TINY, "model": model}, path, tmp_path, QUICK, metadata={"task": TASK})
    log = result.log
    assert log["policy"]["vision"]["image_keys"] == ["top_image"]  # filled in from the dataset
    assert log["policy"]["vision"]["image_shape"] == [SIZE, SIZE]
    assert set(log["parameters"]) == {"model", "obs_encoder"} and log["peak_rss_mb"] > 0
    assert log["samples_per_second"] > 0
    policy = DiffusionPolicy.load(result.last_path)
    assert policy.config.model == model and policy.ema_obs_encoder is not None
    obs = {"proprio": torch.zeros(2, 2, 4), "top_image": torch.zeros(2, 2, SIZE, SIZE, 3, dtype=torch.uint8)}
    assert torch.isfinite(policy.predict_action(obs, sampler="paradigms").chunk).all()


def test_a_vision_policy_on_a_state_dataset_is_a_clear_error(tmp_path):
    episodes = collect(TASK, 1, seed=0, keep_only_successful=False, max_steps=10, progress=False)
    path = write_robomimic_hdf5(tmp_path / "state.hdf5", episodes, env_args=make_env_args(TASK), valid_fraction=0)
    with pytest.raises(ValueError, match="obs_mode=pixels_state"):
        train({**TINY, "obs_keys": ["state"]}, path, tmp_path / "run", QUICK)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("vision, match", [({"image_shape": [64, 64]}, r"image_shape=\[64, 64\].*\[32, 32\]"),
                                           ({"image_keys": ["wrist_image"]}, r"wrist_image.*top_image")])
def test_vision_settings_that_do_not_match_the_images_are_clear_errors(pixel_demos, tmp_path, vision, match):
    with pytest.raises(ValueError, match=match):
        train({**TINY, "vision": {**VISION, **vision}}, pixel_demos[0], tmp_path / "run", QUICK)


def test_a_vision_policy_rolls_in_its_task_from_pixels(pixel_demos, tmp_path):
    path, _ = pixel_demos
    policy = DiffusionPolicy.load(train(TINY, path, tmp_path, QUICK, metadata={"task": TASK}).last_path)
    assert policy_env_kwargs(policy) == {"obs_mode": "pixels_state", "image_size": SIZE}
    calls = []
    policy.ema_obs_encoder.register_forward_hook(lambda *a: calls.append(1))
    report, _ = evaluate_sampler(policy, TASK, SamplerSpec("speculative_picard", "speculative_picard"), 2, seed=7,
                                 rollout=RolloutConfig(max_steps=12, record_trajectories=True))
    assert [e["length"] for e in report.episodes] == [12, 12]
    assert len(report.chunks) == len(calls) == 3  # one encoder pass per chunk (12 steps / 4 actions)
    # trajectories keep the state vector of state mode, not the frames
    assert report.trajectories[0]["observations"].shape == (12, 8)
