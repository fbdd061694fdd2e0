"""Reward-chosen actions: the selector picks what the reward says; best-of-1 is the plain policy."""

import numpy as np
import pytest
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.control import ChunkRunner, RunnerConfig
from policy_sampler.policy.config import DiffusionPolicyConfig
from policy_sampler.preference import FeatureNormalizer
from policy_sampler.preference.selection import RewardSelector
from policy_sampler.reference import GaussianMixtureDenoiser
from policy_sampler_envs import describe_task

TASK = "PolicySampler/ObstacleReach-v0"
REACH = describe_task(TASK)
NAMES = list(REACH.feature_names)


def unit(**weights):
    w = np.array([weights.get(n, 0.0) for n in NAMES])
    return w / np.linalg.norm(w)


def identity_normalizer():
    d = len(NAMES)
    return FeatureNormalizer(np.zeros(d), np.ones(d), NAMES)


START = np.array([0.0, -0.32, 0.0, 0.0, 0.0, 0.32, 0.0, 0.0], np.float32)  # puck, velocity, goal, obstacle


def candidates():
    """Three chunks of 15 velocity commands from START: up-left, straight up, up-right."""
    up = np.array([0.0, 1.0])
    return np.stack([np.tile(up + [-0.6, 0.0], (15, 1)), np.tile(up, (15, 1)), np.tile(up + [0.6, 0.0], (15, 1))])


@pytest.mark.parametrize("weights,expected", [
    (unit(side=-1.0), 0),             # prefers passing left (side = -1)
    (unit(side=1.0), 2),              # prefers passing right
    (unit(final_distance=-1.0), 1),   # prefers getting closest to the goal: straight up
])
def test_selector_picks_the_rewarded_candidate(weights, expected):
    selector = RewardSelector(REACH, weights, identity_normalizer())
    past_obs, past_actions = START[None], np.zeros((0, 2), np.float32)
    picks = selector.choose([past_obs], [past_actions], candidates()[None], np.random.default_rng(0))
    assert picks.tolist() == [expected]


def test_preview_integrates_velocity_commands():
    """The task's preview (what the selector scores) moves the puck at max_speed * dt per command,
    matching the real env's dt."""
    from policy_sampler_envs import make_env

    path = REACH.preview(START, np.tile([1.0, 0.0], (5, 1)))
    dx = REACH.max_speed * REACH.dt
    np.testing.assert_allclose(path[:, 0], dx * np.arange(1, 6), rtol=1e-6)
    np.testing.assert_allclose(path[:, 2], REACH.max_speed)
    env = make_env(TASK)
    assert env.unwrapped.dt == pytest.approx(REACH.dt) and env.unwrapped.max_speed == REACH.max_speed
    env.close()


def test_soft_and_thompson_modes_and_round_trip(tmp_path):
    samples = np.stack([unit(side=-1.0)] * 3)
    selector = RewardSelector(REACH, samples, identity_normalizer(), mode="thompson")
    assert selector.choose([START[None]], [np.zeros((0, 2))], candidates()[None], np.random.default_rng(0)).tolist() == [0]
    soft = RewardSelector(REACH, unit(side=-1.0), identity_normalizer(), mode="soft", temperature=1e-3)
    assert soft.choose([START[None]], [np.zeros((0, 2))], candidates()[None], np.random.default_rng(0)).tolist() == [0]
    saved = selector.save(tmp_path / "reward.json")
    loaded = RewardSelector.load(saved, REACH)
    np.testing.assert_allclose(loaded.weights, selector.weights)
    assert loaded.mode == "thompson"
    with pytest.raises(ValueError, match="learned on task"):
        RewardSelector.load(saved, describe_task("PolicySampler/MetaWorld-push-v3"))


@pytest.mark.parametrize("kwargs,match", [
    ({"task": "PolicySampler/ObstacleReach-v0"}, "task description"),
    ({"weights": np.ones(3)}, "weights must be"),
    ({"mode": "best"}, "mode must be"),
    ({"temperature": 0.0}, "temperature"),
])
def test_bad_selector_arguments(kwargs, match):
    args = {"task": REACH, "weights": unit(side=1.0), "normalizer": identity_normalizer(), **kwargs}
    with pytest.raises(ValueError, match=match):
        RewardSelector(**args)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    cfg = DiffusionPolicyConfig(obs_dim=8, action_dim=2, down_dims=(16, 32), diffusion_step_embed_dim=16)
    stats = {"state": {"min": [-0.5] * 8, "max": [0.5] * 8}, "action": {"min": [-1.0] * 2, "max": [1.0] * 2}}
    return DiffusionPolicy(cfg, stats)


def test_best_of_one_is_the_plain_policy(policy):
    selector = RewardSelector(REACH, unit(side=-1.0), identity_normalizer())

    def run(**kwargs):
        runner = ChunkRunner(policy, sampler="ddpm", config=RunnerConfig(inference_delay=0, seed=4, **kwargs),
                             selector=selector if kwargs else None)
        return np.stack([runner.act(START + 0.01 * k) for k in range(10)])

    np.testing.assert_array_equal(run(), run(num_candidates=1))


def test_best_of_n_follows_the_reward(policy, monkeypatch):
    """A policy whose chunks are bimodal (an exact two-mode mixture denoiser: up-left or up-right):
    with 8 candidates per chunk, a reward for passing left (right) makes every chunk go left (right)."""
    modes = torch.stack([torch.tensor([-0.6, 1.0]).expand(16, 2), torch.tensor([0.6, 1.0]).expand(16, 2)])
    mixture = GaussianMixtureDenoiser(modes, 0.05, None, policy.schedule)
    monkeypatch.setattr(policy, "denoiser", lambda: (lambda x, t, cond: mixture(x, t).float()))

    def lateral(weights):
        selector = RewardSelector(REACH, weights, identity_normalizer())
        runner = ChunkRunner(policy, sampler="ddpm", config=RunnerConfig(inference_delay=0, seed=4, num_candidates=8),
                             selector=selector)
        runner.reset(START)
        return np.stack([runner.act(START) for _ in range(24)])[:, 0]

    assert (lateral(unit(side=-1.0)) < 0).all() and (lateral(unit(side=1.0)) > 0).all()
    with pytest.raises(ValueError, match="needs a selector"):
        ChunkRunner(policy, config=RunnerConfig(num_candidates=4))


def test_loop_resumes_from_saved_state_with_identical_results(tmp_path):
    """Three batches in one go equal one batch, a restart from the saved state, then two more."""
    from policy_sampler.preference import PreferenceLoop, SimulatedPerson

    rng = np.random.default_rng(0)
    features = rng.standard_normal((40, 4))
    w_true = np.array([1.0, -0.5, 0.0, 0.3])

    def loop(path):
        person = SimulatedPerson(w_true, features, None)
        return PreferenceLoop(features, person.answer, path, batch_size=4, seed=3, n_samples=64, burn_in=50)

    whole = loop(tmp_path / "a.json")
    whole.run_until(12)
    first = loop(tmp_path / "b.json")
    first.step()
    resumed = loop(tmp_path / "b.json")
    assert resumed.n_answers == 4
    resumed.run_until(12)
    assert resumed.learner.answers == whole.learner.answers and resumed.history == whole.history
    assert len(whole.history) == 3
    with pytest.raises(ValueError, match="other learner options"):
        PreferenceLoop(features, None, tmp_path / "b.json", batch_size=5)


def test_unsure_components_are_left_out():
    """Posterior samples sure of the side weight but not of the effort weight: the point estimate
    keeps only the side."""
    rng = np.random.default_rng(0)
    samples = np.zeros((400, len(NAMES)))
    samples[:, NAMES.index("side")] = -0.8 + 0.05 * rng.standard_normal(400)
    samples[:, NAMES.index("effort")] = -0.3 + 0.3 * rng.standard_normal(400)
    selector = RewardSelector(REACH, samples, identity_normalizer())
    np.testing.assert_allclose(selector.weights, unit(side=-1.0), atol=1e-12)
    everything = RewardSelector(REACH, samples, identity_normalizer(), min_confidence=0.0)
    assert everything.weights[NAMES.index("effort")] < -0.1


def test_evaluate_with_a_saved_reward(policy, tmp_path):
    """evaluate() rows with reward-chosen actions from a saved selector (what evaluate.py reward.file= runs)."""
    from policy_sampler.rollout import RolloutConfig, SamplerSpec, evaluate, with_control

    path = RewardSelector(REACH, unit(side=-1.0), identity_normalizer()).save(tmp_path / "reward.json")
    specs = with_control([SamplerSpec("ddpm", "ddpm")], [0], reward=str(path), num_candidates=4)
    assert specs[0].label == "ddpm d=0 best-of-4" and specs[0].control["reward"] == str(path)
    report = evaluate(policy, TASK, specs, n_episodes=2, seed=0, rollout=RolloutConfig(max_steps=16), videos=0)
    assert all(e["length"] == 16 for e in report.reports[0].episodes)
