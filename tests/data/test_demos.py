"""Demo collection (policy_sampler.data.demos) and scripts/collect_demos.py.

robomimic's ``SequenceDataset`` with frame_stack=2, seq_length=16 (DiffusionPolicy's
n_obs_steps=2, horizon=16), both ends padded, returns one item per demo step ``t`` holding 17
frames, steps ``t-1 .. t+15``: ``obs/state`` (17, obs_dim), ``actions`` (17, act_dim),
``pad_mask`` (17, 1) (False on repeated padding frames, at either end; also under
``obs/pad_mask``). DiffusionPolicy's window for step ``t`` is its first 16 frames:
obs = frames 0..1 (steps t-1, t), action = frames 0..15 (steps t-1 .. t+14); the executed
actions are action[1 : 1 + n_action_steps]. ``test_sequence_dataset_windows`` checks exactly
that against the raw arrays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import h5py
import numpy as np
import pytest
from gymnasium import spaces

import policy_sampler_envs
from policy_sampler.data import demos
from policy_sampler.data import (
    NotEnoughDemosError,
    collect,
    collect_episode,
    dataset_statistics,
    diffusion_policy_window,
    load_sequence_dataset,
    make_env_args,
    split_train_valid,
    write_robomimic_hdf5,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "collect_demos.py"
PYTHON = sys.executable
REACH = "PolicySampler/ObstacleReach-v0"
HAS_REACH = REACH in policy_sampler_envs.available_tasks()
needs_reach = pytest.mark.skipif(not HAS_REACH, reason=f"{REACH} is not registered")


# ----------------------------------------------------------------------------- stand-in task
class ToyEnv(gymnasium.Env):
    """1-d reach: x starts near 0, the goal is 1; obs [x, goal]; success within 0.05."""

    def __init__(self):
        self.observation_space = spaces.Box(-5.0, 5.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.x = 0.0

    def _obs(self):
        return np.array([self.x, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.1, 0.1))
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.x += 0.2 * float(np.clip(action, -1, 1)[0])
        success = abs(self.x - 1.0) < 0.05
        return self._obs(), -abs(self.x - 1.0), False, False, {"is_success": success, "tag": "toy"}


class ToyExpert:
    """Goes to the goal, except on about 30% of seeds where it walks away (fails)."""

    def __init__(self, env):
        self.reset(0)

    def reset(self, seed=None):
        rng = np.random.default_rng(seed)
        self.bad = rng.random() < 0.3
        self.gain = rng.uniform(0.5, 1.0)

    def act(self, obs):
        direction = -1.0 if self.bad else np.sign(obs[1] - obs[0])
        return np.array([direction * min(1.0, self.gain * 5 * abs(obs[1] - obs[0]) + 0.1)], np.float32)


TOY = "PolicySamplerTest/Toy-v0"


@pytest.fixture(scope="module", autouse=True)
def toy_task():
    """Registers the stand-in task for this module only (other suites may iterate the registry)."""
    policy_sampler_envs.register_task(TOY, entry_point=ToyEnv, max_episode_steps=40, expert=ToyExpert)
    yield TOY
    policy_sampler_envs.registry._EXPERTS.pop(TOY, None)
    gymnasium.registry.pop(TOY, None)


@pytest.fixture(scope="module")
def reach_file(tmp_path_factory):
    episodes = collect(REACH, 6, seed=0, progress=False)
    path = tmp_path_factory.mktemp("reach") / "reach.hdf5"
    with gymnasium.make(REACH) as env:
        env_args = make_env_args(REACH, env)
    write_robomimic_hdf5(path, episodes, env_args, valid_fraction=0.2, seed=0)
    return path, episodes


def _listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# ----------------------------------------------------------------------------- collection
def test_collect_episode_arrays_are_aligned():
    env = gymnasium.make(TOY)
    expert = policy_sampler_envs.make_expert(TOY, env)
    ep = collect_episode(env, expert, seed=3)
    T = len(ep)
    assert ep.observations.shape == ep.next_observations.shape == (T, 2)
    assert ep.actions.shape == (T, 1) and ep.rewards.shape == (T,) and ep.dones.shape == (T,)
    assert ep.observations.dtype == ep.actions.dtype == ep.rewards.dtype == np.float32
    assert ep.dones.dtype == np.int64 and ep.dones.tolist() == [0] * (T - 1) + [1]
    np.testing.assert_array_equal(ep.observations[1:], ep.next_observations[:-1])
    assert ep.seed == 3 and ep.expert_seed == demos.expert_seed(3) != 3
    assert ep.info["tag"] == "toy" and ep.side is None
    if ep.success:  # stop_on_success: ends at the first success
        assert ep.info["is_success"] and ep.terminated is False


def test_keep_only_successful_and_attempt_counts():
    kept = collect(TOY, 8, seed=0, progress=False)
    assert len(kept) == 8 and all(ep.success for ep in kept)
    assert kept.successes == 8 and kept.attempts > 8  # some seeds fail (ToyExpert.bad)
    seeds = [ep.seed for ep in kept]
    assert seeds == sorted(seeds) and seeds[-1] == kept.attempts - 1
    everything = collect(TOY, kept.attempts, seed=0, keep_only_successful=False, progress=False)
    assert len(everything) == kept.attempts and everything.successes == 8
    assert [ep.seed for ep in everything if ep.success] == seeds
    assert not all(ep.success for ep in everything)
    assert everything.summary() == f"expert success: 8/{kept.attempts} = {800 / kept.attempts:.1f}%"
    with pytest.raises(NotEnoughDemosError) as info:
        collect(TOY, 8, seed=0, max_attempts=8, progress=False)
    assert info.value.episodes.attempts == 8 and len(info.value.episodes) < 8
    with pytest.raises(ValueError, match="n_demos"):
        collect(TOY, 0, progress=False)
    with pytest.raises(ValueError, match="available tasks"):
        collect("PolicySampler/NoSuchTask-v0", 1, progress=False)


# ----------------------------------------------------------------------------- layout
@needs_reach
def test_hdf5_layout(reach_file):
    path, episodes = reach_file
    with h5py.File(path, "r") as f:
        assert set(f) == {"data", "mask"}
        data = f["data"]
        assert sorted(data, key=lambda n: int(n[5:])) == [f"demo_{i}" for i in range(6)]
        assert data.attrs["total"] == sum(len(e) for e in episodes)
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == REACH and env_args["type"] == "gymnasium"
        assert isinstance(env_args["env_kwargs"], dict)
        for i, ep in enumerate(episodes):
            g = data[f"demo_{i}"]
            T = len(ep)
            assert set(g) == {"obs", "next_obs", "actions", "rewards", "dones"}
            assert list(g["obs"]) == ["state"] and list(g["next_obs"]) == ["state"]
            assert g.attrs["num_samples"] == T and g.attrs["seed"] == ep.seed == i
            assert bool(g.attrs["success"]) is True and g.attrs["side"] in ("left", "right")
            assert g.attrs["side"] == ep.side
            for key, shape, dtype in [("obs/state", (T, 8), np.float32), ("next_obs/state", (T, 8), np.float32),
                                      ("actions", (T, 2), np.float32), ("rewards", (T,), np.float32),
                                      ("dones", (T,), np.int64)]:
                assert g[key].shape == shape and g[key].dtype == dtype, key
            np.testing.assert_array_equal(g["obs/state"][()], ep.observations)
            np.testing.assert_array_equal(g["actions"][()], ep.actions)
            assert g["dones"][()].sum() == 1 and g["dones"][-1] == 1
        train = [n.decode() for n in f["mask/train"][()]]
        valid = [n.decode() for n in f["mask/valid"][()]]
        assert f["mask/train"].dtype.kind == "S"
    assert len(valid) == 1 and len(train) == 5 and sorted(train + valid) == sorted(f"demo_{i}" for i in range(6))


def test_mask_split():
    names = [f"demo_{i}" for i in range(20)]
    train, valid = split_train_valid(names, 0.1, seed=0)
    assert len(valid) == 2 and len(train) == 18 and set(train) | set(valid) == set(names)
    assert not set(train) & set(valid)
    assert split_train_valid(names, 0.1, seed=0) == (train, valid)
    assert split_train_valid(names, 0.1, seed=1)[1] != valid
    assert split_train_valid(names[:1], 0.1) == (["demo_0"], [])  # train never empty
    assert len(split_train_valid(names[:3], 0.1)[1]) == 1  # valid non-empty when possible
    assert split_train_valid(names, 0.0)[1] == []
    with pytest.raises(ValueError, match="valid_fraction"):
        split_train_valid(names, 1.0)


# ----------------------------------------------------------------------------- loading
@needs_reach
def test_sequence_dataset_windows(reach_file):
    from diffusers import UNet1DModel  # noqa: F401  diffusers' models beside robomimic's loader

    path, episodes = reach_file
    ds = load_sequence_dataset(path, n_obs_steps=2, horizon=16, split="train")
    with h5py.File(path, "r") as f:
        train = sorted((n.decode() for n in f["mask/train"][()]), key=lambda n: int(n[5:]))
    lengths = [len(episodes[int(n[5:])]) for n in train]
    assert len(ds) == sum(lengths)
    assert len(load_sequence_dataset(path, split="valid")) == sum(len(e) for e in episodes) - len(ds)

    ep = episodes[int(train[0][5:])]
    T = len(ep)
    for t in (0, 1, 5, T - 8, T - 1):
        item = ds[t]
        assert item["obs"]["state"].shape == (17, 8) and item["actions"].shape == (17, 2)
        assert item["pad_mask"].shape == (17, 1) and item["pad_mask"].dtype == bool
        steps = np.clip(np.arange(t - 1, t + 16), 0, T - 1)  # frames t-1..t+15, padded by repetition
        np.testing.assert_array_equal(item["obs"]["state"], ep.observations[steps])
        np.testing.assert_array_equal(item["actions"], ep.actions[steps])
        real = (np.arange(t - 1, t + 16) >= 0) & (np.arange(t - 1, t + 16) < T)
        np.testing.assert_array_equal(item["pad_mask"][:, 0], real)
        window = diffusion_policy_window(item, n_obs_steps=2, horizon=16)
        np.testing.assert_array_equal(window["obs"], ep.observations[steps[:2]])  # steps t-1, t
        np.testing.assert_array_equal(window["action"], ep.actions[steps[:16]])  # steps t-1..t+14
        assert window["pad_mask"].shape == (16,)

    import torch

    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["obs"]["state"].shape == (4, 17, 8) and batch["actions"].dtype == torch.float32


@needs_reach
def test_dataset_statistics(reach_file):
    path, episodes = reach_file
    with h5py.File(path, "r") as f:
        train = [int(n.decode()[5:]) for n in f["mask/train"][()]]
    stats = dataset_statistics(path)
    obs = np.concatenate([episodes[i].observations for i in train])
    act = np.concatenate([episodes[i].actions for i in train])
    np.testing.assert_array_equal(stats["obs"]["state"]["min"], obs.min(0))
    np.testing.assert_array_equal(stats["obs"]["state"]["max"], obs.max(0))
    np.testing.assert_array_equal(stats["actions"]["min"], act.min(0))
    np.testing.assert_array_equal(stats["actions"]["max"], act.max(0))
    assert stats["n_demos"] == len(train) and stats["n_samples"] == len(act)


# ----------------------------------------------------------------------------- determinism, atomicity
def test_same_seed_same_bytes(tmp_path):
    env_args = {"env_name": TOY, "type": "gymnasium", "env_kwargs": {}}
    paths = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        episodes = collect(TOY, 4, seed=seed, progress=False)
        paths.append(write_robomimic_hdf5(tmp_path / f"{name}.hdf5", episodes, env_args, seed=seed))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def _episodes(n=3):
    return collect(TOY, n, seed=0, progress=False)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write(tmp_path, monkeypatch, error):
    episodes = _episodes()
    env_args = {"env_name": TOY, "type": "gymnasium", "env_kwargs": {}}
    final = tmp_path / "demos.hdf5"
    calls = []
    original = demos._write_demo

    def failing(group, episode):
        calls.append(_listing(tmp_path))
        if len(calls) == 2:
            raise error("simulated failure mid-write")
        original(group, episode)

    monkeypatch.setattr(demos, "_write_demo", failing)
    with pytest.raises(error):
        write_robomimic_hdf5(final, episodes, env_args)
    assert calls[1] == {f".demos.tmp-{os.getpid()}.hdf5"}  # a temp file existed mid-write...
    assert _listing(tmp_path) == set()  # ...and nothing is left
    final.write_bytes(b"previous")
    calls.clear()
    with pytest.raises(error):
        write_robomimic_hdf5(final, episodes, env_args)
    assert _listing(tmp_path) == {"demos.hdf5"} and final.read_bytes() == b"previous"
    monkeypatch.setattr(demos, "_write_demo", original)
    write_robomimic_hdf5(final, episodes, env_args)  # replaces it once complete
    assert _listing(tmp_path) == {"demos.hdf5"} and h5py.is_hdf5(final)


def test_unwritable_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, why in [(tmp_path / "missing" / "d.hdf5", "does not exist"),
                     (tmp_path / "file" / "d.hdf5", "not a directory"),
                     (tmp_path, "is a directory"),
                     (Path("/proc/d.hdf5"), "not writable")]:
        with pytest.raises(ValueError, match=why):
            write_robomimic_hdf5(bad, _episodes(1), {"env_name": TOY})
    assert _listing(tmp_path) == {"file"}


# ----------------------------------------------------------------------------- the script
def _script(*args, cwd):
    return subprocess.Popen([PYTHON, str(SCRIPT), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_script_bad_arguments(tmp_path):
    (tmp_path / "file").write_text("x")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    task = REACH if HAS_REACH else policy_sampler_envs.available_tasks()[0]
    cases = {
        "unknown task": (["task=PolicySampler/NoSuchTask-v0", "n_demos=2", "out=d.hdf5"], "available tasks"),
        "n_demos=0": ([f"task={task}", "n_demos=0", "out=d.hdf5"], "n_demos must be an integer >= 1"),
        "missing dir": ([f"task={task}", "n_demos=2", "out=/nonexistent_root_dir_xyz/d.hdf5"], "does not exist"),
        "read-only": ([f"task={task}", "n_demos=2", "out=/proc/d.hdf5"], "not writable"),
    }
    if os.geteuid() != 0:  # root writes into mode-555 directories
        cases["read-only dir"] = ([f"task={task}", "n_demos=2", "out=readonly/d.hdf5"], "not writable")
    before = _listing(tmp_path), _listing(readonly)
    procs = {name: _script(*args, cwd=tmp_path) for name, (args, _) in cases.items()}  # concurrently
    errors = {}
    try:
        for name, proc in procs.items():
            out, errors[name] = proc.communicate(timeout=120)
            assert proc.returncode == 2, (name, out, errors[name])
            assert cases[name][1] in errors[name], (name, errors[name])
            assert "Traceback" not in errors[name], (name, errors[name])
    finally:
        readonly.chmod(0o755)
    assert all(t in errors["unknown task"] for t in policy_sampler_envs.available_tasks() if t != TOY)
    assert (_listing(tmp_path), _listing(readonly)) == before
    assert not Path("/nonexistent_root_dir_xyz").exists()


@needs_reach
def test_script_real_run(tmp_path):
    (tmp_path / "sub").mkdir()
    proc = _script(f"task={REACH}", "n_demos=3", "out=sub/reach.hdf5", "progress=false", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "expert success: 3/3 = 100.0%" in out
    assert "wrote 3 demos" in out and str(tmp_path / "sub" / "reach.hdf5") in out
    assert _listing(tmp_path) == {"sub"} and _listing(tmp_path / "sub") == {"reach.hdf5"}  # no outputs/, .hydra/, logs
    with h5py.File(tmp_path / "sub" / "reach.hdf5", "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == REACH
        assert [f[f"data/demo_{i}"].attrs["seed"] for i in range(3)] == [0, 1, 2]
    episodes = collect(REACH, 3, seed=0, progress=False)  # the script writes what the API collects
    with h5py.File(tmp_path / "sub" / "reach.hdf5", "r") as f:
        for i, ep in enumerate(episodes):
            np.testing.assert_array_equal(f[f"data/demo_{i}/actions"][()], ep.actions)
