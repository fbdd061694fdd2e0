"""Camera observations (``obs_mode="pixels_state"``): Dict spaces that pass ``check_env``, images that
show the scene where the state says, seeded determinism, experts on dict observations, and the default
state mode left exactly as it was."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium import spaces  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import policy_sampler_envs  # noqa: E402
from policy_sampler_envs.obstacle_reach import ObstacleReachEnv  # noqa: E402

REACH = "PolicySampler/ObstacleReach-v0"
BUTTON = "PolicySampler/MetaWorld-button-press-topdown-v3"


def metaworld_or_skip() -> None:
    pytest.importorskip("metaworld")


@pytest.mark.parametrize("task, camera, state_dim", [(REACH, "top", 8), (BUTTON, "corner4", 39)])
def test_pixels_state_space_and_check_env(task, camera, state_dim):
    if "MetaWorld" in task:
        metaworld_or_skip()
    env = gymnasium.make(task, obs_mode="pixels_state", image_size=96)
    space = env.observation_space
    assert isinstance(space, spaces.Dict)
    assert set(space.spaces) == {"state", "proprio", f"{camera}_image"}
    image = space[f"{camera}_image"]
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert space["state"].shape == (state_dim,) and space["proprio"].shape == (4,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no spec: cannot test other render modes"
        check_env(env.unwrapped)
    obs, _ = env.reset(seed=3)
    assert space.contains(obs)
    assert obs[f"{camera}_image"].std() > 10  # a scene, not a blank frame
    np.testing.assert_array_equal(obs["proprio"], obs["state"][:4])
    again, _ = env.reset(seed=3)
    for key in obs:
        np.testing.assert_array_equal(obs[key], again[key])
    other, _ = env.reset(seed=4)
    assert not np.array_equal(other[f"{camera}_image"], obs[f"{camera}_image"])  # the scene moved
    env.close()


def test_state_mode_is_the_default_and_unchanged():
    env = gymnasium.make(REACH)
    assert env.observation_space == ObstacleReachEnv().observation_space
    assert isinstance(env.observation_space, spaces.Box) and env.observation_space.shape == (8,)
    obs, _ = env.reset(seed=0)
    pixel_env = gymnasium.make(REACH, obs_mode="pixels_state")
    pixel_obs, _ = pixel_env.reset(seed=0)
    np.testing.assert_array_equal(obs, pixel_obs["state"])  # same state, same seed
    env.close()
    pixel_env.close()


def puck_pixel(image: np.ndarray) -> np.ndarray:
    """(column, row) centroid of the blue puck."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    rows, cols = np.nonzero((b > 120) & (r < 90) & (b - g > 40))
    assert rows.size > 3, "the puck is not in the image"
    return np.array([cols.mean(), rows.mean()])


def test_top_camera_shows_the_puck_where_the_state_says():
    """+x is to the right and +y up in the image: a wrong camera or a flipped frame fails."""
    env = ObstacleReachEnv(obs_mode="pixels_state", image_size=84)
    spots = {}
    for name, pos in {"left": (-0.3, -0.3), "right": (0.3, -0.3), "top": (-0.3, 0.25)}.items():
        obs, _ = env.reset(seed=0, options={"agent_pos": pos})
        spots[name] = puck_pixel(obs["top_image"])
    assert spots["right"][0] - spots["left"][0] > 30  # 0.6 m apart: about 40 px at 84 px
    assert abs(spots["right"][1] - spots["left"][1]) < 2
    assert spots["left"][1] - spots["top"][1] > 30  # higher y is higher in the image (smaller row)
    env.close()


def test_experts_read_dict_observations():
    env = gymnasium.make(REACH, obs_mode="pixels_state")
    expert = policy_sampler_envs.make_expert(REACH, env)
    obs, _ = env.reset(seed=1)
    expert.reset(1)
    state_env = gymnasium.make(REACH)
    state_expert = policy_sampler_envs.make_expert(REACH, state_env)
    state_obs, _ = state_env.reset(seed=1)
    state_expert.reset(1)
    for _ in range(200):
        action = expert.act(obs)
        np.testing.assert_array_equal(action, state_expert.act(state_obs))  # the same demonstration
        obs, _, terminated, truncated, info = env.step(action)
        state_obs, *_ = state_env.step(action)
        if terminated or truncated:
            break
    assert info["is_success"]
    env.close()
    state_env.close()


def test_metaworld_expert_reads_dict_observations():
    metaworld_or_skip()
    env = gymnasium.make(BUTTON, obs_mode="pixels_state", image_size=84)
    expert = policy_sampler_envs.make_expert(BUTTON, env)
    obs, _ = env.reset(seed=0)
    expert.reset(0)
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            break
    assert info["is_success"]
    env.close()


@pytest.mark.parametrize("kwargs, match", [({"obs_mode": "pixels"}, "obs_mode"), ({"image_size": 4}, "image_size"),
                                           ({"image_size": 84.0}, "image_size")])
def test_bad_options_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ObstacleReachEnv(**kwargs)
