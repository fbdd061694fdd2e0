"""The runner checks every observation (not only the first) and answers uncovered ticks with the task's
safe action."""

import numpy as np
import pytest

from control_harness import OBS_DIM, observation, tiny_policy
from policy_sampler.control import ChunkRunner, RunnerConfig
from policy_sampler.control.observation_check import ObservationCheck
from policy_sampler.control.safe_action import SafeAction
from policy_sampler_envs import describe_task


@pytest.fixture(scope="module")
def runner():
    policy = tiny_policy(lambda x, t, cond: 0.1 * x)
    return ChunkRunner(policy, config=RunnerConfig(inference_delay=1, num_inference_steps=2, seed=0))


@pytest.mark.parametrize("bad,match", [
    (np.zeros(OBS_DIM + 1, np.float32), r"tick 3 must have 3 numbers, got shape \(4,\)"),
    (np.zeros((1, OBS_DIM), np.float32) + np.nan, "tick 3 contains NaN or inf"),
    (np.array(["a", "b", "c"]), "tick 3 must hold numbers"),
    ({"state": observation(0)}, "this episode's observations are flat arrays"),
])
def test_a_bad_observation_on_a_later_tick_is_a_clear_error(runner, bad, match):
    runner.reset(observation(0))
    for k in range(3):
        runner.act(observation(k))
    with pytest.raises(ValueError, match=match):
        runner.act(bad)


def test_observations_are_copied():
    check = ObservationCheck(("state",), (3,), 3)
    buffer = np.ones(3, np.float32)
    kept = check(buffer, "tick 0")
    buffer[:] = 5.0
    np.testing.assert_array_equal(kept, np.ones(3))


def test_dict_observations():
    check = ObservationCheck(("state",), (3,), 3)
    # a dict holding the policy's key: that entry
    np.testing.assert_array_equal(check({"state": [1, 2, 3], "extra": [9]}, "tick 0")["state"], [1, 2, 3])
    with pytest.raises(ValueError, match=r"tick 1: missing key\(s\) \['state'\]"):
        check({"stat": [1, 2, 3]}, "tick 1")
    # a one-entry dict with another key is a misnamed key, not a structure to flatten
    check.reset()
    with pytest.raises(ValueError, match=r"missing the policy's key\(s\) \['state'\]"):
        check({"stat": [1, 2, 3]}, "tick 0")
    # a structured observation is flattened in its key order, and keeps its keys
    check.reset()
    np.testing.assert_array_equal(check({"pos": [1, 2], "goal": [3]}, "tick 0"), [1, 2, 3])
    with pytest.raises(ValueError, match="differ from the episode's first"):
        check({"pos": [1, 2], "target": [3]}, "tick 1")
    with pytest.raises(ValueError, match="flattens to 4 numbers"):
        check({"pos": [1, 2], "goal": [3, 4]}, "tick 2")
    # a policy with two keys needs a dict holding both
    two = ObservationCheck(("a", "b"), (1, 2), 3)
    with pytest.raises(ValueError, match=r"pass a dict holding them"):
        two(np.zeros(3), "tick 0")
    with pytest.raises(ValueError, match=r"observation\['b'\] at tick 0 must have 2 numbers"):
        two({"a": [0], "b": [1, 2, 3]}, "tick 0")


def test_safe_actions_of_the_tasks():
    last = np.array([[0.3, -0.2, 0.1, 0.7], [0.0, 0.0, 0.0, -1.0]], np.float32)
    metaworld = SafeAction("task", 4, describe_task("PolicySampler/MetaWorld-reach-v3"))
    np.testing.assert_array_equal(metaworld(last, 2), [[0, 0, 0, last[0, 3]], [0, 0, 0, -1.0]])  # hand still, gripper kept
    np.testing.assert_array_equal(metaworld(None, 2), np.zeros((2, 4)))
    reach = SafeAction("task", 2, describe_task("PolicySampler/ObstacleReach-v0"))
    np.testing.assert_array_equal(reach(last[:, :2], 2), np.zeros((2, 2)))  # zero velocity stops the puck
    assert reach.source == "task PolicySampler/ObstacleReach-v0"
    np.testing.assert_array_equal(SafeAction("repeat", 4)(last, 2), last)
    np.testing.assert_array_equal(SafeAction("repeat", 4)(None, 2), np.zeros((2, 4)))
    assert SafeAction("task", 4).source == "zero (the policy names no task)"


def test_the_runner_reads_the_task_from_the_policy():
    policy = tiny_policy(lambda x, t, cond: 0.1 * x)
    policy.metadata = {"task": "PolicySampler/ObstacleReach-v0"}
    runner = ChunkRunner(policy, config=RunnerConfig(inference_delay=0))
    assert runner.stats()["safe_action"] == "task PolicySampler/ObstacleReach-v0"
    assert runner.timing.period_s == describe_task("PolicySampler/ObstacleReach-v0").dt
    policy.metadata = {"task": "Nowhere-v0"}
    with pytest.raises(ValueError, match="safe_action='zero' or 'repeat'"):
        ChunkRunner(policy, config=RunnerConfig(inference_delay=0))
    assert ChunkRunner(policy, config=RunnerConfig(inference_delay=0, safe_action="zero")).stats()["safe_action"] == "zero"
    with pytest.raises(ValueError, match="safe_action"):
        RunnerConfig(safe_action="hold")


def test_camera_keys_pass_through_and_a_missing_one_is_named():
    check = ObservationCheck(["proprio"], [4], 4, image_keys=["top_image"])
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    out = check({"proprio": np.ones(4), "top_image": frame, "state": np.ones(8)}, "tick 0")
    assert set(out) == {"proprio", "top_image"} and out["top_image"].dtype == np.uint8
    assert np.array_equal(out["top_image"], frame) and out["proprio"].dtype == np.float32
    with pytest.raises(ValueError, match=r"missing camera key\(s\) \['top_image'\]"):
        check({"proprio": np.ones(4)}, "tick 1")
