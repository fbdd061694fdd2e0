"""What each task tells the layers above it (its description): features, chunk preview, control period,
safe action; checked against the real envs."""

import numpy as np
import pytest

from policy_sampler_envs import TaskDescription, available_tasks, describe_task, make_env

TASKS = ["PolicySampler/ObstacleReach-v0", "PolicySampler/MetaWorld-push-v3", "PolicySampler/MetaWorld-reach-v3"]


def test_every_registered_task_is_described():
    for task in available_tasks():
        d = describe_task(task)
        assert isinstance(d, TaskDescription) and d.task_id == task and d.feature_names and d.dt > 0


@pytest.mark.parametrize("task", TASKS)
def test_description_matches_the_env(task):
    """dt, action box and sizes are the env's; the preview heads where the env goes (it is a kinematic
    guess: the real body lags its command, so only the direction and the scale are checked)."""
    d = describe_task(task)
    env = make_env(task)
    try:
        obs, _ = env.reset(seed=3)
        assert d.dt == pytest.approx(env.unwrapped.dt)
        np.testing.assert_array_equal(env.action_space.low, d.action_low)
        np.testing.assert_array_equal(env.action_space.high, d.action_high)
        assert obs.shape == (d.obs_dim,) and env.action_space.shape == (d.action_dim,)
        command = np.zeros(d.action_dim, np.float32)
        command[:2] = [0.8, 0.4]
        actions = np.tile(command, (20, 1))
        path = d.preview(obs, actions)
        assert path.shape == (20, d.obs_dim)
        real = obs
        for a in actions:
            real, *_ = env.step(a)
        moved, guessed = real[:2] - obs[:2], path[-1, :2] - obs[:2]
        cosine = moved @ guessed / (np.linalg.norm(moved) * np.linalg.norm(guessed))
        assert cosine > 0.95 and 0.4 < np.linalg.norm(moved) / np.linalg.norm(guessed) < 1.5, (moved, guessed)
        features = d.features(np.concatenate([obs[None], path]), actions, {})
        assert features.shape == (len(d.feature_names),) and np.isfinite(features).all()
        chunk = d.chunk_features(obs[None], np.zeros((0, d.action_dim)), actions)
        assert chunk.shape == features.shape and np.isfinite(chunk).all()
    finally:
        env.close()


def test_obstacle_reach_chunk_features_carry_the_heading_side():
    """Before the puck passes the obstacle, a chunk's side feature is the side it heads to."""
    d = describe_task("PolicySampler/ObstacleReach-v0")
    start = np.array([0.0, -0.32, 0, 0, 0.0, 0.32, 0.0, 0.0])
    side = d.feature_names.index("side")
    left = d.chunk_features(start[None], np.zeros((0, 2)), np.tile([-0.5, 1.0], (8, 1)))
    right = d.chunk_features(start[None], np.zeros((0, 2)), np.tile([0.5, 1.0], (8, 1)))
    assert left[side] == -1.0 and right[side] == 1.0


def test_safe_actions():
    """A zero velocity stops the puck; Meta-World holds the hand and keeps the gripper's last command
    (opening it would drop a grasped object)."""
    np.testing.assert_array_equal(describe_task("PolicySampler/ObstacleReach-v0").safe_action(np.ones(2)), [0, 0])
    mw = describe_task("PolicySampler/MetaWorld-push-v3")
    np.testing.assert_array_equal(mw.safe_action(np.array([0.3, -0.2, 0.1, 1.0])), [0, 0, 0, 1.0])
    np.testing.assert_array_equal(mw.safe_action(None), [0, 0, 0, 0])


def test_unknown_task_and_wrong_sizes():
    with pytest.raises(ValueError, match="unknown task"):
        describe_task("PolicySampler/Nope-v0")
    with pytest.raises(ValueError, match="obs_dim 8"):
        describe_task("PolicySampler/ObstacleReach-v0").features(np.zeros((3, 5)), np.zeros((3, 2)), {})
