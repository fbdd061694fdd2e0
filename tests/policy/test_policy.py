"""DiffusionPolicy: config, normalizer, training, checkpoints, every sampler through predict_action,
observation checks, and scripts/train.py end to end. Tiny models on a synthetic demo file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from policy_sampler import DiffusionPolicy, available_samplers
from policy_sampler.policy import DiffusionPolicyConfig, Normalizer, PolicyOutput
from policy_sampler.policy import diffusion_policy as dp_module
from policy_sampler.training import EMA, TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
OBS_DIM, ACT_DIM = 3, 2
ACT_LO, ACT_HI = 0.0, 10.0

# A tiny policy: horizon 8, U-Net (16, 32), 10 inference steps of a 20-step training schedule.
TINY = dict(
    horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=8,
    diffusion_step_embed_dim=16, num_train_timesteps=20, num_inference_steps=10,
)


def write_fixture(path: Path, n_demos: int = 8, length: int = 30, seed: int = 0) -> Path:
    """robomimic's layout: data/demo_<i>/{obs/state, actions}, num_samples, mask/{train, valid}.
    State = (cos, sin, constant); actions in [ACT_LO, ACT_HI] follow the state's phase."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for i in range(n_demos):
            phase = rng.uniform(0, 2 * np.pi) + 0.2 * np.arange(length)
            state = np.stack([np.cos(phase), np.sin(phase), np.full(length, 0.5)], axis=1).astype(np.float32)
            action = np.stack([np.cos(phase + 0.2), np.sin(phase + 0.2)], axis=1)
            action = (ACT_LO + (ACT_HI - ACT_LO) * (action + 1) / 2).astype(np.float32)
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = np.int64(length)
            demo.create_dataset("obs/state", data=state)
            demo.create_dataset("next_obs/state", data=np.roll(state, -1, axis=0))
            demo.create_dataset("actions", data=action)
            total += length
        data.attrs["total"] = np.int64(total)
        data.attrs["env_args"] = json.dumps({"env_name": "Synthetic-v0", "type": "gymnasium", "env_kwargs": {}})
        names = [f"demo_{i}".encode() for i in range(n_demos)]
        f.create_dataset("mask/train", data=np.array(names[:-2], dtype="S"))
        f.create_dataset("mask/valid", data=np.array(names[-2:], dtype="S"))
    return path


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("demos") / "demos.hdf5")


@pytest.fixture(scope="module")
def trained(demo_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train(
        dict(TINY), demo_file, out,
        TrainConfig(steps=30, batch_size=32, lr=2e-3, warmup_steps=2, val_every=10, seed=0, progress=False),
        metadata={"task": "Synthetic-v0"},
    )
    return result


@pytest.fixture(scope="module")
def policy(trained) -> DiffusionPolicy:
    return DiffusionPolicy.load(trained.last_path)


def make_obs(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(batch, 1, generator=g) * 2 * torch.pi + torch.tensor([0.0, 0.2])
    state = torch.stack([phase.cos(), phase.sin(), torch.full_like(phase, 0.5)], dim=-1)
    return {"state": state}  # [B, 2, 3]


# ----------------------------------------------------------------------------- config
def test_config_round_trip_and_defaults():
    c = DiffusionPolicyConfig(obs_dim=5, action_dim=2)
    assert (c.horizon, c.n_obs_steps, c.n_action_steps) == (16, 2, 8)
    assert c.down_dims == (256, 512, 1024) and c.num_inference_steps == 100
    assert c.beta_schedule == "squaredcos_cap_v2" and c.prediction_type == "epsilon" and c.clip_sample
    assert c.global_cond_dim == 10 and c.action_slice == slice(1, 9)
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert DiffusionPolicyConfig.from_dict(d) == c


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(obs_dim=0), "obs_dim"),
        (dict(action_dim=-1), "action_dim"),
        (dict(horizon=10), "horizon"),  # not a multiple of 4 with three levels
        (dict(n_action_steps=16), "n_action_steps"),
        (dict(down_dims=(12, 24)), "down_dims"),
        (dict(num_inference_steps=200), "num_inference_steps"),
        (dict(beta_schedule="cosine"), "beta_schedule"),
        (dict(prediction_type="noise"), "prediction_type"),
        (dict(obs_keys=("a", "b")), "obs_key_dims"),
        (dict(obs_keys=("bad key",)), "obs_keys"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    kwargs = dict(obs_dim=4, action_dim=2)
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=field):
        DiffusionPolicyConfig(**kwargs)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="horizn"):
        DiffusionPolicyConfig.from_dict({"obs_dim": 2, "action_dim": 2, "horizn": 8})


# ----------------------------------------------------------------------------- normalizer
def test_normalizer_round_trip_and_constant_dims():
    lo = torch.tensor([0.0, -5.0, 3.0])
    hi = torch.tensor([10.0, 5.0, 3.0])  # last dim constant
    norm = Normalizer({"x": 3}).fit({"x": {"min": lo, "max": hi}})
    x = torch.stack([lo, hi, (lo + hi) / 2])
    y = norm.normalize("x", x)
    assert torch.allclose(y[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(y[:, 2], torch.zeros(3))  # constant dim: centred, not divided by ~0
    assert torch.allclose(norm.normalize("x", torch.tensor([[0.0, 0.0, 3.5]]))[0, 2], torch.tensor(0.5))
    z = torch.randn(5, 7, 3) * 20
    assert torch.allclose(norm.unnormalize("x", norm.normalize("x", z)), z, atol=1e-4)
    fresh = Normalizer({"x": 3})
    fresh.load_state_dict(norm.state_dict())
    assert bool(fresh.fitted) and torch.equal(fresh.normalize("x", z), norm.normalize("x", z))
    with pytest.raises(ValueError, match="'y'"):
        norm.normalize("y", z)
    with pytest.raises(ValueError, match="lack"):
        Normalizer({"x": 3, "action": 2}).fit({"x": {"min": lo, "max": hi}})


def test_ema_power_schedule():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ema = EMA(a, b, power=0.75, max_decay=0.9999)
    assert ema.step() == 0.0 and torch.equal(a.weight, b.weight)  # first step copies
    assert ema.get_decay(10) == pytest.approx(1 - 10 ** -0.75)
    assert EMA(a, b, power=None, max_decay=0.9).get_decay(5) == 0.9


# ----------------------------------------------------------------------------- training
def test_training_loss_falls_and_writes_checkpoints(trained):
    losses = trained.train_losses
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert [s for s, _ in trained.val_losses] == [10, 20, 30]
    for path in (trained.best_path, trained.last_path):
        assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    doc = json.loads((trained.last_path / "config.json").read_text())
    assert doc["metadata"]["task"] == "Synthetic-v0" and doc["metadata"]["step"] == 30
    assert doc["policy"]["obs_dim"] == OBS_DIM and doc["policy"]["action_dim"] == ACT_DIM
    assert doc["dataset_stats"]["action"]["max"] == pytest.approx([ACT_HI, ACT_HI], abs=0.1)
    assert (trained.out_dir / "train_log.json").is_file()
    assert not [n for n in os.listdir(trained.out_dir) if n.startswith(".")]


def test_compute_loss_checks_the_batch(policy):
    batch = {"obs": make_obs(4), "action": torch.zeros(4, TINY["horizon"] + 1, ACT_DIM)}
    with pytest.raises(ValueError, match="action"):
        policy.compute_loss(batch)


# ----------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_gives_identical_actions(policy, trained, tmp_path):
    obs = make_obs(2)
    path = policy.save(tmp_path / "ckpt")
    again = DiffusionPolicy.load(path)
    for sampler in ("ddpm", "paradigms"):
        a = policy.predict_action(obs, sampler=sampler, generator=torch.Generator().manual_seed(3))
        b = again.predict_action(obs, sampler=sampler, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.actions, b.actions) and torch.equal(a.chunk, b.chunk)
    for k, v in policy.ema_model.state_dict().items():
        assert torch.equal(v, again.ema_model.state_dict()[k])
    assert torch.equal(again.normalizer.fields["action"].max, policy.normalizer.fields["action"].max)
    # a training run directory loads its best checkpoint
    best = DiffusionPolicy.load(trained.out_dir)
    assert best.metadata.get("best") is True


def test_save_is_atomic(policy, tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    policy.save(target)
    before = {n: (target / n).read_bytes() for n in os.listdir(target)}

    def broken_dump(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(dp_module.json, "dumps", broken_dump)
    with pytest.raises(OSError, match="simulated"):
        policy.save(target)  # over an existing checkpoint: it stays as it was
    with pytest.raises(OSError, match="simulated"):
        policy.save(tmp_path / "fresh")  # a new one: nothing appears
    monkeypatch.undo()
    assert {n: (target / n).read_bytes() for n in os.listdir(target)} == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temp or partial directories
    DiffusionPolicy.load(target)


# ----------------------------------------------------------------------------- predict_action
@pytest.mark.parametrize("name", available_samplers())
def test_every_sampler_through_predict_action(policy, name):
    out = policy.predict_action(make_obs(3), sampler=name, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PolicyOutput)
    assert out.actions.shape == (3, TINY["n_action_steps"], ACT_DIM)
    assert out.chunk.shape == (3, TINY["horizon"], ACT_DIM)
    start = TINY["n_obs_steps"] - 1
    assert torch.equal(out.actions, out.chunk[:, start:start + TINY["n_action_steps"]])
    assert isinstance(out.rounds, int) and 1 <= out.rounds
    assert isinstance(out.nfe, int) and out.nfe >= 1
    assert out.info["sampler"] == name
    assert torch.isfinite(out.chunk).all()


def test_actions_are_unnormalized(policy):
    out = policy.predict_action(make_obs(8), generator=torch.Generator().manual_seed(1))
    chunk = out.chunk
    # clip_sample keeps the normalized chunk in [-1, 1], i.e. the data range [0, 10] once unnormalized
    assert chunk.min() >= ACT_LO - 1e-3 and chunk.max() <= ACT_HI + 1e-3
    assert chunk.max() > 1.5  # not the normalized [-1, 1] values
    assert (out.rounds, out.nfe) == (TINY["num_inference_steps"],) * 2


def test_ddpm_and_paradigms_agree_on_shared_noise(policy):
    obs = make_obs(2)
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(2, TINY["horizon"], ACT_DIM, generator=g)
    noise = torch.randn(TINY["num_inference_steps"], 2, TINY["horizon"], ACT_DIM, generator=g)
    ref = policy.predict_action(obs, sampler="ddpm", x_T=x_T, noise=noise)
    fast = policy.predict_action(obs, sampler="paradigms", tolerance=1e-4, x_T=x_T, noise=noise)
    assert torch.allclose(ref.chunk, fast.chunk, atol=1e-2)
    assert fast.rounds <= ref.rounds


@pytest.mark.parametrize(
    "obs, match",
    [
        ({}, "missing key"),
        ({"state": torch.zeros(2, 3, OBS_DIM)}, "'state'.*shape"),
        ({"state": torch.zeros(2, 2, OBS_DIM + 1)}, "'state'.*shape"),
        ({"state": torch.zeros(2, OBS_DIM)}, "'state'.*shape"),
        ({"state": torch.zeros(2, 2, OBS_DIM, dtype=torch.long)}, "'state'.*floating"),
        ({"state": torch.full((2, 2, OBS_DIM), float("nan"))}, "'state'.*NaN"),
        ({"state": torch.full((2, 2, OBS_DIM), float("inf"))}, "'state'.*inf"),
        ([1, 2], "dict"),
    ],
)
def test_bad_observations_raise(policy, obs, match):
    with pytest.raises(ValueError, match=match):
        policy.predict_action(obs)


def test_bad_sampler_and_x_T(policy):
    with pytest.raises(ValueError, match="unknown sampler"):
        policy.predict_action(make_obs(1), sampler="nope")
    with pytest.raises(ValueError, match="x_T"):
        policy.predict_action(make_obs(1), x_T=torch.zeros(1, 3, ACT_DIM))


# ----------------------------------------------------------------------------- scripts/train.py
def test_train_script_end_to_end(demo_file, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(demo_file, work / "demos.hdf5")
    repo_before = set(os.listdir(REPO))
    cmd = [
        sys.executable, str(REPO / "scripts" / "train.py"), "task=Synthetic-v0", "dataset=demos.hdf5",
        "out_dir=runs/tiny", "policy=small", "policy.down_dims=[16,32]", "policy.horizon=8",
        "policy.n_action_steps=4", "policy.diffusion_step_embed_dim=16", "policy.num_inference_steps=10",
        "train.steps=20", "train.batch_size=32", "train.val_every=10", "train.warmup_steps=2",
        "train.progress=false", "train.num_threads=1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "trained 20 steps" in proc.stdout
    assert sorted(os.listdir(work)) == ["demos.hdf5", "runs"]  # no outputs/, .hydra/ or log file
    assert set(os.listdir(REPO)) == repo_before
    assert sorted(os.listdir(work / "runs" / "tiny")) == ["best", "last", "train_log.json"]
    loaded = DiffusionPolicy.load(work / "runs" / "tiny" / "last")
    assert loaded.config.down_dims == (16, 32) and loaded.metadata["task"] == "Synthetic-v0"
    out = loaded.predict_action(make_obs(2), generator=torch.Generator().manual_seed(0))
    assert out.actions.shape == (2, 4, ACT_DIM) and out.rounds == 10


def test_train_script_requires_dataset_and_task(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "train.steps=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "task" in proc.stderr and "dataset" in proc.stderr
    assert os.listdir(tmp_path) == []
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "task=T", "dataset=nope.hdf5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "nope.hdf5" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_train_script_reports_bad_policy_settings(demo_file, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "task=T", f"dataset={demo_file}",
         "out_dir=run", "policy.horizon=10", "train.steps=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 2 and "horizon" in proc.stderr, proc.stderr[-2000:]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["small", "paper"])
def test_policy_configs_compose(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"policy={name}", "task=T", "dataset=d.hdf5"],
                      return_hydra_config=True)
    config = DiffusionPolicyConfig.from_dict(dict(OmegaConf.to_container(cfg.policy), obs_dim=10, action_dim=2))
    assert (config.horizon, config.n_obs_steps, config.n_action_steps) == (16, 2, 8)
    assert config.down_dims == ((256, 512, 1024) if name == "paper" else (32, 64, 128))
    assert cfg.hydra.output_subdir is None and cfg.out_dir == "checkpoints/T"
