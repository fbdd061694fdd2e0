"""scripts/preference_loop.py end to end (quick mode) on a tiny untrained ObstacleReach policy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.policy import DiffusionPolicyConfig

REPO = Path(__file__).resolve().parents[2]


def test_quick_loop_writes_results_and_resumes(tmp_path):
    torch.manual_seed(0)
    cfg = DiffusionPolicyConfig(obs_dim=8, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4,
                                down_dims=(16, 32), kernel_size=3, diffusion_step_embed_dim=16,
                                num_train_timesteps=20, num_inference_steps=10)
    stats = {"state": {"min": [-0.5] * 8, "max": [0.5] * 8}, "action": {"min": [-1.0] * 2, "max": [1.0] * 2}}
    policy = DiffusionPolicy(cfg, stats)
    policy.metadata = {"task": "PolicySampler/ObstacleReach-v0"}
    ckpt = policy.save(tmp_path / "ckpt")
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    cmd = [sys.executable, str(REPO / "scripts" / "preference_loop.py"), f"checkpoint={ckpt}", "quick=true",
           f"out_dir={tmp_path / 'out'}"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["queries"] for r in doc["table"]] == [0, 10] and doc["pool"]["size"] == 24
    assert (tmp_path / "out" / "preference_loop.png").stat().st_size > 1000
    state = json.loads((tmp_path / "out" / "seed0" / "loop.json").read_text())
    assert len(state["learner"]["answers"]) == 10
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # pool and answers reused
    assert again.returncode == 0 and "loaded from cache" in again.stdout
    redo = json.loads((tmp_path / "out" / "results.json").read_text())["table"]
    untimed = [{k: v for k, v in row.items() if k != "latency_p50_s"} for row in doc["table"]]
    assert [{k: v for k, v in row.items() if k != "latency_p50_s"} for row in redo] == untimed
    bad = subprocess.run(cmd[:2] + [f"checkpoint={ckpt}", "+preference.speed=1.0", f"out_dir={tmp_path / 'o2'}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown feature" in bad.stderr
