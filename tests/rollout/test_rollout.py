"""policy_sampler.rollout and scripts/evaluate.py: seeded closed-loop episodes of ObstacleReach under
several samplers, the Wilson interval, the result files, DiffusionPolicy's num_inference_steps and the
script's argument checks. A tiny untrained policy (dataset statistics of the task's ranges) keeps it fast."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.rollout import (
    CSV_COLUMNS,
    RolloutConfig,
    SamplerSpec,
    evaluate,
    evaluate_sampler,
    format_table,
    load_sampler_specs,
    wilson_interval,
    with_control,
    write_results,
)
from policy_sampler.policy import DiffusionPolicyConfig

REPO = Path(__file__).resolve().parents[2]
TASK = "PolicySampler/ObstacleReach-v0"
SAMPLER_CONFIGS = REPO / "configs" / "sampler"
OBS_DIM, ACT_DIM = 8, 2  # ObstacleReach: [agent xy, agent vxy, goal xy, obstacle xy] -> target velocity xy

# horizon 8, U-Net (16, 32), 10 inference steps of a 20-step training schedule (DDIM-16 still fits).
TINY = dict(
    obs_dim=OBS_DIM, action_dim=ACT_DIM, horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32),
    kernel_size=3, n_groups=8, diffusion_step_embed_dim=16, num_train_timesteps=20, num_inference_steps=10,
)
STATS = {
    "state": {"min": [-0.5, -0.5, -0.3, -0.3, -0.1, 0.25, -0.05, -0.05],
              "max": [0.5, 0.5, 0.3, 0.3, 0.1, 0.4, 0.05, 0.05]},
    "action": {"min": [-1.0, -1.0], "max": [1.0, 1.0]},
}
MAX_STEPS = 24  # 6 chunks of 4 actions per episode


@pytest.fixture(scope="module")
def policy() -> DiffusionPolicy:
    torch.manual_seed(0)
    p = DiffusionPolicy(DiffusionPolicyConfig(**TINY), dataset_stats=STATS).eval()
    p.metadata = {"task": TASK}
    return p


@pytest.fixture(scope="module")
def checkpoint(policy, tmp_path_factory) -> Path:
    return policy.save(tmp_path_factory.mktemp("ckpt") / "tiny")


SPECS = [
    SamplerSpec("ddpm", "ddpm"),
    SamplerSpec("paradigms", "paradigms", {"window": 64, "tolerance": 0.1}),
    SamplerSpec("ddim-10", "ddim", {"eta": 0.0}, num_inference_steps=10, baseline=True),
    SamplerSpec("ddim-16", "ddim", {"eta": 0.0}, num_inference_steps=16, baseline=True),
]


@pytest.fixture(scope="module")
def report(policy):
    return evaluate(policy, TASK, SPECS, n_episodes=3, seed=5, rollout=RolloutConfig(max_steps=MAX_STEPS), videos=1,
                    meta={"checkpoint": "in-memory"})


# ---------------------------------------------------------------------------------- num_inference_steps
def test_predict_action_num_inference_steps(policy):
    obs = {"state": torch.zeros(2, 2, OBS_DIM)}
    assert policy.schedule_for(None) is policy.schedule
    assert policy.schedule_for(10) is policy.schedule  # the configured count
    s16 = policy.schedule_for(16)
    assert s16.num_steps == 16 and policy.schedule_for(16) is s16  # built once, cached
    assert s16.timesteps[0] > s16.timesteps[-1] and int(s16.timesteps[-1]) == 0
    for steps, sampler in ((16, "ddim"), (4, "ddpm")):
        out = policy.predict_action(obs, sampler=sampler, generator=torch.Generator().manual_seed(0),
                                    num_inference_steps=steps)
        assert out.rounds == steps and out.nfe == steps and out.info["num_inference_steps"] == steps
        assert out.actions.shape == (2, 4, ACT_DIM)
    default = policy.predict_action(obs, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert default.rounds == 10 and default.info["num_inference_steps"] == 10
    # the same seed and step count give the same actions; another step count another chunk
    a = policy.predict_action(obs, sampler="ddim", generator=torch.Generator().manual_seed(1), num_inference_steps=5)
    b = policy.predict_action(obs, sampler="ddim", generator=torch.Generator().manual_seed(1), num_inference_steps=5)
    c = policy.predict_action(obs, sampler="ddim", generator=torch.Generator().manual_seed(1), num_inference_steps=16)
    assert torch.equal(a.actions, b.actions) and not torch.equal(a.actions, c.actions)
    for bad in (0, 21, -3, 2.5, True, "16"):
        with pytest.raises(ValueError, match="num_inference_steps"):
            policy.predict_action(obs, sampler="ddim", num_inference_steps=bad)


# ---------------------------------------------------------------------------------- statistics
def test_wilson_interval_hand_worked():
    # 7/10, z = 1.96: centre (0.7 + 1.9208/10) / 1.38415 = 0.64449, half-width
    # 1.96 / 1.38415 * sqrt(0.021 + 0.0096037) = 0.24771 -> [0.39678, 0.89220]
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.39678, abs=1e-4) and hi == pytest.approx(0.89220, abs=1e-4)
    lo, hi = wilson_interval(0, 10)  # z^2 / (n + z^2) = 3.8415 / 13.8415
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.72247, abs=1e-4) and hi == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(4, 3)
    for n in range(1, 60):  # the ends are exact: a plot's error bars (rate - low, high - rate) stay >= 0
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0


# ---------------------------------------------------------------------------------- rollouts
def test_evaluate_episodes_and_chunks(report):
    assert [r.spec.label for r in report.reports] == ["ddpm", "paradigms", "ddim-10", "ddim-16"]
    assert report.seeds == [5, 6, 7]
    for r in report.reports:
        assert [e["episode"] for e in r.episodes] == [0, 1, 2]
        assert [e["env_seed"] for e in r.episodes] == [5, 6, 7]
        for e in r.episodes:
            assert {"success", "total_reward", "max_reward", "length", "side", "chunks"} <= set(e)
            assert 1 <= e["length"] <= MAX_STEPS and e["max_reward"] <= 10.0
            assert e["terminated"] or e["truncated"]
            assert e["chunks"] == math.ceil(e["length"] / 4)
        # ONE predict_action per chunk for all active envs: the first call sees the 3 envs
        assert r.chunks[0]["batch"] == 3
        assert sum(c["batch"] for c in r.chunks) == sum(e["chunks"] for e in r.episodes)
        assert all(c["latency_s"] > 0 for c in r.chunks)
    rows = {row["label"]: row for row in report.rows()}
    assert rows["ddpm"]["rounds_mean"] == 10 and rows["ddpm"]["nfe_mean"] == 10 and rows["ddpm"]["exact"]
    assert rows["ddim-10"]["num_inference_steps"] == 10 and rows["ddim-10"]["baseline"]
    assert rows["ddim-16"]["rounds_mean"] == 16 and not rows["ddim-16"]["exact"]
    assert rows["paradigms"]["nfe_mean"] >= rows["paradigms"]["rounds_mean"]
    for row in rows.values():
        assert set(row) == set(CSV_COLUMNS)
        assert row["success_ci_low"] <= row["success_rate"] <= row["success_ci_high"]
        assert row["latency_p50_s"] <= row["latency_p99_s"]
        assert row["left_share"] is None or 0.0 <= row["left_share"] <= 1.0
    table = format_table(report)
    assert report.machine in table and "ddim-16 (baseline)" in table
    # videos: the first episode of the first sampler only
    assert list(report.frames) == ["ddpm"] and list(report.frames["ddpm"]) == [0]
    video = report.frames["ddpm"][0]
    assert len(video["frames"]) == report.reports[0].episodes[0]["length"] + 1
    assert video["frames"][0].ndim == 3 and video["frames"][0].shape[2] == 3


def test_same_seeds_same_episodes(policy, report):
    """The same env seeds and generator seed give identical episodes, run after run."""
    for spec in (SPECS[0], SPECS[2]):
        again, _ = evaluate_sampler(policy, TASK, spec, n_episodes=3, seed=5, rollout=RolloutConfig(max_steps=MAX_STEPS))
        first = next(r for r in report.reports if r.spec.label == spec.label)
        assert again.episodes == first.episodes
        assert [c["batch"] for c in again.chunks] == [c["batch"] for c in first.chunks]
    other, _ = evaluate_sampler(policy, TASK, SPECS[0], n_episodes=3, seed=6, rollout=RolloutConfig(max_steps=MAX_STEPS))
    assert [e["env_seed"] for e in other.episodes] == [6, 7, 8]


def test_plain_rows_are_open_loop_chunk_execution(policy, report):
    """A plain configuration is the runner at delay 0: the same episodes as executing chunk after chunk
    with predict_action on the batch of envs still running, one generator seeded with the first env seed
    (the loop evaluation ran before the runner carried every rollout, kept here as the reference)."""
    import numpy as np
    from collections import deque

    from policy_sampler.policy.observations import stack_observations
    from policy_sampler_envs import make_env

    for spec in (SPECS[1], SPECS[2]):
        generator = torch.Generator().manual_seed(5)
        envs = [make_env(TASK, max_episode_steps=MAX_STEPS) for _ in range(3)]
        hist, done, total = {}, {}, {}
        for i, env in enumerate(envs):
            obs, _ = env.reset(seed=5 + i)
            hist[i] = deque([obs] * policy.config.n_obs_steps, maxlen=policy.config.n_obs_steps)
            done[i], total[i] = False, 0.0
        while not all(done.values()):
            active = [i for i in range(3) if not done[i]]
            out = policy.predict_action(stack_observations(policy.config.obs_keys, [hist[i] for i in active]),
                                        sampler=spec.make(), generator=generator,
                                        num_inference_steps=spec.num_inference_steps)
            for row, i in enumerate(active):
                for action in out.actions[row].numpy():
                    obs, reward, terminated, truncated, _ = envs[i].step(action)
                    hist[i].append(obs)
                    total[i] += float(reward)
                    if terminated or truncated:
                        done[i] = True
                        break
        got = next(r for r in report.reports if r.spec.label == spec.label)
        assert [e["total_reward"] for e in got.episodes] == pytest.approx([total[i] for i in range(3)], abs=1e-9)
        np.testing.assert_array_equal([e["total_reward"] for e in got.episodes], [total[i] for i in range(3)])


def test_bad_evaluation_arguments(policy):
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate(policy, TASK, SPECS[:1], n_episodes=0)
    with pytest.raises(ValueError, match="max_steps"):
        RolloutConfig(max_steps=0)
    with pytest.raises(ValueError, match="unknown rollout option"):
        RolloutConfig.from_dict({"n_env": 2})
    with pytest.raises(ValueError, match="unknown runner setting"):
        SamplerSpec("ddpm", "ddpm", control={"delay": 2})
    with pytest.raises(ValueError, match="num_inference_steps"):
        evaluate(policy, TASK, [SamplerSpec("ddim-50", "ddim", num_inference_steps=50)], n_episodes=1)
    with pytest.raises(ValueError, match="paradigms"):
        load_sampler_specs(["nope"], SAMPLER_CONFIGS)  # the message lists the valid configs
    with pytest.raises(ValueError, match="tolerance"):
        load_sampler_specs(["paradigms"], SAMPLER_CONFIGS, {"paradigms": {"tolerance": -1.0}})
    with pytest.raises(ValueError, match="not in samplers"):
        load_sampler_specs(["ddpm"], SAMPLER_CONFIGS, {"paradigms": {"tolerance": 0.05}})


def test_load_sampler_specs():
    specs = load_sampler_specs(["ddpm", "paradigms"], SAMPLER_CONFIGS, {"paradigms": {"tolerance": 0.05}})
    assert [s.label for s in specs] == ["ddpm", "paradigms", "ddim-16", "ddim-10"]
    assert specs[1].options["tolerance"] == 0.05 and specs[1].options["window"] == 64
    assert [s.num_inference_steps for s in specs] == [None, None, 16, 10]
    assert specs[2].baseline and specs[2].sampler == "ddim" and specs[2].options == {"eta": 0.0}
    assert [s.label for s in load_sampler_specs(["ddpm"], SAMPLER_CONFIGS, baselines=[])] == ["ddpm"]


def test_write_results(report, tmp_path):
    out = tmp_path / "run"
    written = write_results(report, out)
    assert (out / "results.json").is_file() and (out / "results.csv").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [r["label"] for r in rows] == ["ddpm", "paradigms", "ddim-10", "ddim-16"]
    assert json.loads(rows[1]["options"]) == {"window": 64, "tolerance": 0.1}
    doc = json.loads((out / "results.json").read_text())
    assert doc["machine"] == report.machine and doc["checkpoint"] == "in-memory"
    assert doc["env_seeds"] == [5, 6, 7] and doc["generator_seed"] == 5 and doc["task"] == TASK
    assert doc["columns"] == list(CSV_COLUMNS)
    assert len(doc["results"]) == 4 and len(doc["samplers"][0]["episodes"]) == 3
    assert doc["samplers"][0]["chunks"][0]["batch"] == 3
    assert doc["samplers"][0]["videos"] == [str(Path("videos") / written["video:ddpm:0"].name)]
    assert written["video:ddpm:0"].stat().st_size > 1000
    if "png" in written:
        assert (out / "results.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------- the script
def _script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "checkpoint is required"),
        (["checkpoint=does/not/exist"], "no checkpoint at"),
        (["checkpoint=CKPT", "samplers=[ddpm,warp]"], "valid samplers"),
        (["checkpoint=CKPT", "n_episodes=0"], "n_episodes must be an integer >= 1"),
    ],
)
def test_script_bad_arguments_exit_2(args, message, checkpoint, tmp_path):
    args = [a.replace("CKPT", str(checkpoint)) for a in args] + ["out_dir=res"]
    proc = _script(args, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    if "valid samplers" in message:
        assert "paradigms" in proc.stderr and "autospeculative" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: no out_dir, no outputs/, no .hydra/


def test_script_end_to_end_with_video(checkpoint, tmp_path):
    proc = _script([f"checkpoint={checkpoint}", "samplers=[ddpm,paradigms]", "n_episodes=1", "videos=1",
                    f"max_steps={MAX_STEPS}", "sampler_options.paradigms.tolerance=0.05", "num_threads=1",
                    "out_dir=res"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "res"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # hydra left nothing else
    videos = list((out / "videos").iterdir())
    assert [v.name for v in videos] == ["ddpm_ep0.mp4"] and videos[0].stat().st_size > 1000
    doc = json.loads((out / "results.json").read_text())
    assert doc["task"] == TASK and doc["checkpoint"] == str(checkpoint) and doc["env_seeds"] == [1000]
    assert [r["label"] for r in doc["results"]] == ["ddpm", "paradigms", "ddim-16", "ddim-10"]
    assert json.loads(doc["results"][1]["options"])["tolerance"] == 0.05
    with open(out / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert "| ddpm |" in proc.stdout and doc["machine"] in proc.stdout


def test_control_rows_run_through_the_chunk_runner(policy):
    """With a simulated inference delay, episodes run tick by tick through ChunkRunner: the same
    episodes are reproduced, stale actions are dropped, and misses and jerks are reported."""
    specs = with_control([SamplerSpec("ddpm", "ddpm")], [0, 2], ["none", "rtc"])
    assert [s.label for s in specs] == ["ddpm d=0", "ddpm d=0 rtc", "ddpm d=2", "ddpm d=2 rtc"]
    rep = evaluate(policy, TASK, specs, n_episodes=2, seed=5, rollout=RolloutConfig(max_steps=MAX_STEPS), videos=0)
    again = evaluate(policy, TASK, specs[2:3], n_episodes=2, seed=5, rollout=RolloutConfig(max_steps=MAX_STEPS), videos=0)
    assert again.reports[0].episodes == rep.reports[2].episodes
    for r in rep.reports:
        row = r.summary
        assert all(e["length"] == MAX_STEPS for e in r.episodes)
        assert row["misses"] == 0 and row["boundary_jerk"] is not None and row["interior_jerk"] is not None
        assert row["inference_delay"] == r.spec.control["inference_delay"]
    assert rep.reports[0].control["dropped_actions"] == 0 < rep.reports[2].control["dropped_actions"]


def test_script_control_options(checkpoint, tmp_path):
    proc = _script([f"checkpoint={checkpoint}", "samplers=[ddpm]", "baselines=[]", "n_episodes=1", "videos=0",
                    f"max_steps={MAX_STEPS}", "control.inference_delays=[1]", "control.smoothing=[ensemble]",
                    "+control.runner.fallback_steps=0", "num_threads=1", "out_dir=res"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "res" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["ddpm d=1 ensemble"] and rows[0]["smoothing"] == "ensemble"
    doc = json.loads((tmp_path / "res" / "results.json").read_text())
    assert doc["samplers"][0]["spec"]["control"]["fallback_steps"] == 0  # a RunnerConfig setting from hydra
    bad = _script([f"checkpoint={checkpoint}", "control.inference_delays=[-1]", "out_dir=res2"], tmp_path)
    assert bad.returncode == 2 and "control.inference_delays" in bad.stderr
    bad = _script([f"checkpoint={checkpoint}", "control.inference_delays=[1]", "+control.runner.fallbacks=0",
                   "out_dir=res3"], tmp_path)
    assert bad.returncode == 2 and "unknown runner setting" in bad.stderr
