"""A LeRobot policy folder in our tools: load_policy, LeRobotPolicy.predict_action, ChunkRunner, the
dataset conversion and scripts/train_lerobot.py (run with .venv-lerobot; skipped without LeRobot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lerobot", reason="LeRobot is not installed (bash scripts/setup.sh --lerobot)")

from lerobot_helpers import lerobot_policy  # noqa: E402

from policy_sampler.control import ChunkRunner, RunnerConfig  # noqa: E402
from policy_sampler.integrations.lerobot import LeRobotPolicy  # noqa: E402
from policy_sampler.policy import load_policy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAYOUT = [["observation.state", 4], ["observation.environment_state", 4]]
STATS = {
    "observation.state": {"min": torch.full((4,), -2.0), "max": torch.full((4,), 3.0)},
    "observation.environment_state": {"min": torch.full((4,), -1.0), "max": torch.full((4,), 1.0)},
    "action": {"min": torch.tensor([-0.5, -2.0]), "max": torch.tensor([0.5, 1.0])},
}


def save_lerobot_folder(folder: Path, layout=LAYOUT, **overrides) -> tuple:
    """What LeRobot's trainer writes: the policy and its processors (save_pretrained), plus our layout."""
    from lerobot.policies.factory import make_pre_post_processors

    policy = lerobot_policy(**overrides)
    pre, post = make_pre_post_processors(policy.config, dataset_stats=STATS)
    for part in (policy, pre, post):
        part.save_pretrained(str(folder))
    if layout is not None:
        (folder / "policy_sampler.json").write_text(json.dumps({"task": "PolicySampler/ObstacleReach-v0",
                                                                "observation_layout": layout}))
    return policy, pre, post


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lerobot") / "checkpoints" / "last" / "pretrained_model"
    folder.mkdir(parents=True)
    policy, pre, post = save_lerobot_folder(folder)
    return folder.parents[2], policy, pre, post


def test_load_policy_reads_a_lerobot_training_output(saved):
    root, *_ = saved
    policy = load_policy(root)  # the training output folder: checkpoints/last/pretrained_model inside
    assert isinstance(policy, LeRobotPolicy)
    c = policy.config
    assert (c.horizon, c.n_obs_steps, c.n_action_steps, c.action_dim) == (16, 2, 8, 2)
    assert c.obs_keys == ("state",) and c.obs_key_dims == (8,)
    assert policy.schedule.num_steps == 100 and policy.schedule_for(10).num_steps == 10
    assert policy.metadata["task"] == "PolicySampler/ObstacleReach-v0" and policy.metadata["format"] == "lerobot"
    assert policy.device == torch.device("cpu")


def test_predict_action_equals_lerobots_pipeline(saved):
    root, lerobot, pre, post = saved
    policy = load_policy(root)
    obs = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0)) * 2
    torch.manual_seed(4)
    out = policy.predict_action({"state": obs}, sampler="ddpm")
    batch = pre({"observation.state": obs[..., :4], "observation.environment_state": obs[..., 4:]})
    lerobot.reset()
    torch.manual_seed(4)
    reference = post(lerobot.predict_action_chunk(batch))  # LeRobot's own: normalize, sample, unnormalize
    assert out.actions.shape == (3, 8, 2) and out.chunk.shape == (3, 16, 2)
    assert float((out.actions - reference).abs().max()) < 1e-4
    assert (out.rounds, out.nfe, out.info["sampler"]) == (100, 100, "ddpm")
    # the action normalizer is LeRobot's min-max: [min, max] <-> [-1, 1], and the two directions invert
    normalized = policy.normalizer.normalize("action", out.chunk)
    assert torch.allclose(policy.normalizer.unnormalize("action", normalized), out.chunk, atol=1e-5)
    assert torch.allclose(policy.normalizer.normalize("action", torch.tensor([[0.5, -2.0]])), torch.tensor([[1.0, -1.0]]))
    # our generator: reproducible, and any sampler with its options
    a = policy.predict_action({"state": obs}, sampler="paradigms", generator=torch.Generator().manual_seed(1), tolerance=0.05)
    b = policy.predict_action({"state": obs}, sampler="paradigms", generator=torch.Generator().manual_seed(1), tolerance=0.05)
    assert torch.equal(a.chunk, b.chunk) and a.rounds < 100
    ddim = policy.predict_action({"state": obs}, sampler="ddim", num_inference_steps=10)
    assert ddim.rounds == 10 and ddim.info["num_inference_steps"] == 10


def test_chunk_runner_runs_a_lerobot_policy(saved):
    policy = load_policy(saved[0])
    rng = np.random.default_rng(0)
    runner = ChunkRunner(policy, sampler="speculative_picard", config=RunnerConfig(inference_delay=0, seed=0))
    runner.reset()
    actions = [runner.act(rng.normal(size=8).astype(np.float32)) for _ in range(20)]
    assert all(a.shape == (2,) and np.isfinite(a).all() for a in actions)
    stats = runner.stats()
    assert stats["chunks"] == 3 and stats["misses"] == 0 and stats["rounds_mean"] < 100
    # real-time chunking guides LeRobot's U-Net through autograd (the differentiable denoiser)
    rtc = ChunkRunner(policy, sampler="ddim",
                      config=RunnerConfig(inference_delay=2, smoothing="rtc", num_inference_steps=10, seed=0))
    rtc.reset()
    assert all(np.isfinite(rtc.act(rng.normal(size=8).astype(np.float32))).all() for _ in range(12))
    # a delay longer than a chunk: the few-step DDIM fallback (schedule_for(4)) serves the late ticks
    late = ChunkRunner(policy, sampler="ddpm", config=RunnerConfig(inference_delay=12, seed=0))
    late.reset()
    for _ in range(24):
        late.act(rng.normal(size=8).astype(np.float32))
    assert late.stats()["fallback_ddim"] > 0


def test_evaluate_script_takes_a_lerobot_folder(saved, tmp_path):
    root, *_ = saved  # a lerobot-train output: its task comes from policy_sampler.json
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), f"checkpoint={root}",
                           "samplers=[ddpm,speculative_picard]", "baselines=[{label: ddim-10, sampler: ddim, "
                           "num_inference_steps: 10}]", "n_episodes=2", "max_steps=12", "videos=0", "progress=false",
                           f"out_dir={tmp_path / 'eval'}"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["task"] == "PolicySampler/ObstacleReach-v0"
    assert report["checkpoint_metadata"]["format"] == "lerobot"
    rows = {row["label"]: row for row in report["results"]}
    assert set(rows) == {"ddpm", "speculative_picard", "ddim-10"}
    assert rows["ddpm"]["rounds_mean"] == 100 and rows["ddim-10"]["rounds_mean"] == 10
    assert rows["speculative_picard"]["rounds_mean"] < 100


def test_lerobot_keys_without_a_layout(tmp_path):
    save_lerobot_folder(tmp_path, layout=None)
    policy = load_policy(tmp_path)
    assert policy.config.obs_keys == ("observation.state", "observation.environment_state")
    obs = {"observation.state": torch.zeros(1, 2, 4), "observation.environment_state": torch.zeros(1, 2, 4)}
    assert policy.predict_action(obs, sampler="ddim", num_inference_steps=5).actions.shape == (1, 8, 2)


def test_loading_an_image_policy_trained_from_imagenet_weights_downloads_nothing(tmp_path, monkeypatch):
    import torchvision.models._api

    lerobot, *_ = save_lerobot_folder(tmp_path, layout=None, image=True, use_group_norm=False)
    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrained_backbone_weights"] = "ResNet18_Weights.IMAGENET1K_V1"  # LeRobot's default
    (tmp_path / "config.json").write_text(json.dumps(config))

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    policy = load_policy(tmp_path)
    assert "observation.image" in policy.config.obs_keys
    saved_weights, loaded_weights = lerobot.state_dict(), policy.policy.state_dict()
    assert saved_weights.keys() == loaded_weights.keys()
    assert all(torch.equal(saved_weights[k], loaded_weights[k]) for k in saved_weights)


def test_clear_errors(saved, tmp_path):
    policy = load_policy(saved[0])
    with pytest.raises(ValueError, match=r"obs is missing key\(s\) \['state'\]"):
        policy.predict_action({"observation.state": torch.zeros(1, 2, 4)})
    with pytest.raises(ValueError, match=r"obs\['state'\] must have shape \[B, n_obs_steps=2, \.\.\.\] with 8 values"):
        policy.predict_action({"state": torch.zeros(1, 2, 7)})
    with pytest.raises(ValueError, match="contains NaN"):
        policy.predict_action({"state": torch.full((1, 2, 8), float("nan"))})
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        policy.predict_action({"state": torch.zeros(1, 2, 8)}, sampler="nope")
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 100\]"):
        policy.schedule_for(101)
    with pytest.raises(FileNotFoundError, match="nor a LeRobot policy folder"):
        load_policy(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    save_lerobot_folder(bad, layout=[["observation.state", 4], ["observation.environment_state", 3]])
    with pytest.raises(ValueError, match="observation_layout .* must split the flat observation"):
        load_policy(bad)
    act = tmp_path / "act"
    act.mkdir()
    for name in ("model.safetensors", "policy_preprocessor.json"):
        (act / name).write_text("{}")
    (act / "config.json").write_text(json.dumps({"type": "act"}))
    with pytest.raises(ValueError, match="type 'act', which is not supported"):
        load_policy(act)


def test_demos_become_a_lerobot_dataset(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from policy_sampler.data.demos import collect, make_env_args, write_robomimic_hdf5
    from policy_sampler.integrations.lerobot.dataset import write_lerobot_dataset

    task = "PolicySampler/ObstacleReach-v0"
    demos = tmp_path / "reach.hdf5"
    write_robomimic_hdf5(demos, collect(task, n_demos=3, seed=0, progress=False), env_args=make_env_args(task), valid_fraction=0.0)
    info = write_lerobot_dataset(demos, tmp_path / "dataset", "local/reach", state_dim=4)
    assert info["episodes"] == 3 and info["task"] == task
    assert info["observation_layout"] == LAYOUT
    dataset = LeRobotDataset("local/reach", root=tmp_path / "dataset")
    import h5py

    with h5py.File(demos) as f:
        obs, actions = f["data/demo_1/obs/state"][()], f["data/demo_1/actions"][()]
    first = len(h5py.File(demos)["data/demo_0/actions"])
    frame = dataset[first + 2]  # episode 1, step 2
    assert int(frame["episode_index"]) == 1
    np.testing.assert_allclose(frame["observation.state"].numpy(), obs[2, :4])
    np.testing.assert_allclose(frame["observation.environment_state"].numpy(), obs[2, 4:])
    np.testing.assert_allclose(frame["action"].numpy(), actions[2])
    with pytest.raises(ValueError, match="exists"):
        write_lerobot_dataset(demos, tmp_path / "dataset", "local/reach", state_dim=4)
    with pytest.raises(ValueError, match="state_dim=8 must be below"):
        write_lerobot_dataset(demos, tmp_path / "other", "local/reach", state_dim=8)
    assert not (tmp_path / "other").exists()


def test_train_lerobot_script_trains_with_lerobots_trainer_offline(tmp_path):
    from policy_sampler.data.demos import collect, make_env_args, write_robomimic_hdf5

    task = "PolicySampler/ObstacleReach-v0"
    demos = tmp_path / "reach.hdf5"
    write_robomimic_hdf5(demos, collect(task, n_demos=4, seed=0, progress=False), env_args=make_env_args(task), valid_fraction=0.0)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train_lerobot.py"), f"demos={demos}",
                           f"out_dir={out}", "steps=3", "batch_size=8"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:] + (out / "train.log").read_text()[-2000:]
    policy = load_policy(out / "train")
    assert isinstance(policy, LeRobotPolicy) and policy.metadata["task"] == task
    assert policy.metadata["trained_by"].startswith("lerobot-train") and policy.metadata["steps"] == 3
    assert policy.predict_action({"state": torch.zeros(1, 2, 8)}, sampler="ddim", num_inference_steps=4).actions.shape == (1, 8, 2)
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "train_lerobot.py"), f"demos={demos}",
                            f"out_dir={out}"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr
