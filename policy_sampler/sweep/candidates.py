"""Candidate rollouts for the preference study: a trained policy rolled with one sampler configuration
on ``n`` seeded episodes (env seeds ``seed .. seed + n - 1``), kept as
:class:`policy_sampler.data.demos.Episode` records, on any launcher.

    episodes = generate_candidates("checkpoints/reach", "PolicySampler/ObstacleReach-v0", n=64,
                                   sampler="ddpm", seed=5000, launcher="ray", out_dir="pool/run1")

Each unit (a block of ``seeds_per_unit`` episodes) stores ``units/<unit_id>.json`` and ``.npz``; the merged
pool is ``<out_dir>/candidates.npz`` (its format, writer and reader: :mod:`policy_sampler.data.candidates`).
A candidate's ``expert_seed`` is -1 (no expert); its ``info`` is the last step's scalar info with
``is_success`` (ever true in the episode), ``side`` (when the task reports it), the sampler ``label``
and the ``episode`` index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from policy_sampler.data.candidates import POOL_NAME, episodes_from_arrays, load_candidates, write_candidates
from policy_sampler.data.demos import Episode
from policy_sampler.rollout import RolloutConfig, SamplerSpec
from policy_sampler.sweep.checkpoint import CheckpointBlob
from policy_sampler.sweep.launchers import Launcher, UnitFn, make_launcher
from policy_sampler.sweep.runner import run_sweep
from policy_sampler.sweep.units import plan_units, run_unit, unit_options

__all__ = ["POOL_NAME", "generate_candidates", "load_candidates", "write_candidates"]


def _unit_episodes(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray], label: str) -> list[Episode]:
    """A candidate unit's episodes (see ``run_unit``), their info tagged with the sampler and episode."""
    metas = [{"seed": t["env_seed"], "success": t["success"], "terminated": t["terminated"],
              "truncated": t["truncated"], "info": {**t["info"], "sampler": label, "episode": t["episode"]}}
             for t in record["trajectories"]]
    return episodes_from_arrays(metas, arrays)


def generate_candidates(
    checkpoint: str | os.PathLike | CheckpointBlob,
    task: str,
    n: int,
    sampler: str = "ddpm",
    sampler_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    label: str | None = None,
    num_inference_steps: int | None = None,
    launcher: str | Launcher = "local",
    out_dir: str | os.PathLike | None = None,
    seeds_per_unit: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = False,
    unit_fn: UnitFn = run_unit,
    rollout: RolloutConfig | None = None,
) -> list[Episode]:
    """Roll the checkpoint's policy with ``sampler`` (``sampler_options``, ``num_inference_steps``) on env
    seeds ``seed .. seed + n - 1`` (``rollout``: ``n_envs``, ``max_steps``, ``env_kwargs``,
    ``stop_on_success``) and return the ``n`` episodes in seed order. With ``out_dir``, units are stored
    there (``resume`` skips the stored ones) and the pool is written to ``<out_dir>/candidates.npz``."""
    # an unknown sampler or option is a ValueError here, before anything runs
    spec = SamplerSpec(label or sampler, sampler, dict(sampler_options or {}), num_inference_steps)
    blob = checkpoint if isinstance(checkpoint, CheckpointBlob) else CheckpointBlob.read(checkpoint)
    units = plan_units("candidates", task, blob.digest, [spec], n, seed, seeds_per_unit,
                       options=unit_options(rollout), device=device)
    results = run_sweep(units, {blob.digest: blob}, make_launcher(launcher), out_dir, resume=resume,
                        progress=progress, unit_fn=unit_fn)
    episodes = [e for u in units for e in _unit_episodes(*results[u.unit_id], spec.label)]
    if out_dir is not None:
        write_candidates(episodes, Path(out_dir) / POOL_NAME,
                         {"task": task, "checkpoint": blob.digest, "spec": vars(spec), "seed": seed, "n": n})
    return episodes
