"""Evaluation sweeps: :func:`policy_sampler.rollout.evaluate`'s table, computed as units (sampler
configuration x block of ``seeds_per_unit`` episodes) on any launcher and merged back into one
:class:`~policy_sampler.rollout.EvaluationReport` per task.

    reports = evaluate_sweep([("PolicySampler/ObstacleReach-v0", "checkpoints/reach")], specs,
                             n_episodes=200, seed=1000, seeds_per_unit=20, launcher="ray", out_dir="eval/big")
    write_results(reports[0], "eval/big")

Seeding: a block starting at episode k seeds its generator with ``seed + k`` (its first env seed), so with
``seeds_per_unit=None`` (one block) the table is the one ``evaluate`` gives for the same policy, and with
blocks it is the same on every launcher (but not the one-block table: the batches and noise differ).
Per configuration, ``wall_s`` is the sum of its units' wall times (compute seconds, not elapsed).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.rollout import EvaluationReport, RolloutConfig, SamplerReport, SamplerSpec, merge_control_stats
from policy_sampler.sweep.checkpoint import CheckpointBlob
from policy_sampler.sweep.launchers import Launcher, UnitFn, make_launcher
from policy_sampler.sweep.runner import run_sweep
from policy_sampler.sweep.units import Unit, plan_units, run_unit, unit_options

__all__ = ["evaluate_sweep", "merge_evaluation"]


def merge_evaluation(
    task: str,
    units: Sequence[Unit],
    results: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
    n_episodes: int,
    seed: int,
    machine: str,
    meta: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """One task's report from its units' results: per configuration (in plan order) the episodes and
    chunk calls of its blocks in episode order, and the frames of recorded videos."""
    by_label: dict[str, list[Unit]] = {}
    specs: dict[str, SamplerSpec] = {}
    for unit in units:
        if unit.task != task:
            raise ValueError(f"unit {unit.describe()} is not of task {task!r}")
        by_label.setdefault(unit.spec.label, []).append(unit)
        specs[unit.spec.label] = unit.spec
    reports, frames = [], {}
    for label, blocks in by_label.items():
        blocks = sorted(blocks, key=lambda u: u.first_episode)
        episodes, chunks, wall, control = [], [], 0.0, []
        exact, policy_steps = True, None
        for unit in blocks:
            record, arrays = results[unit.unit_id]
            episodes += record["episodes"]
            chunks += record["chunks"]
            wall += float(record["wall_s"])
            if record.get("control") is not None:
                control.append(record["control"])
            exact, policy_steps = bool(record["exact"]), record["policy_steps"]
            for episode, fps in record.get("videos", {}).items():
                frames.setdefault(label, {})[int(episode)] = {"fps": int(fps), "frames": list(arrays[f"frames_{episode}"])}
        if [e["episode"] for e in episodes] != list(range(n_episodes)):
            raise ValueError(f"{label}: the units cover episodes {[e['episode'] for e in episodes]}, "
                             f"not 0..{n_episodes - 1}")
        reports.append(SamplerReport(spec=specs[label], exact=exact, episodes=episodes, chunks=chunks, wall_s=wall,
                                     policy_steps=policy_steps,
                                     control=merge_control_stats(specs[label].control, control)))
    return EvaluationReport(task=task, n_episodes=n_episodes, seed=int(seed), machine=machine, reports=reports,
                            meta=dict(meta or {}), frames=frames)


def evaluate_sweep(
    jobs: Sequence[tuple[str, str | os.PathLike | CheckpointBlob]],
    specs: Sequence[SamplerSpec],
    n_episodes: int,
    seed: int = 0,
    *,
    launcher: str | Launcher = "local",
    out_dir: str | os.PathLike | None = None,
    seeds_per_unit: int | None = None,
    resume: bool = False,
    videos: int = 0,
    video_samplers: int = 1,
    device: str = "cpu",
    progress: bool = False,
    meta: Mapping[str, Any] | None = None,
    unit_fn: UnitFn = run_unit,
    on_unit=None,
    rollout: RolloutConfig | None = None,
) -> list[EvaluationReport]:
    """Evaluate every ``(task, checkpoint)`` job under every spec on ``n_episodes`` seeded episodes, as
    ONE sweep of units (see :func:`policy_sampler.sweep.runner.run_sweep` for ``out_dir``, ``resume``,
    ``progress``, ``unit_fn``, ``on_unit``; ``rollout``: how episodes are rolled, see
    :class:`~policy_sampler.rollout.RolloutConfig`). Returns one report per job, in order; writing the
    result files is left to ``write_results``."""
    if not jobs:
        raise ValueError("jobs is empty: give at least one (task, checkpoint)")
    launcher = make_launcher(launcher)
    blobs: dict[str, CheckpointBlob] = {}
    planned: list[tuple[str, list[Unit]]] = []
    for task, checkpoint in jobs:
        blob = checkpoint if isinstance(checkpoint, CheckpointBlob) else CheckpointBlob.read(checkpoint)
        blobs[blob.digest] = blob
        planned.append((task, plan_units("evaluate", task, blob.digest, specs, n_episodes, seed, seeds_per_unit,
                                         options=unit_options(rollout), videos=videos, video_samplers=video_samplers,
                                         device=device)))
    tasks = [task for task, _ in planned]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"a task appears twice in the sweep: {tasks}")
    units = [u for _, us in planned for u in us]
    results = run_sweep(units, blobs, launcher, out_dir, resume=resume, progress=progress, unit_fn=unit_fn,
                        on_unit=on_unit)
    hosts = sorted({r["worker"]["host"] for r, _ in results.values()})
    info = {"launcher": launcher.describe(), "seeds_per_unit": seeds_per_unit, "units": len(units),
            "worker_hosts": hosts, **dict(meta or {})}
    machine = "; ".join(sorted({r["worker"]["machine"] for r, _ in results.values()}))  # where the latencies come from
    return [merge_evaluation(task, us, results, n_episodes, seed, machine, info) for task, us in planned]
