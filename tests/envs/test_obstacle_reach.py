"""Tests of ``PolicySampler/ObstacleReach-v0`` and of the task/expert registry."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import policy_sampler_envs  # noqa: E402
from policy_sampler_envs import Expert, available_tasks, make_expert  # noqa: E402
from policy_sampler_envs.obstacle_reach import ObstacleReachEnv, ObstacleReachExpert  # noqa: E402

TASK = "PolicySampler/ObstacleReach-v0"
FULL_ID = f"policy_sampler_envs:{TASK}"


def rollout_expert(env, seed: int, expert: Expert | None = None):
    """One expert episode; returns (final info, expert, n steps, actions)."""
    expert = expert if expert is not None else make_expert(TASK, env)
    obs, info = env.reset(seed=seed)
    expert.reset(seed)
    actions = []
    for n in range(1, 10_000):
        action = expert.act(obs)
        assert env.action_space.contains(action)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            return info, expert, n, np.stack(actions)
    raise AssertionError("episode never ended")


@pytest.fixture
def env():
    env = gymnasium.make(FULL_ID)
    yield env
    env.close()


def test_registered_and_listed():
    assert TASK in gymnasium.registry
    assert TASK in available_tasks()
    assert gymnasium.registry[TASK].max_episode_steps == 200


def test_check_env_unwrapped_and_made():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no spec: cannot test other render modes"
        for render_mode in (None, "rgb_array"):
            env = ObstacleReachEnv(render_mode=render_mode)
            check_env(env)
            env.close()
    for render_mode in (None, "rgb_array"):
        made = gymnasium.make(FULL_ID, render_mode=render_mode)
        check_env(made.unwrapped)
        made.close()


def test_make_from_fresh_interpreter():
    code = (
        "import gymnasium; env = gymnasium.make('" + FULL_ID + "'); "
        "obs, info = env.reset(seed=0); print(obs.shape, info['is_success'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(8,) False"


def test_spaces(env):
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert env.observation_space.shape == (8,) and env.observation_space.dtype == np.float32


def test_reset_seed_reproducible(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 2)).astype(np.float32)

    def trajectory(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in actions:
            obs, reward, *_ = env.step(a)
            out.append(np.append(obs, reward))
        return out[0], np.stack(out[1:])

    obs_a, traj_a = trajectory(7)
    obs_b, traj_b = trajectory(7)
    obs_c, _ = trajectory(8)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(traj_a, traj_b)
    assert not np.allclose(obs_a, obs_c)


def test_expert_success_and_sides(env):
    n = 20
    sides, collisions, successes = [], 0, 0
    for seed in range(n):
        info, expert, steps, _ = rollout_expert(env, seed)
        successes += info["is_success"]
        collisions += info["collided"]
        assert info["side"] == expert.side, (seed, info["side"], expert.side)
        sides.append(info["side"])
        if info["is_success"]:
            assert steps < 200
    assert successes / n >= 0.9
    assert collisions == 0
    left = sides.count("left") / n
    assert 0.25 <= left <= 0.75, sides


def test_expert_deterministic_per_seed_and_varied(env):
    _, _, _, a1 = rollout_expert(env, 3)
    _, _, _, a2 = rollout_expert(env, 3)
    np.testing.assert_array_equal(a1, a2)
    # same env seed, other expert seed: a different demonstration
    expert = make_expert(TASK, env)
    obs, _ = env.reset(seed=3)
    expert.reset(1234)
    assert not np.allclose(expert.act(obs), a1[0])


def test_success_when_at_goal():
    env = ObstacleReachEnv()
    obs, info = env.reset(seed=0)
    goal = obs[4:6]
    obs, info = env.reset(seed=0, options={"agent_pos": goal})
    assert info["is_success"] and info["distance"] < 1e-6
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert info["is_success"] and terminated and not truncated
    assert reward > 0  # success bonus beats the (near zero) distance penalty
    far = env.reset(seed=0, options={"agent_pos": goal + np.array([0.0, -0.05])})[1]
    assert not far["is_success"]
    env.close()


def test_collided_flag():
    env = ObstacleReachEnv()
    # drive straight up from below the obstacle: it blocks the way
    obs, info = env.reset(seed=0, options={"agent_pos": [0.0, -0.2], "obstacle_pos": [0.0, 0.0]})
    assert not info["collided"]
    for _ in range(40):
        obs, _, _, _, info = env.step(np.array([0.0, 1.0], np.float32))
    assert info["collided"]
    assert obs[1] < 0.0  # it did not pass through
    obs, info = env.reset(seed=0)  # reset clears it
    assert not info["collided"] and info["side"] is None
    env.close()


def test_side_from_crossing():
    env = ObstacleReachEnv()
    for x, side in ((-0.2, "left"), (0.2, "right")):
        _, info = env.reset(seed=0, options={"agent_pos": [x, -0.1], "obstacle_pos": [0.0, 0.0]})
        assert info["side"] is None
        for _ in range(30):
            _, _, _, _, info = env.step(np.array([0.0, 1.0], np.float32))
        assert info["side"] == side and not info["collided"]
    env.close()


def test_render_headless():
    env = gymnasium.make(FULL_ID, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    expert = make_expert(TASK, env)
    expert.reset(0)
    for _ in range(10):
        obs, *_ = env.step(expert.act(obs))
    frame = env.render()
    env.close()
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.shape == (320, 320, 3)
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 8
    # obstacle (red), goal (green) and puck (blue) are all in view
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    assert ((r > 180) & (g < 120) & (b < 120)).sum() > 50
    assert ((g > 150) & (r < 120) & (b < 120)).sum() > 20
    assert ((b > 180) & (r < 120) & (g < 160)).sum() > 10


def test_make_expert_protocol_and_unknown_id(env):
    expert = make_expert(FULL_ID, env)  # module prefix accepted
    assert isinstance(expert, ObstacleReachExpert) and isinstance(expert, Expert)
    with pytest.raises(ValueError) as err:
        make_expert("PolicySampler/NoSuchTask-v0", env)
    assert TASK in str(err.value)
    assert policy_sampler_envs.registry.available_tasks() == available_tasks()
