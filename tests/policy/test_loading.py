"""load_policy dispatches between our checkpoints and LeRobot policy folders; CheckpointBlob ships either."""

from __future__ import annotations

import pytest
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.policy import DiffusionPolicyConfig, load_policy, resolve_policy_dir
from policy_sampler.sweep import CheckpointBlob
from policy_sampler.sweep.checkpoint import load_policy as load_unit_policy


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    policy = DiffusionPolicy(DiffusionPolicyConfig(obs_dim=3, action_dim=2, down_dims=(16, 32), num_inference_steps=10))
    root = tmp_path_factory.mktemp("run")
    policy.save(root / "best", metadata={"task": "PolicySampler/ObstacleReach-v0"})
    return root, policy


def test_our_checkpoint_loads_as_our_policy(run_dir):
    root, policy = run_dir
    assert resolve_policy_dir(root) == ("policy_sampler", root / "best")
    loaded = load_policy(root)
    assert isinstance(loaded, DiffusionPolicy) and loaded.metadata["task"] == "PolicySampler/ObstacleReach-v0"
    obs = {"state": torch.zeros(1, 2, 3)}
    a = loaded.predict_action(obs, generator=torch.Generator().manual_seed(0)).chunk
    b = policy.eval().predict_action(obs, generator=torch.Generator().manual_seed(0)).chunk
    assert torch.allclose(a, b)


def test_checkpoint_blob_ships_the_policy(run_dir):
    root, _ = run_dir
    blob = CheckpointBlob.read(root)
    assert [name for name, _ in blob.files] == ["config.json", "model.safetensors"] and len(blob.digest) == 64
    assert isinstance(load_unit_policy(blob.digest, lambda: blob), DiffusionPolicy)
    with pytest.raises(ValueError, match="digest mismatch"):
        load_unit_policy("0" * 64, lambda: blob)


def test_neither_kind_of_policy_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nor a LeRobot policy folder"):
        load_policy(tmp_path)
