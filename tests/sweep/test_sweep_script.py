"""scripts/evaluate.py's sweep options: launcher / ray.* checks (exit 2, nothing written), units stored
in out_dir/units and resume=true reusing them, a two-task sweep, and (slow) launcher=ray end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import MAX_STEPS, TASK

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]


def script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=200)


def rows(path: Path) -> list[dict]:
    """results.csv without its wall-clock columns."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("latency") and k != "wall_s"} for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["launcher=slurm"], "unknown launcher 'slurm'; valid: local, ray"),
        (["launcher=ray", "ray.address=nowhere"], "bad Ray address 'nowhere'"),
        (["launcher=ray", "ray.num_gpus_per_unit=1"], "pass device=cuda"),
        (["checkpoints=[CKPT,CKPT]", "tasks=[" + TASK + "]"], "one checkpoint per task"),
    ],
)
def test_bad_sweep_arguments_exit_2(args, message, checkpoint, tmp_path):
    args = [a.replace("CKPT", str(checkpoint)) for a in args] + ["out_dir=res", "samplers=[ddpm]", "baselines=[]"]
    if not any(a.startswith("checkpoints=") for a in args):
        args.append(f"checkpoint={checkpoint}")
    proc = script(args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_units_and_resume(checkpoint, tmp_path):
    args = [f"checkpoint={checkpoint}", "samplers=[ddpm]", "baselines=[{label: ddim-5, sampler: ddim, num_inference_steps: 5}]",
            "n_episodes=3", "seeds_per_unit=2", "videos=0",
            f"max_steps={MAX_STEPS}", "num_threads=1", "out_dir=res"]
    first = script(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "res"
    units = sorted((out / "units").glob("*.json"))
    assert len(units) == 4  # ddpm, ddim-5 x 2 blocks
    assert "sweep: 4/4 units" in first.stdout and "| ddpm |" in first.stdout
    mtimes = {p: p.stat().st_mtime_ns for p in units}
    before = rows(out / "results.csv")
    second = script(args + ["resume=true"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "sweep:" not in second.stdout  # every unit was stored: none ran
    assert {p: p.stat().st_mtime_ns for p in units} == mtimes
    assert rows(out / "results.csv") == before
    doc = json.loads((out / "results.json").read_text())
    assert doc["seeds_per_unit"] == 2 and doc["units"] == 4 and doc["launcher"] == "local"
    assert doc["env_seeds"] == [1000, 1001, 1002] and [e["episode"] for e in doc["samplers"][0]["episodes"]] == [0, 1, 2]


@pytest.mark.slow
def test_two_tasks_one_sweep(checkpoint, tmp_path):
    """checkpoints=[a,b] tasks=[A,B]: one sweep (units in out_dir/units), results per task in out_dir/<task>/."""
    import torch

    from policy_sampler import DiffusionPolicy
    from policy_sampler.policy import DiffusionPolicyConfig

    reach = "PolicySampler/MetaWorld-reach-v3"  # 39-d observations, 4-d actions
    config = DiffusionPolicyConfig(obs_dim=39, action_dim=4, horizon=8, n_obs_steps=2, n_action_steps=4,
                                   down_dims=(16, 32), kernel_size=3, n_groups=8, diffusion_step_embed_dim=16,
                                   num_train_timesteps=20, num_inference_steps=10)
    torch.manual_seed(0)
    stats = {"state": {"min": [-1.0] * 39, "max": [1.0] * 39}, "action": {"min": [-1.0] * 4, "max": [1.0] * 4}}
    second = DiffusionPolicy(config, dataset_stats=stats).eval().save(tmp_path / "mw")
    proc = script([f"checkpoints=[{checkpoint},{second}]", f"tasks=[{TASK},{reach}]", "samplers=[ddpm]",
                   "baselines=[]", "n_episodes=2", "seeds_per_unit=1", "videos=0", "max_steps=8", "out_dir=res"],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "res"
    assert "sweep: 4/4 units" in proc.stdout and len(list((out / "units").glob("*.json"))) == 4
    for task, ckpt in ((TASK, checkpoint), (reach, second)):
        doc = json.loads((out / task.replace("/", "_") / "results.json").read_text())
        assert doc["task"] == task and doc["checkpoint"] == str(ckpt) and doc["results"][0]["n_episodes"] == 2


@pytest.mark.slow
def test_script_ray_equals_local(checkpoint, tmp_path):
    common = [f"checkpoint={checkpoint}", "samplers=[ddpm,paradigms]", "n_episodes=4", "seeds_per_unit=2",
              "videos=1", f"max_steps={MAX_STEPS}", "num_threads=1"]
    local = script(common + ["out_dir=local"], tmp_path)
    remote = script(common + ["out_dir=ray", "launcher=ray", "ray.num_cpus=2"], tmp_path)
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr[-3000:]
    assert rows(tmp_path / "local" / "results.csv") == rows(tmp_path / "ray" / "results.csv")
    assert (tmp_path / "ray" / "videos" / "ddpm_ep0.mp4").stat().st_size > 1000
    doc = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert doc["launcher"].startswith("ray: 1 node(s), 2 CPUs")
