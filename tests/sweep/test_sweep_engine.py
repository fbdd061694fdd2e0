"""policy_sampler.sweep without Ray: unit ids and planning, the unit store, the local launcher's sweep
equal to ``evaluate``'s table, interrupt + resume, progress lines and bad options."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sweep_helpers import MAX_STEPS, SPECS, TASK

from policy_sampler import DiffusionPolicy
from policy_sampler.rollout import RolloutConfig, SamplerSpec, evaluate
from policy_sampler.sweep import (
    CheckpointBlob,
    RayLauncher,
    Unit,
    UnitStore,
    evaluate_sweep,
    generate_candidates,
    load_candidates,
    make_launcher,
    plan_units,
    run_unit,
)

pytestmark = pytest.mark.timeout(120)

TIMING = ("latency_p50_s", "latency_p99_s", "latency_mean_s", "wall_s")


def table(report) -> list[dict]:
    """The CSV rows without the wall-clock columns, and every per-episode record."""
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in report.rows()]
    return rows + [e for r in report.reports for e in r.episodes]


def counting(unit, fetch, *, log):
    """run_unit, appending the unit's id to ``log`` first (how many times each unit ran)."""
    with open(log, "a") as f:
        f.write(unit.unit_id + "\n")
    return run_unit(unit, fetch)


def test_plan_units_and_ids(checkpoint):
    blob = CheckpointBlob.read(checkpoint)
    assert blob.digest == CheckpointBlob.read(checkpoint).digest and len(blob.digest) == 64
    units = plan_units("evaluate", TASK, blob.digest, SPECS, 5, 100, 2, options={"max_steps": 9})
    assert [(u.spec.label, u.first_episode, u.n_episodes) for u in units] == [
        ("ddpm", 0, 2), ("ddpm", 2, 2), ("ddpm", 4, 1), ("ddim-5", 0, 2), ("ddim-5", 2, 2), ("ddim-5", 4, 1)]
    assert units[1].env_seeds == [102, 103]
    again = plan_units("evaluate", TASK, blob.digest, SPECS, 5, 100, 2, options={"max_steps": 9})
    assert [u.unit_id for u in units] == [u.unit_id for u in again]  # stable: a hash of the content
    assert len({u.unit_id for u in units}) == 6 and units[0].unit_id.startswith("evaluate-ddpm-0-")
    other = plan_units("evaluate", TASK, blob.digest, SPECS, 5, 101, 2, options={"max_steps": 9})
    assert not {u.unit_id for u in units} & {u.unit_id for u in other}  # another seed, other units
    assert Unit.from_dict(json.loads(json.dumps(units[2].to_dict()))) == units[2]
    one = plan_units("evaluate", TASK, blob.digest, SPECS, 5, 100, None, videos=2, video_samplers=1)
    assert [(u.n_episodes, u.record_videos) for u in one] == [(5, 2), (5, 0)]


def test_bad_options(checkpoint):
    blob = CheckpointBlob.read(checkpoint)
    with pytest.raises(ValueError, match="unknown launcher 'slurm'; valid: local, ray"):
        make_launcher("slurm")
    with pytest.raises(ValueError, match="takes no options"):
        make_launcher("local", num_cpus=2)
    with pytest.raises(ValueError, match="bad Ray address 'nowhere'"):
        RayLauncher(address="nowhere")
    with pytest.raises(ValueError, match="cannot reach a Ray cluster at '127.0.0.1:1'"):
        RayLauncher(address="127.0.0.1:1")
    with pytest.raises(ValueError, match="cannot be set with ray.address"):
        RayLauncher(address="auto", num_cpus=2)
    with pytest.raises(ValueError, match="num_gpus_per_unit"):
        RayLauncher(num_gpus_per_unit=-1)
    with pytest.raises(ValueError, match="seeds_per_unit"):
        plan_units("evaluate", TASK, blob.digest, SPECS, 4, 0, 0)
    with pytest.raises(ValueError, match="unknown unit kind"):
        plan_units("train", TASK, blob.digest, SPECS, 4, 0)
    with pytest.raises(ValueError, match="unknown rollout option"):
        plan_units("evaluate", TASK, blob.digest, SPECS, 4, 0, options={"speed": 2})
    with pytest.raises(ValueError, match="resume needs an out_dir"):
        evaluate_sweep([(TASK, checkpoint)], SPECS, 2, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        evaluate_sweep([(TASK, checkpoint.parent / "missing")], SPECS, 2)
    with pytest.raises(ValueError, match="tolerance"):
        generate_candidates(checkpoint, TASK, 2, "paradigms", {"tolerance": -1.0})


def test_one_block_equals_evaluate(checkpoint):
    """seeds_per_unit=None (the script's default): the sweep's table is evaluate's table, episode for episode."""
    policy = DiffusionPolicy.load(checkpoint)
    direct = evaluate(policy, TASK, SPECS, n_episodes=3, seed=11, rollout=RolloutConfig(max_steps=MAX_STEPS))
    [swept] = evaluate_sweep([(TASK, checkpoint)], SPECS, 3, 11, rollout=RolloutConfig(max_steps=MAX_STEPS))
    assert table(swept) == table(direct)
    assert [len(r.chunks) for r in swept.reports] == [len(r.chunks) for r in direct.reports]


def test_store_roundtrip(tmp_path):
    store = UnitStore(tmp_path)
    record = {"episodes": [{"episode": 0, "max_reward": float("nan")}], "wall_s": 1.5}
    store.write("u1", record, {"actions": np.arange(6, dtype=np.float32).reshape(3, 2)})
    store.write("u2", record)
    assert store.done("u1") and store.done("u2") and not store.done("u3")
    back, arrays = store.read("u1")
    assert back["episodes"][0]["max_reward"] is None and back["wall_s"] == 1.5  # JSON-safe
    assert np.array_equal(arrays["actions"], np.arange(6, dtype=np.float32).reshape(3, 2))
    assert store.read("u2")[1] == {}
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["u1.json", "u1.npz", "u2.json"]  # no temp files
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        UnitStore(tmp_path / "file")


def test_interrupt_and_resume(checkpoint, tmp_path):
    """A sweep stopped after 2 of 4 units keeps those 2; the resumed sweep runs only the other 2, leaves
    the stored files untouched and ends with the uninterrupted sweep's table."""
    log = tmp_path / "runs.log"
    kwargs = dict(seeds_per_unit=2, rollout=RolloutConfig(max_steps=MAX_STEPS))
    [full] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, **kwargs)

    def stop_after_two(unit, record, seen=[]):
        seen.append(unit.unit_id)
        if len(seen) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, out_dir=out, on_unit=stop_after_two,
                       unit_fn=lambda u, f: counting(u, f, log=log), **kwargs)
    first = log.read_text().split()
    stored = sorted((out / "units").glob("*.json"))
    assert len(first) == 2 and sorted(p.stem for p in stored) == sorted(first)
    mtimes = {p: p.stat().st_mtime_ns for p in stored}
    stream = io.StringIO()
    [resumed] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, out_dir=out, resume=True, progress=stream,
                               unit_fn=lambda u, f: counting(u, f, log=log), **kwargs)
    second = log.read_text().split()[2:]
    assert len(second) == 2 and not set(second) & set(first)  # finished units are not redone
    assert {p: p.stat().st_mtime_ns for p in stored} == mtimes
    assert table(resumed) == table(full)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sweep: 3/4 units (2 resumed)") and "ETA" in lines[0]
    assert lines[1].startswith("sweep: 4/4 units (2 resumed)")
    # without resume the same out_dir is run again and every unit overwritten (nothing counted twice)
    [again] = evaluate_sweep([(TASK, checkpoint)], SPECS, 4, 3, out_dir=out, **kwargs)
    assert table(again) == table(full) and len(list((out / "units").glob("*.json"))) == 4


def test_progress_lines(checkpoint, capsys):
    evaluate_sweep([(TASK, checkpoint)], SPECS[:1], 2, 0, seeds_per_unit=1, rollout=RolloutConfig(max_steps=4), progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" |")[0] for line in lines] == ["sweep: 1/2 units", "sweep: 2/2 units"]
    assert "evaluate ddpm on PolicySampler/ObstacleReach-v0, episodes 1-1" in lines[1] and "ETA 0.0 s" in lines[1]


def test_candidates_local(checkpoint, tmp_path):
    kwargs = dict(sampler="ddim", sampler_options={"eta": 1.0}, seed=20, num_inference_steps=5, rollout=RolloutConfig(max_steps=MAX_STEPS))
    episodes = generate_candidates(checkpoint, TASK, 3, seeds_per_unit=2, out_dir=tmp_path, **kwargs)
    assert [e.seed for e in episodes] == [20, 21, 22]
    for e in episodes:
        assert e.observations.shape == (len(e), 8) and e.actions.shape == (len(e), 2) and e.expert_seed == -1
        assert np.array_equal(e.observations[1:], e.next_observations[:-1]) and e.dones[-1] == 1
        assert e.info["is_success"] == e.success and "side" in e.info and e.info["sampler"] == "ddim"
        assert e.terminated or e.truncated
    assert len(list((tmp_path / "units").glob("*.npz"))) == 2
    pool = load_candidates(tmp_path / "candidates.npz")
    for a, b in zip(episodes, pool):
        assert a.seed == b.seed and a.info == b.info and a.success == b.success
        assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("observations", "actions", "rewards", "dones"))
    # one block of 3 instead of 2 + 1: the same env seeds and resets (the noise is the block's own)
    one = generate_candidates(checkpoint, TASK, 3, **kwargs)
    assert [e.seed for e in one] == [20, 21, 22]
    assert np.array_equal(one[0].observations[0], episodes[0].observations[0])  # same env reset
    again = generate_candidates(checkpoint, TASK, 3, seeds_per_unit=2, **kwargs)
    assert all(np.array_equal(a.actions, b.actions) for a, b in zip(again, episodes))


def test_spec_label_in_unit_id(checkpoint):
    blob = CheckpointBlob.read(checkpoint)
    specs = [SamplerSpec("a b/c", "ddpm"), SamplerSpec("a b/c", "ddpm")]
    with pytest.raises(ValueError, match="same content"):
        plan_units("evaluate", TASK, blob.digest, specs, 1, 0)
    [unit] = plan_units("evaluate", TASK, blob.digest, specs[:1], 1, 0)
    assert unit.unit_id.startswith("evaluate-a_b_c-0-")
