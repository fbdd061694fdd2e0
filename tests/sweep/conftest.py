"""Shared fixtures of the sweep tests: a tiny checkpoint of ObstacleReach's shape and ONE local Ray
instance (2 CPUs, ~100 MB object store, no dashboard) for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.policy import DiffusionPolicyConfig

from sweep_helpers import STATS, TASK, TINY


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    policy = DiffusionPolicy(DiffusionPolicyConfig(**TINY), dataset_stats=STATS).eval()
    policy.metadata = {"task": TASK}
    return policy.save(tmp_path_factory.mktemp("sweep-ckpt") / "tiny")


@pytest.fixture(scope="session")
def ray_instance():
    """A local Ray instance started once; the sweep launchers use it as it is."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}})
    yield ray
    ray.shutdown()
