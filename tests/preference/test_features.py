"""Trajectory features (each task's, through its description) on hand-made episodes, on real expert
rollouts, and their normalizer."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from policy_sampler.preference import FeatureNormalizer, featurize
from policy_sampler_envs import describe_task
from policy_sampler_envs.obstacle_reach import AGENT_RADIUS, OBSTACLE_RADIUS

REACH = describe_task("PolicySampler/ObstacleReach-v0")


def _reach_episode(xs, ys, side="left"):
    obs = np.zeros((len(xs), 8))
    obs[:, 0], obs[:, 1] = xs, ys
    obs[:, 4:6] = [0.0, 0.3]
    actions = np.full((len(xs), 2), 0.5)
    return SimpleNamespace(observations=obs, actions=actions, info={"side": side})


def test_obstacle_reach_features_by_hand():
    # a path (0.2,-0.3) -> (0.2,0) -> (0.2,0.3) -> (0,0.3): length 0.3 + 0.3 + 0.2 = 0.8
    ep = _reach_episode([0.2, 0.2, 0.2, 0.0], [-0.3, 0.0, 0.3, 0.3], side="right")
    f = dict(zip(REACH.feature_names, featurize(REACH, [ep])[0]))
    assert f["path_length"] == pytest.approx(0.8)
    # third differences x3 - 3 x2 + 3 x1 - x0: x = (.2, .2, .2, 0) -> -0.2; y = (-.3, 0, .3, .3) -> -0.3
    assert f["jerk"] == pytest.approx(0.2**2 + 0.3**2)
    assert f["min_clearance"] == pytest.approx(0.2 - OBSTACLE_RADIUS - AGENT_RADIUS)
    assert f["side"] == 1.0
    assert f["final_distance"] == pytest.approx(0.0)
    assert f["time"] == 4 and f["effort"] == pytest.approx(4 * 0.5)
    # without info["side"], the side comes from the crossing of the obstacle's line (x < 0: left)
    ep_left = _reach_episode([-0.2, -0.2, 0.0], [-0.1, 0.1, 0.3], side=None)
    assert featurize(REACH, [ep_left])[0, 3] == -1.0


def test_real_rollouts_and_normalizer(tmp_path):
    from policy_sampler.data.demos import collect_episode
    from policy_sampler_envs import make_env, make_expert

    task = "PolicySampler/ObstacleReach-v0"
    env = make_env(task)
    expert = make_expert(task, env)
    episodes = [collect_episode(env, expert, seed) for seed in range(6)]
    env.close()
    feats = featurize(REACH, episodes)
    assert feats.shape == (6, 7) and np.isfinite(feats).all()
    sides = {ep.info["side"]: f for ep, f in zip(episodes, feats[:, 3])}
    assert sides.get("left", -1.0) == -1.0 and sides.get("right", 1.0) == 1.0
    norm = FeatureNormalizer.fit(feats, REACH.feature_names)
    z = norm.transform(feats)
    assert np.allclose(z.mean(0), 0) and np.allclose(z.std(0)[z.std(0) > 0], 1)
    restored = FeatureNormalizer.from_state_dict(json.loads(json.dumps(norm.state_dict())))
    assert np.array_equal(restored.transform(feats), z)
    with pytest.raises(ValueError, match="features must be"):
        norm.transform(feats[:, :3])


def test_metaworld_features_by_hand():
    obs = np.zeros((3, 39))
    obs[:, 0] = [0.0, 0.1, 0.3]  # hand x
    obs[:, 4:7] = [0.5, 0.0, 0.0]  # object
    obs[:, -3:] = [0.3, 0.0, 0.0]  # goal
    actions = np.array([[1.0, 0, 0, -1.0], [0, 1.0, 0, 1.0], [0, 0, 0, 1.0]])
    ep = SimpleNamespace(observations=obs, actions=actions, info={})
    mw_reach = describe_task("PolicySampler/MetaWorld-reach-v3")
    reach = dict(zip(mw_reach.feature_names, featurize(mw_reach, [ep])[0]))
    assert reach["path_length"] == pytest.approx(0.3) and reach["final_distance"] == pytest.approx(0.0)
    assert reach["time"] == 3 and reach["effort"] == pytest.approx(2.0) and reach["gripper_use"] == pytest.approx(2 / 3)
    push = featurize(describe_task("PolicySampler/MetaWorld-push-v3"), [ep])[0]
    assert push[2] == pytest.approx(0.2)  # the object's distance to the goal


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown task"):
        describe_task("PolicySampler/Unknown-v0")
    with pytest.raises(TypeError, match="episode 0"):
        featurize(REACH, [object()])
    bad = _reach_episode([0.0, np.nan], [0.0, 0.1])
    with pytest.raises(ValueError, match="episode 0 has NaN"):
        featurize(REACH, [bad])
    wrong = SimpleNamespace(observations=np.zeros((3, 5)), actions=np.zeros((3, 2)), info={})
    with pytest.raises(ValueError, match="episode 0: .*obs_dim 8"):
        featurize(REACH, [wrong])
    with pytest.raises(ValueError, match="std > 0"):
        FeatureNormalizer([0.0], [0.0])
