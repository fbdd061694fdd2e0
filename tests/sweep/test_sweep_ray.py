"""policy_sampler.sweep on a real local Ray instance (2 CPUs): the same tables as the local launcher,
a worker killed mid-sweep (only its unit retried, nothing counted twice), interrupt + resume, candidate
rollouts, and an unreachable cluster address."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest

from policy_sampler.rollout import RolloutConfig
from sweep_helpers import MAX_STEPS, SPECS, TASK
from test_sweep_engine import table

from policy_sampler.sweep import RayLauncher, evaluate_sweep, generate_candidates, run_unit

pytestmark = pytest.mark.timeout(180)

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this module


def logged(unit, fetch, *, log_dir, kill_label=None, kill_first=None):
    """run_unit, logging each attempt to ``<log_dir>/<unit_id>`` (one line per attempt); the first
    attempt of the unit (``kill_label``, ``kill_first``) kills its own worker process with SIGKILL."""
    path = log_dir / unit.unit_id
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    if (unit.spec.label, unit.first_episode) == (kill_label, kill_first) and len(path.read_text().split()) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_unit(unit, fetch)


@pytest.fixture(scope="module")
def local_table(checkpoint):
    [report] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, seeds_per_unit=2, rollout=RolloutConfig(max_steps=MAX_STEPS))
    return table(report)


def test_ray_equals_local(ray_instance, checkpoint, local_table, tmp_path):
    [report] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, seeds_per_unit=2, rollout=RolloutConfig(max_steps=MAX_STEPS),
                              launcher="ray", out_dir=tmp_path)
    assert table(report) == local_table
    assert report.meta["launcher"].startswith("ray: 1 node(s), 2 CPUs") and report.meta["units"] == 4
    assert len(list((tmp_path / "units").glob("*.json"))) == 4


def test_killed_worker_retried(ray_instance, checkpoint, local_table, tmp_path):
    """The worker running ddim-5's second block dies (SIGKILL) on its first attempt: Ray reruns that
    unit only, and the table is complete, without duplicates, and equal to the local one."""
    log_dir = tmp_path / "attempts"
    log_dir.mkdir()
    fn = lambda u, f: logged(u, f, log_dir=log_dir, kill_label="ddim-5", kill_first=2)  # noqa: E731
    [report] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, seeds_per_unit=2, rollout=RolloutConfig(max_steps=MAX_STEPS),
                              launcher=RayLauncher(max_retries=2), out_dir=tmp_path / "run", unit_fn=fn)
    attempts = {p.name: p.read_text().split() for p in log_dir.iterdir()}
    killed = [uid for uid in attempts if uid.startswith("evaluate-ddim-5-2-")]
    assert len(attempts) == 4 and len(killed) == 1
    assert len(attempts[killed[0]]) == 2 and attempts[killed[0]][0] != attempts[killed[0]][1]  # new worker
    assert all(len(v) == 1 for k, v in attempts.items() if k != killed[0])
    assert table(report) == local_table
    for r in report.reports:
        assert [e["episode"] for e in r.episodes] == [0, 1, 2, 3]


def test_killed_worker_without_retries_fails_clearly(ray_instance, checkpoint, tmp_path):
    log_dir = tmp_path / "attempts"
    log_dir.mkdir()
    fn = lambda u, f: logged(u, f, log_dir=log_dir, kill_label="ddpm", kill_first=0)  # noqa: E731
    with pytest.raises(RuntimeError, match="ddpm on PolicySampler/ObstacleReach-v0, episodes 0-1 did not finish"):
        evaluate_sweep([(TASK, checkpoint)], SPECS[:1], 2, 3, rollout=RolloutConfig(max_steps=MAX_STEPS),
                       launcher=RayLauncher(max_retries=0), unit_fn=fn)


def test_ray_interrupt_and_resume(ray_instance, checkpoint, local_table, tmp_path):
    log_dir = tmp_path / "attempts"
    log_dir.mkdir()
    fn = lambda u, f: logged(u, f, log_dir=log_dir)  # noqa: E731

    def stop(unit, record):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    kwargs = dict(seeds_per_unit=2, rollout=RolloutConfig(max_steps=MAX_STEPS), launcher="ray", out_dir=out, unit_fn=fn)
    with pytest.raises(KeyboardInterrupt):
        evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, on_unit=stop, **kwargs)
    stored = {p.stem: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    assert len(stored) == 1  # the units in flight were cancelled, not stored
    [report] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, resume=True, **kwargs)
    assert {uid: (out / "units" / f"{uid}.json").stat().st_mtime_ns for uid in stored} == stored
    rerun = [uid for uid, lines in ((p.name, p.read_text().split()) for p in log_dir.iterdir())
             if len(lines) > 1]
    assert not set(rerun) & set(stored)  # the stored unit ran once
    assert table(report) == local_table


def test_ray_candidates_equal_local(ray_instance, checkpoint, tmp_path):
    kwargs = dict(sampler="ddim", sampler_options={"eta": 1.0}, seed=40, num_inference_steps=5,
                  rollout=RolloutConfig(max_steps=MAX_STEPS), seeds_per_unit=2)
    local = generate_candidates(checkpoint, TASK, 4, **kwargs)
    remote = generate_candidates(checkpoint, TASK, 4, launcher="ray", out_dir=tmp_path, **kwargs)
    assert [e.seed for e in remote] == [40, 41, 42, 43]
    for a, b in zip(local, remote):
        assert a.info == b.info and a.success == b.success
        assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    assert (tmp_path / "candidates.npz").is_file()


def test_bad_cluster_address():
    with pytest.raises(ValueError, match="cannot reach a Ray cluster"):
        evaluate_sweep([(TASK, "unused")], SPECS, 1, launcher=RayLauncher(address="localhost:1"))
